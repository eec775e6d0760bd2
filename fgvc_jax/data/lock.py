"""A lock file in the data folder: one process prepares a dataset or builds a decoded cache,
the others (a sweep's runs started together on a new data_dir) wait for it and reuse it."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import socket
import time
from pathlib import Path


@contextlib.contextmanager
def held(file: Path, what: str, quiet: float = 1.0):
    """Hold the exclusive lock `file` (created if missing, never deleted: deleting it would
    let two processes hold two different files). A process that finds it held logs one line
    naming the holder and `what` it does once it has waited `quiet` seconds, then waits. The
    lock ends with the process, so a killed holder never blocks the others. Where the file
    cannot be created (a read-only data_dir), nothing can be prepared there either: no
    lock."""
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(file, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
        if e.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise
        yield
        return
    try:
        t0 = time.monotonic()
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() - t0 >= quiet:
                    holder = os.pread(fd, 200, 0).decode(errors="replace").strip()
                    logging.warning(
                        "Waiting for %s, %s (lock %s).", holder or "another process", what, file
                    )
                    fcntl.flock(fd, fcntl.LOCK_EX)
                    logging.warning("Lock %s free after %.0f s.", file, time.monotonic() - t0)
                    break
                time.sleep(0.05)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"PID {os.getpid()} on host {socket.gethostname()}".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock
