"""A lock file in the data folder: one process prepares a dataset or builds a decoded cache,
the others (a sweep's runs started together on a new data_dir) wait for it and reuse it."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
import time
from pathlib import Path


@contextlib.contextmanager
def held(file: Path, what: str):
    """Hold the exclusive lock `file` (created if missing, never deleted: deleting it would
    let two processes hold two different files). A process that finds it held logs one line
    naming the holder and `what` it does, then waits. The lock ends with the process, so a
    killed holder never blocks the others."""
    file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(file, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            logging.warning("Waiting for %s, %s (lock %s).", holder, what, file)
            t0 = time.monotonic()
            fcntl.flock(fd, fcntl.LOCK_EX)
            logging.warning("Lock %s free after %.0f s.", file, time.monotonic() - t0)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"PID {os.getpid()} on host {socket.gethostname()}".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock
