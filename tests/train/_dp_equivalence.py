"""Run in a subprocess with 8 forced CPU devices: one train step of the same global batch on
a 1-device mesh and on the 8-device mesh; prints the largest differences as JSON."""

import json
import os
import sys

assert "xla_force_host_platform_device_count=8" in os.environ.get("XLA_FLAGS", "")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

from fgvc_jax.loop import step as step_lib  # noqa: E402
from fgvc_jax.recipe import optim  # noqa: E402
from fgvc_jax.recipe import train_state as state_lib  # noqa: E402
from fgvc_jax.runtime import parallel  # noqa: E402
from tests.train.tiny import TinyMethod, method_config  # noqa: E402


def run(mesh, accumulate):
    method = TinyMethod(method_config(dropout=0.5), 5)
    cfg = ml_collections.ConfigDict(
        dict(
            seed=3,
            train=dict(dtype="float32"),
            optim=dict(
                name="sgd",
                momentum=0.9,
                nesterov=False,
                weight_decay=1e-4,
                wd_mask=".*",
                lr={"backbone": 0.05, "heads": 0.5, "new": 0.1},
                schedule="cosine",
                end_factor=0.0,
                warmup_steps=0,
                warmup_epochs=0.0,
                clip_norm=0.0,
                accumulate=accumulate,
            ),
        )
    )
    variables = state_lib.init_variables(method, (16, 16, 3), 0, jnp.float32)
    tx = optim.create_optimizer(
        cfg.optim, variables["params"], method.param_groups(), total_steps=10, steps_per_epoch=10
    )
    state = state_lib.create_train_state(tx, variables, mesh)
    step = step_lib.make_train_step(method, tx, cfg, mesh)
    r = np.random.default_rng(0)
    losses = []
    for _ in range(2):
        batch = {
            "image": r.integers(0, 256, (16, 16, 16, 3), dtype=np.uint8),
            "label": r.integers(0, 5, (16,), dtype=np.int32),
        }
        state, metrics = step(state, parallel.host_to_global(batch, mesh))
        losses.append(float(metrics["loss"]))
    return losses, jax.device_get(state.params), jax.device_get(state.batch_stats)


def main():
    assert jax.device_count() == 8
    out = {}
    for accumulate in (1, 2):
        l1, p1, b1 = run(parallel.make_mesh(jax.devices()[:1]), accumulate)
        l8, p8, b8 = run(parallel.make_mesh(), accumulate)
        diff = lambda a, b: max(
            float(np.max(np.abs(x - y))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
        )
        moved = max(float(np.max(np.abs(x))) for x in jax.tree.leaves(p1))
        out[accumulate] = {
            "loss": max(abs(a - b) for a, b in zip(l1, l8)),
            "params": diff(p1, p8),
            "batch_stats": diff(b1, b8),
            "losses": l1,
            "param_max": moved,
        }
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
