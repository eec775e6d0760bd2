"""Whether a process of this host still runs (for stale locks and half-built caches)."""

from __future__ import annotations

import os


def alive(pid: int) -> bool:
    """True while process `pid` of this host runs (a zombie has ended; a process we may not
    signal still runs)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    except (OverflowError, ValueError):
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                return False
    except (OSError, IndexError):
        pass
    return True
