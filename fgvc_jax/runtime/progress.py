"""The console progress of a long task (preparing a dataset, building the decoded cache):
`Progress`, one line with done/total, rate and ETA; `eta`, a duration with its units (also
the training console line's ETA, `run.log`)."""

from __future__ import annotations

import sys
import time


def eta(seconds: float | None) -> str:
    """A duration with its units: '45s', '3m05s', '1h02m' ('--' if unknown)."""
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "--"
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class Progress:
    """The console progress of a long task: '<what>: done/total (pct), rate, ETA'. On a
    terminal one line rewritten in place; otherwise a new line every `every` seconds."""

    def __init__(self, what: str, total: int | None, unit: str = "images", every: float = 20.0):
        self.what, self.total, self.unit, self.every = what, total, unit, every
        self.stream = sys.stdout
        self.tty = self.stream.isatty()
        self.t0 = self.last = time.perf_counter()
        self.done = 0

    def line(self) -> str:
        elapsed = time.perf_counter() - self.t0
        rate = self.done / elapsed if elapsed > 0 else 0.0
        if self.total:
            left = (self.total - self.done) / rate if rate > 0 else None
            return (
                f"{self.what}: {self.done}/{self.total} {self.unit} "
                f"({100 * self.done / self.total:.0f}%), {rate:.0f} {self.unit}/s, ETA {eta(left)}"
            )
        return f"{self.what}: {self.done} {self.unit}, {rate:.0f} {self.unit}/s"

    def update(self, done: int) -> None:
        self.done = done
        now = time.perf_counter()
        if now - self.last >= (1.0 if self.tty else self.every):
            self.last = now
            end = "" if self.tty else "\n"
            print(("\r" if self.tty else "") + self.line(), end=end, file=self.stream, flush=True)

    def close(self) -> None:
        """End the in-place line (a terminal); nothing otherwise."""
        if self.tty and self.last > self.t0:
            print(file=self.stream, flush=True)
