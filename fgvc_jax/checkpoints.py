"""Checkpoints in the workdir (orbax) and initial weights from converted PyTorch files.

Layout: `<workdir>/checkpoints/<step>` (periodic, the newest `keep` kept, resumed from
automatically) and `<workdir>/best/<step>` (the best evaluation so far by `best_metric`).
A checkpoint holds the whole train state (step, params, batch_stats, optimizer state); the
data iterator and every random stream are positioned from the step, so a resumed run ends
bitwise equal to an uninterrupted one.
"""
from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from absl import logging
from etils import epath

from fgvc_jax.methods.pretrained import merge_backbone


class Checkpoints:
    """The periodic and best-by-accuracy checkpoint managers of one workdir."""

    def __init__(self, workdir: str, *, keep: int = 3, best_metric: str = "top1/combined"):
        root = epath.Path(workdir if "://" in str(workdir) else os.path.abspath(workdir))
        self.best_metric = best_metric
        self.latest = ocp.CheckpointManager(
            root / "checkpoints",
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))
        self.best = ocp.CheckpointManager(
            root / "best",
            options=ocp.CheckpointManagerOptions(
                max_to_keep=1, create=True, best_fn=lambda m: m[best_metric], best_mode="max"))

        self._best = self._read_best_value()

    def latest_step(self) -> int | None:
        return self.latest.latest_step()

    def _read_best_value(self) -> float:
        step = self.best.latest_step()
        metrics = (self.best.metrics(step) or {}) if step is not None else {}
        return float(metrics.get(self.best_metric, -float("inf")))

    def best_value(self) -> float:
        """Best `best_metric` saved so far in this workdir (-inf if none)."""
        return self._best

    def save(self, step: int, state: Any) -> None:
        """Periodic checkpoint of `state` at `step` (asynchronous; `wait` to finish)."""
        self.latest.save(step, args=ocp.args.StandardSave(state), force=True)

    def save_best(self, step: int, state: Any, metrics: dict[str, float]) -> bool:
        """Save `state` as the best checkpoint when `metrics[best_metric]` improved."""
        value = float(metrics[self.best_metric])
        if value <= self._best:
            return False
        self.best.save(step, args=ocp.args.StandardSave(state),
                       metrics={k: float(v) for k, v in metrics.items()}, force=True)
        self._best = value
        return True

    def restore(self, abstract_state: Any, which: str = "latest") -> tuple[Any, int] | None:
        """(state, step) from the newest periodic ('latest') or the best ('best') checkpoint,
        placed with the shardings of `abstract_state`; None if there is none."""
        if which not in ("latest", "best"):
            raise ValueError(f"checkpoint {which!r}; valid: latest, best")
        mgr = self.latest if which == "latest" else self.best
        step = mgr.latest_step()
        if step is None:
            return None
        state = mgr.restore(step, args=ocp.args.StandardRestore(abstract_state))
        return state, step

    def find(self, which: str = "best") -> tuple[str, int] | None:
        """(folder, step) of the best or latest checkpoint; 'best' falls back to 'latest' (a
        run not yet evaluated has no best); None if there is none. For restoring the
        variables alone (`state.restore_variables`)."""
        if which not in ("latest", "best"):
            raise ValueError(f"checkpoint {which!r}; valid: latest, best")
        for mgr in ([self.best, self.latest] if which == "best" else [self.latest]):
            step = mgr.latest_step()
            if step is not None:
                return str(mgr.directory / str(step)), step
        return None

    def wait(self) -> None:
        self.latest.wait_until_finished()
        self.best.wait_until_finished()

    def close(self) -> None:
        self.latest.close()
        self.best.close()


def _read_pretrained(path: str, arch: str | None, backbone_kwargs: dict) -> dict:
    """Variables {'params':..., 'batch_stats':...} of a backbone from a PyTorch file
    (.pth/.pt/.safetensors, converted on the fly) or a converted orbax directory."""
    if os.path.isdir(path):
        tree = ocp.PyTreeCheckpointer().restore(os.path.abspath(path))
        return tree if "params" in tree else {"params": tree}
    if not os.path.exists(path):
        raise FileNotFoundError(f"config.init.pretrained={path!r}: no such file or directory.")
    if arch is None:
        raise ValueError("config.init.pretrained is set but the method names no backbone_arch.")
    from fgvc_jax.convert import load_pretrained  # the one place the converter is called
    return load_pretrained(arch, path, num_classes=0, **backbone_kwargs)


def load_pretrained(variables: dict, path: str, *, arch: str | None, dont_load: str = "",
                    backbone_kwargs: dict | None = None) -> dict:
    """`variables` with the backbone replaced by the pretrained weights at `path` (strict:
    every backbone variable not matched by `dont_load` is filled)."""
    pretrained = _read_pretrained(path, arch, backbone_kwargs or {})
    merged = merge_backbone(jax.device_get(variables), pretrained, dont_load=dont_load)
    logging.info("Loaded the %s backbone from %s", arch, path)
    return merged
