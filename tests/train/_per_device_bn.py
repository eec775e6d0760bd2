"""Run in a subprocess with 4 forced CPU devices: `train.batch_norm='per_device'` against
PyTorch DDP's per-GPU BatchNorm; prints the largest differences as JSON.

(a) The BatchNorm layer under `batch_norm.per_device(4)`, jitted over the 4-device mesh
(float64): its output against four `torch.nn.BatchNorm2d`, each on its quarter of the batch,
and its running statistics against the first one's (rank 0's: DDP broadcasts them).
(b) One train step of a small method with `train.batch_norm='per_device'` on 4 devices
against four 1-device steps, one per quarter of the batch: the BatchNorm statistics equal
quarter 0's step's, the loss and (SGD, one step: linear in the gradient) the parameters the
mean of the four."""

import json
import os
import sys

assert "xla_force_host_platform_device_count=4" in os.environ.get("XLA_FLAGS", "")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from fgvc_jax.backbones import batch_norm  # noqa: E402
from fgvc_jax.loop import step as step_lib  # noqa: E402
from fgvc_jax.recipe import optim  # noqa: E402
from fgvc_jax.recipe import train_state as state_lib  # noqa: E402
from fgvc_jax.runtime import parallel  # noqa: E402
from tests.train.tiny import TinyMethod, method_config  # noqa: E402

DEVICES = 4


def _max_diff(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def layer(mesh) -> dict:
    rng = np.random.default_rng(0)
    # each quarter its own offset and scale, so per-device statistics differ from global ones
    x = rng.normal(size=(16, 5, 5, 3)) * np.repeat([1.0, 2.0, 0.5, 3.0], 4)[:, None, None, None]
    x = x + np.repeat([0.0, 1.0, -2.0, 4.0], 4)[:, None, None, None]
    bn = batch_norm.BatchNorm(dtype=jnp.float64, param_dtype=jnp.float64)
    variables = {
        "params": {"scale": rng.uniform(0.5, 1.5, 3), "bias": rng.normal(size=3)},
        "batch_stats": {"mean": rng.normal(size=3), "var": rng.uniform(0.5, 1.5, 3)},
    }
    rep, dat = parallel.replicated(mesh), parallel.data_sharded(mesh)

    def apply(variables, x, groups):
        with batch_norm.per_device(groups):
            return bn.apply(variables, x, train=True, mutable=["batch_stats"])

    run = lambda groups: jax.device_get(
        jax.jit(lambda v, x: apply(v, x, groups), in_shardings=(rep, dat))(
            variables, jax.device_put(x, dat)
        )
    )
    (y, new), (y_global, _) = run(DEVICES), run(1)

    quarters = []
    for q in range(DEVICES):
        t = torch.nn.BatchNorm2d(3, momentum=0.1, eps=1e-5).double().train()
        with torch.no_grad():
            t.weight.copy_(torch.from_numpy(variables["params"]["scale"]))
            t.bias.copy_(torch.from_numpy(variables["params"]["bias"]))
            t.running_mean.copy_(torch.from_numpy(variables["batch_stats"]["mean"]))
            t.running_var.copy_(torch.from_numpy(variables["batch_stats"]["var"]))
        part = torch.from_numpy(np.ascontiguousarray(x[4 * q : 4 * q + 4].transpose(0, 3, 1, 2)))
        quarters.append((t(part).detach().numpy().transpose(0, 2, 3, 1), t))
    ref = np.concatenate([o for o, _ in quarters])
    rank0, rank1 = quarters[0][1], quarters[1][1]
    stats = new["batch_stats"]
    return {
        "output": _max_diff(y, ref),
        "output_scale": float(np.max(np.abs(ref))),
        "global_vs_per_device": _max_diff(y_global, ref),
        "running_mean_vs_rank0": _max_diff(stats["mean"], rank0.running_mean.numpy()),
        "running_var_vs_rank0": _max_diff(stats["var"], rank0.running_var.numpy()),
        "running_mean_vs_rank1": _max_diff(stats["mean"], rank1.running_mean.numpy()),
    }


def train_step(mesh, batch, how: str):
    method = TinyMethod(method_config(dropout=0.0), 5)
    cfg = ml_collections.ConfigDict(
        dict(
            seed=3,
            train=dict(dtype="float32", batch_norm=how),
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
                accumulate=1,
            ),
        )
    )
    variables = state_lib.init_variables(method, (16, 16, 3), 0, jnp.float32)
    tx = optim.create_optimizer(
        cfg.optim, variables["params"], method.param_groups(), total_steps=10, steps_per_epoch=10
    )
    state = state_lib.create_train_state(tx, variables, mesh)
    step = step_lib.make_train_step(method, tx, cfg, mesh)
    state, metrics = step(state, parallel.host_to_global(batch, mesh))
    return float(metrics["loss"]), jax.device_get(state.params), jax.device_get(state.batch_stats)


def step_vs_quarters() -> dict:
    r = np.random.default_rng(1)
    batch = {
        "image": r.integers(0, 256, (16, 16, 16, 3), dtype=np.uint8),
        "label": r.integers(0, 5, (16,), dtype=np.int32),
    }
    batch["image"][4:8] //= 4  # quarters that differ, so their statistics do
    loss, params, stats = train_step(parallel.make_mesh(), batch, "per_device")
    one = parallel.make_mesh(jax.devices()[:1])
    quarters = [
        train_step(one, {k: v[4 * q : 4 * q + 4] for k, v in batch.items()}, "global")
        for q in range(DEVICES)
    ]
    _, _, global_stats = train_step(parallel.make_mesh(), batch, "global")
    mean_params = jax.tree.map(lambda *p: np.mean(p, axis=0), *[q[1] for q in quarters])
    diff = lambda a, b: max(_max_diff(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
    return {
        "loss": abs(loss - float(np.mean([q[0] for q in quarters]))),
        "params": diff(params, mean_params),
        "batch_stats_vs_quarter0": diff(stats, quarters[0][2]),
        "batch_stats_vs_quarter1": diff(stats, quarters[1][2]),
        "batch_stats_vs_global": diff(stats, global_stats),
    }


def main():
    assert jax.device_count() == DEVICES
    json.dump({"layer": layer(parallel.make_mesh()), "step": step_vs_quarters()}, sys.stdout)


if __name__ == "__main__":
    main()
