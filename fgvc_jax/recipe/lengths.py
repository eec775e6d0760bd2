"""Run lengths in steps: every `<name>_steps` / `<name>_epochs` pair of a config section
(as big_vision's `u.steps`), an epoch being one pass over the split actually trained on (the
fit split of `fgvc_jax.data.splits`: e.g. FGVC-Aircraft's 'train+val' under the papers'
protocol, the training split less the carved validation images otherwise)."""

from __future__ import annotations

import math


def steps_per_epoch(fit_size: int, batch_size: int) -> int:
    """Full global batches in one pass over the `fit_size` training examples (at least 1)."""
    return max(fit_size // batch_size, 1)


def steps(name: str, section, per_epoch: int, *, round_up: bool = False) -> int:
    """`section.<name>_steps` when > 0 (it overrides the epochs), else
    `section.<name>_epochs` x `per_epoch` (rounded, or rounded up with `round_up`), else 0."""
    n_steps = section.get(f"{name}_steps", 0) or 0
    n_epochs = section.get(f"{name}_epochs", 0.0) or 0.0
    if n_steps > 0:
        return int(n_steps)
    exact = n_epochs * per_epoch
    return int(math.ceil(exact) if round_up else round(exact))
