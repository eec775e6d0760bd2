"""Where a run's metrics go: TensorBoard (clu's SummaryWriter), `<workdir>/metrics.jsonl` (one
JSON object per write: {"step": s, name: value, ...}), with `wandb_project` a Weights & Biases
run too (`run.wandb_writer`), and, during training, one console line
per log step — step/total, epoch, loss, learning rate, images/s, ETA ("ETA 3m05s"). Process 0
only. (The console line of a long preparation, dataset or decoded cache, is
`runtime.progress.Progress`.)

Images/s and the ETA are measured between log steps, never across the first step after a
start or resume (it holds the compilation) nor across an evaluation.
"""

from __future__ import annotations

import json
import os
import sys
import time

import jax

from fgvc_jax.run.wandb_writer import WandbWriter
from fgvc_jax.runtime.progress import eta


class RunLog:
    """Metrics of one run: `scalars` (TensorBoard + metrics.jsonl), `progress` (console)."""

    def __init__(
        self,
        workdir: str,
        *,
        num_steps: int,
        steps_per_epoch: int,
        batch_size: int,
        stream=None,
        wandb_project: str = "",
        run_config: dict | None = None,
    ):
        self.active = jax.process_index() == 0
        self.num_steps, self.steps_per_epoch = num_steps, steps_per_epoch
        self.batch_size = batch_size
        self.stream = stream or sys.stdout
        self._mark: tuple[int, float] | None = None  # (step, time) the rate is measured from
        self._rate: float | None = None  # steps per second
        if self.active:
            from clu import metric_writers

            self.tb = metric_writers.AsyncWriter(metric_writers.SummaryWriter(workdir))
            self.jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")
        self.wandb = None
        if self.active and wandb_project:
            self.wandb = WandbWriter(workdir, wandb_project, run_config or {})

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if not self.active or not values:
            return
        self.tb.write_scalars(step, values)
        self.jsonl.write(
            json.dumps({"step": int(step), **{k: float(v) for k, v in values.items()}}) + "\n"
        )
        self.jsonl.flush()
        if self.wandb:
            self.wandb.scalars(step, values)

    def hparams(self, values: dict) -> None:
        if self.active:
            self.tb.write_hparams(values)

    def restart_clock(self, step: int) -> None:
        """Measure the rate from `step` on (after the first step, after an evaluation)."""
        self._mark = (step, time.perf_counter())

    def images_per_sec(self, step: int) -> float | None:
        """Training images/s since the last `restart_clock` or log step (None if unknown)."""
        if self._mark is None or step <= self._mark[0]:
            return None
        s0, t0 = self._mark
        now = time.perf_counter()
        self._rate = (step - s0) / max(now - t0, 1e-9)
        self._mark = (step, now)
        return self._rate * self.batch_size

    def progress(
        self, step: int, loss: float, lrs: dict[str, float], images_per_sec: float | None
    ) -> None:
        """The console line of a log step."""
        if not self.active:
            return
        values = sorted(lrs.items())
        lr = (
            f"{values[0][1]:.2e}"
            if len({v for _, v in values}) == 1
            else " ".join(f"{g}={v:.2e}" for g, v in values)
        )
        speed = f"{images_per_sec:7.1f} img/s" if images_per_sec else "    --- img/s"
        left = eta((self.num_steps - step) / self._rate) if self._rate else "--"
        epoch = step / max(self.steps_per_epoch, 1)
        width = len(str(self.num_steps))
        print(
            f"step {step:>{width}}/{self.num_steps}  epoch {epoch:6.2f}  loss {loss:8.4f}  "
            f"lr {lr}  {speed}  ETA {left}",
            file=self.stream,
            flush=True,
        )

    def line(self, text: str) -> None:
        if self.active:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if self.active:
            self.tb.flush()
            self.tb.close()
            self.jsonl.close()
        if self.wandb:
            self.wandb.close()
