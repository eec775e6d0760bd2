"""The optional Weights & Biases writer beside TensorBoard: `--config.train.wandb_project=P`.

Every scalar the run writes to TensorBoard and metrics.jsonl goes to the W&B run too, at the
same step; the run's config is the W&B run's config. The W&B run id is kept in
`<workdir>/wandb_run_id`, so a resumed run (pre-emption, requeue) continues the same W&B
run. Its files go under `<workdir>/wandb/`. Without an account or network,
`WANDB_MODE=offline` writes the run there and `wandb sync <workdir>/wandb/offline-run-*`
uploads it later. Process 0 only (as TensorBoard). The `wandb` package is the `wandb` extra
(`make dev` installs it).
"""

from __future__ import annotations

import importlib.util
import os
import uuid

RUN_ID_FILE = "wandb_run_id"


def check(project: str) -> None:
    """A W&B project needs the wandb package: one line naming the install, before any work."""
    if project and importlib.util.find_spec("wandb") is None:
        raise ValueError(
            f"config.train.wandb_project={project!r} needs the wandb package: run `make dev` "
            "(or pip install -e '.[wandb]'), or leave wandb_project empty."
        )


def _run_id(workdir: str) -> str:
    """The W&B run id of this workdir: made at its first start, read at every resume."""
    path = os.path.join(workdir, RUN_ID_FILE)
    if os.path.exists(path):
        with open(path) as f:
            return f.read().strip()
    run_id = uuid.uuid4().hex[:8]  # W&B ids: lower-case letters and digits
    with open(path, "w") as f:
        f.write(run_id + "\n")
    return run_id


class WandbWriter:
    """`scalars(step, values)` → `wandb.log(values, step=step)`; `close()` finishes the run."""

    def __init__(self, workdir: str, project: str, run_config: dict):
        import wandb  # `check` (main, before any work) said how to install it

        self.run = wandb.init(
            project=project,
            dir=workdir,
            id=_run_id(workdir),
            resume="allow",
            name=os.path.basename(os.path.abspath(workdir)),
            config=run_config,
            settings=wandb.Settings(console="off", silent=True),
        )

    def scalars(self, step: int, values: dict[str, float]) -> None:
        self.run.log({k: float(v) for k, v in values.items()}, step=int(step))

    def close(self) -> None:
        self.run.finish()
