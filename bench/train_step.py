"""Trainer benchmarks: (1) steps/s of the full trainer loop vs the bare jitted train step
(trainer overhead), (2) compile time and `compiled.memory_analysis()` of each paper-size
method's train step at its paper batch size in bf16.

  python bench/train_step.py                      # both parts
  python bench/train_step.py --part overhead --model tiny   # the loop's own host work
  python bench/train_step.py --part memory --methods swinfc

`--model tiny` trains a linear classifier on the mean colour (its step costs ~nothing), so
the trainer's steps/s measure the loop's own host work per step: data pipeline, dispatch,
metrics kept on the device, logging every 10 steps.
Prints a markdown table (record it in BENCHMARKS.md with the machine)."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from fgvc_jax import config as config_lib  # noqa: E402
from fgvc_jax.loop import train
from fgvc_jax.methods import losses, registry  # noqa: E402
from fgvc_jax.methods.base import Method, Outputs  # noqa: E402
from fgvc_jax.recipe import Recipe  # noqa: E402
from fgvc_jax.runtime import parallel

PAPER = tuple(n for n in registry.METHODS if registry.has_paper_size(n))


TINY = "bench_linear"


class _LinearNet(nn.Module):
    num_classes: int
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, images, train: bool = False, explain: bool = False):
        logits = nn.Dense(self.num_classes, dtype=self.dtype, name="head")(images.mean((1, 2)))
        return Outputs(logits={"main": logits}, aux={"maps": {}} if explain else {})


class LinearProbe(Method):
    """The cheapest method: a linear classifier on the mean colour of the image."""

    @classmethod
    def defaults(cls, size: str) -> dict:
        return dict(image_size=64)

    @property
    def network(self):
        return _LinearNet(self.num_classes, self.dtype)

    def loss(self, outputs, labels, targets=None):
        ce = losses.cross_entropy(outputs.logits["main"], labels, 0.0, targets)
        return ce, {"ce_main": ce}

    def param_groups(self):
        return {"new": r".*"}


def _config(method: str, arg: str):
    import importlib

    if method == TINY:
        if TINY not in registry.METHODS:
            registry.register(TINY, LinearProbe)
        return config_lib.make_config(
            TINY,
            arg,
            data=dict(),
            optim=dict(name="sgd", lr={"new": 1e-3}),
            train=dict(batch_size=8, num_epochs=1.0),
        )
    return importlib.import_module(f"configs.{method}").get_config(arg)


def _setup(config, num_classes: int):
    """The run's recipe and its optimizer (the schedule's length does not change the step's
    cost: 100 steps an epoch)."""
    recipe = Recipe(config, num_classes)
    return recipe, recipe.optimizer(steps_per_epoch=100)


def overhead(method_name: str, steps: int, data_dir: str) -> dict:
    """Full trainer (data pipeline, logging, metrics, checkpoint at the end) vs bare step."""
    config = _config(method_name, "synthetic")
    config.data.data_dir = data_dir
    config.train.num_steps = steps
    config.train.log_every = 10
    config.train.checkpoint_every = 0
    with tempfile.TemporaryDirectory() as workdir:
        train.train_and_evaluate(config, workdir)
        import json

        full = json.load(open(os.path.join(workdir, "eval.json")))["train_steps_per_sec"]
    mesh = parallel.make_mesh()
    s = config.method.image_size
    recipe, tx = _setup(config, config.data.synthetic.num_classes)
    state = recipe.create_state(tx, recipe.init_variables(), mesh)
    step = recipe.train_step(tx, mesh)
    r = np.random.default_rng(0)
    b = config.train.batch_size
    batch = parallel.host_to_global(
        {
            "image": r.integers(0, 256, (b, s, s, 3), dtype=np.uint8),
            "label": r.integers(0, config.data.synthetic.num_classes, (b,), dtype=np.int32),
        },
        mesh,
    )
    state, _ = step(state, batch)
    jax.block_until_ready(state)
    t0 = time.perf_counter()
    for _ in range(steps - 1):
        state, _ = step(state, batch)
    jax.block_until_ready(state)
    bare = (steps - 1) / (time.perf_counter() - t0)
    return {
        "method": method_name,
        "batch": b,
        "full": full,
        "bare": bare,
        "overhead_pct": 100 * (bare / full - 1),
        "host_ms": 1e3 * (1 / full - 1 / bare),
    }


def memory(method_name: str, num_classes: int = 200) -> dict:
    """Compile the paper-size train step (bf16 compute, fp32 params) at the paper batch."""
    config = _config(method_name, "cub")
    config.data.cache = "none"  # the step is fed ready-cropped batches (network cost only)
    config.train.dtype = "bfloat16"
    mesh = parallel.make_mesh(jax.devices()[:1])
    s = config.method.image_size
    recipe, tx = _setup(config, num_classes)
    shapes = recipe.variable_shapes
    dat = parallel.data_sharded(mesh)
    state = recipe.abstract_state(tx, mesh)  # shapes, no values
    b = config.train.batch_size
    batch = {
        "image": jax.ShapeDtypeStruct((b, s, s, 3), jnp.uint8, sharding=dat),
        "label": jax.ShapeDtypeStruct((b,), jnp.int32, sharding=dat),
    }
    step = recipe.train_step(tx, mesh)
    t0 = time.perf_counter()
    compiled = step.lower(state, batch).compile()
    compile_s = time.perf_counter() - t0
    m = compiled.memory_analysis()
    gib = lambda n: n / 2**30
    params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes["params"]))
    return {
        "method": method_name,
        "image": s,
        "batch": b,
        "params_M": params / 1e6,
        "compile_s": compile_s,
        "args_GiB": gib(m.argument_size_in_bytes),
        "out_GiB": gib(m.output_size_in_bytes),
        "temp_GiB": gib(m.temp_size_in_bytes),
        "alias_GiB": gib(m.alias_size_in_bytes),
        "peak_GiB": gib(
            m.argument_size_in_bytes
            + m.output_size_in_bytes
            + m.temp_size_in_bytes
            - m.alias_size_in_bytes
        ),
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=["all", "overhead", "memory"], default="all")
    p.add_argument("--methods", default=",".join(PAPER))
    p.add_argument("--overhead-method", default="swinfc")
    p.add_argument(
        "--model", choices=["method", "tiny"], default="method", help="tiny: the loop's own cost"
    )
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--data-dir", default=os.path.expanduser("~/tensorflow_datasets"))
    a = p.parse_args()
    print(f"# {jax.devices()[0].device_kind} x{jax.device_count()}, jax {jax.__version__}")
    if a.part in ("all", "overhead"):
        print(f"# load average before: {os.getloadavg()}", flush=True)
        r = overhead(TINY if a.model == "tiny" else a.overhead_method, a.steps, a.data_dir)
        print(
            "| method (synthetic) | batch | trainer steps/s | bare step steps/s | overhead "
            "| host ms/step |"
        )
        print("|---|---|---|---|---|---|")
        print(
            f"| {r['method']} | {r['batch']} | {r['full']:.3f} | {r['bare']:.3f} | "
            f"{r['overhead_pct']:+.1f}% | {r['host_ms']:.2f} |",
            flush=True,
        )
        print(f"# load average after: {os.getloadavg()}", flush=True)
    if a.part in ("all", "memory"):
        print(
            "| method (paper size, bf16) | image | batch | params (M) | compile (s) | "
            "arguments (GiB) | outputs (GiB) | temporaries (GiB) | peak est. (GiB) |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        for name in a.methods.split(","):
            r = memory(name)
            print(
                f"| {r['method']} | {r['image']} | {r['batch']} | {r['params_M']:.1f} | "
                f"{r['compile_s']:.1f} | {r['args_GiB']:.2f} | {r['out_GiB']:.2f} | "
                f"{r['temp_GiB']:.2f} | {r['peak_GiB']:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
