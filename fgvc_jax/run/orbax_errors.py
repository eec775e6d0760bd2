"""orbax's errors of one workdir's checkpoints: their tracebacks go to a log file in the
workdir, not the console (a failed asynchronous write logs hundreds of lines), and the
first one is kept, so that the trainer can stop at its next step with one line."""

from __future__ import annotations

import logging
import os
import re
import sys


class OrbaxErrors(logging.Filter):
    """Installed on absl's logger (orbax logs through absl) while a workdir's checkpoint
    managers are open: records of orbax at ERROR and above are written to `path` and kept
    off the console; `first` is the exception of the first one logged while `armed` (a save
    is being written: the owner arms it at each save and disarms it once the saves are
    written), so that a read of a damaged checkpoint is not taken for a failed write."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path
        self.first: BaseException | None = None
        self.armed = False
        self.count = 0
        self._handler: logging.Handler | None = None
        logging.getLogger("absl").addFilter(self)
        self._unraisable = sys.unraisablehook
        sys.unraisablehook = self._hook

    def _hook(self, info) -> None:
        """After a failed write, tensorstore's callbacks into orbax's closed event loop raise
        'Event loop is closed' by the hundred: into the log file."""
        if "Event loop is closed" not in str(info.exc_value):
            self._unraisable(info)
            return
        record = logging.LogRecord(
            "orbax", logging.ERROR, __file__, 0, "unraisable: %s", (info.exc_value,), None
        )
        self._write(record)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR or f"{os.sep}orbax{os.sep}" not in record.pathname:
            return True
        self.count += 1
        if self.first is None and self.armed:
            self.first = (record.exc_info or (None, None))[1] or RuntimeError(
                record.getMessage().splitlines()[0]
            )
        self._write(record)
        return False

    def _write(self, record: logging.LogRecord) -> None:
        try:  # the disk may be full: the error is reported either way
            if self._handler is None:
                self._handler = logging.FileHandler(self.path)
                self._handler.setFormatter(
                    logging.Formatter(
                        "%(asctime)s %(levelname)s %(pathname)s:%(lineno)d %(message)s"
                    )
                )
            self._handler.emit(record)
            self._handler.flush()
        except Exception:  # noqa: BLE001
            pass

    def close(self) -> None:
        logging.getLogger("absl").removeFilter(self)
        if sys.unraisablehook == self._hook:
            sys.unraisablehook = self._unraisable
        if self._handler is not None:
            self._handler.close()


def reason(e: BaseException) -> str:
    """The operating system's words for why a write failed ('No space left on device'),
    found in the storage layer's message; else its first line."""
    text = str(e)
    m = re.search(r"([A-Z][^:\"\n]*?) \[os_error_code='?\d+'?\]", text)
    if m:
        return m.group(1)
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    line = (text.strip().splitlines() or [type(e).__name__])[0]
    return line if len(line) <= 200 else line[:197] + "..."
