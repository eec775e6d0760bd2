"""Compare a whole method with its PyTorch twin (transcribed from the paper's equations,
torchvision / timm backbones): the same weights (a random init of ours copied to the twin),
the same random batch; prints every stage, every head's logits, the combined prediction, the
auxiliary outputs, every loss term, the gradient per parameter group and the updated BN
statistics as max |ref| and the relative difference (max abs diff / max |ref|).

    python -m fgvc_jax.compare --config configs/cra_smra.py:synthetic [--train]
    python -m fgvc_jax.compare --config configs/cra_smra.py:synthetic --train --dtype float64
    python -m fgvc_jax.compare --config configs/swinfc.py:cub --dtype bfloat16

`:synthetic` runs the CPU-sized model (batch 4), a dataset name the paper's size (batch 2).

--dtype float32 (default): three columns, ours against the float32 twin, ours against the
  twin in float64 (the exact values up to 1e-13, see --dtype float64) and PyTorch's own
  float32 against its float64. Gradients through ReLU, max-pool and erasure/suppression
  thresholds flip on near-ties, so float32 implementations can differ by far more than their
  rounding (PyTorch's own float32 gradient differs from its float64 one by up to 1e-2); a
  row fails when our error against float64 exceeds --tolerance (1e-4) AND twice PyTorch's.
--dtype float64: both sides in float64 — whether the two compute the same function; a row
  fails above --tolerance (default here 1e-10).
--dtype bfloat16: the drift of our bfloat16 compute against the float32 twin; nothing fails.

Exits 1 when a row fails. Needs torch, torchvision and timm (`make dev` installs them)."""

from __future__ import annotations

import importlib.util
import sys

from absl import app, flags
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "configs/<method>.py:<dataset>")
flags.DEFINE_enum(
    "dtype",
    "float32",
    ["float32", "float64", "bfloat16"],
    "our compute dtype (float64: the twin's too)",
)
flags.DEFINE_bool(
    "train",
    False,
    "training mode (batch statistics, SMRAM/FSM active, dropout "
    "and stochastic depth off on both sides)",
)
flags.DEFINE_integer("batch", 0, "batch size (0: 4 at the CPU size, 2 at the paper's)")
flags.DEFINE_integer("num_classes", 0, "classes (0: 10 at the CPU size, 200 at the paper's)")
flags.DEFINE_integer("seed", 0, "seed of the weights and the batch")
flags.DEFINE_float(
    "tolerance",
    None,
    "largest relative difference that passes (default 1e-4; 1e-10 with --dtype float64)",
)


def check_torch() -> None:
    """One line naming `make dev` when torch, torchvision or timm is not installed."""
    missing = [m for m in ("torch", "torchvision", "timm") if importlib.util.find_spec(m) is None]
    if missing:
        print(f"error: compare needs {', '.join(missing)}: run `make dev`.", file=sys.stderr)
        sys.exit(2)


def main(argv):
    del argv
    check_torch()
    import jax.numpy as jnp

    from fgvc_jax.reference import parity

    config = FLAGS.config
    if config is None:
        raise app.UsageError("--config configs/<method>.py:<dataset> is required")
    cpu = config.method.get("size", "full") == "cpu"
    batch = FLAGS.batch or (4 if cpu else 2)
    classes = FLAGS.num_classes or (10 if cpu else 200)
    dtype = {"float32": jnp.float32, "float64": jnp.float64, "bfloat16": jnp.bfloat16}[FLAGS.dtype]
    tolerance = FLAGS.tolerance or (1e-10 if FLAGS.dtype == "float64" else 1e-4)
    pair = parity.Pair(config.method, classes, train=FLAGS.train, dtype=dtype, batch=batch)
    twin_dtype = "float64" if FLAGS.dtype == "float64" else "float32"
    ours, twin = pair.outputs(FLAGS.seed, twin_dtype)
    rows = parity.compare(ours, twin)
    mode = "train" if FLAGS.train else "eval"
    print(
        f"{config.method.name} ({config.method.get('backbone', '-')}, "
        f"{config.method.image_size} px, batch {batch}, {classes} classes, {mode} mode): "
        f"ours {FLAGS.dtype} vs PyTorch twin {twin_dtype}"
    )
    for note in pair.notes:
        print(f"note: {note}")
    if FLAGS.dtype == "float32":
        _, exact = pair.outputs(FLAGS.seed, "float64")
        ours_err, torch_err = parity.compare(ours, exact), parity.compare(twin, exact)
        print(parity.table(rows, {"ours vs f64": ours_err, "PyTorch f32 vs f64": torch_err}))
        failed = [o.name for o, t in zip(ours_err, torch_err) if o.rel > max(tolerance, 2 * t.rel)]
    else:
        print(parity.table(rows))
        failed = [r.name for r in rows if r.rel > tolerance] if FLAGS.dtype == "float64" else []
    worst = max(rows, key=lambda r: r.rel)
    print(f"largest relative difference: {worst.rel:.2e} ({worst.name})")
    if failed:
        print(
            f"FAIL: {', '.join(failed)} above {tolerance:g}"
            + (" and twice PyTorch's own float32 error" if FLAGS.dtype == "float32" else "")
        )
        sys.exit(1)


if __name__ == "__main__":
    from fgvc_jax.tools import cli_common

    cli_common.exit_if_help(sys.argv)
    app.run(main)
