"""'Did you mean' for a mistyped name (config key, method, dataset)."""

from __future__ import annotations

import difflib


def did_you_mean(word, choices) -> str:
    """' Did you mean 'x'?' for the closest of `choices` to `word` ('' if none is close)."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" Did you mean {close[0]!r}?" if close else ""
