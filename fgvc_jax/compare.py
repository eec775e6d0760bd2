"""Compare a whole method with its PyTorch twin (transcribed from the paper's equations,
torchvision / timm backbones): the same weights (a random init of ours copied to the twin),
the same random batch; prints every stage, every head's logits, the combined prediction, the
auxiliary outputs, every loss term, the gradient per parameter group and the updated BN
statistics as max |ref|, max abs diff and relative diff (= diff / max |ref|).

    python -m fgvc_jax.compare --config configs/cra_smra.py:synthetic [--train]
    python -m fgvc_jax.compare --config configs/swinfc.py:cub --dtype bfloat16

`:synthetic` runs the CPU-sized model (batch 4), a dataset name the paper's size (batch 2).
Exits 1 when a float32 relative difference exceeds --tolerance (1e-4); with
--dtype bfloat16 the table is the drift of our bfloat16 compute against the float32 twin and
nothing fails. Needs torch, torchvision and timm (`pip install -e .[torch]`)."""
from __future__ import annotations

import sys

from absl import app, flags
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "configs/<method>.py:<dataset>")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "our compute dtype")
flags.DEFINE_bool("train", False, "training mode (batch statistics, SMRAM/FSM active, dropout "
                  "and stochastic depth off on both sides)")
flags.DEFINE_integer("batch", 0, "batch size (0: 4 at the CPU size, 2 at the paper's)")
flags.DEFINE_integer("num_classes", 0, "classes (0: 10 at the CPU size, 200 at the paper's)")
flags.DEFINE_integer("seed", 0, "seed of the weights and the batch")
flags.DEFINE_float("tolerance", 1e-4, "largest float32 relative difference that passes")


def main(argv):
    del argv
    import jax.numpy as jnp

    from fgvc_jax.reference import parity

    config = FLAGS.config
    if config is None:
        raise app.UsageError("--config configs/<method>.py:<dataset> is required")
    cpu = config.method.get("size", "full") == "cpu"
    batch = FLAGS.batch or (4 if cpu else 2)
    classes = FLAGS.num_classes or (10 if cpu else 200)
    dtype = jnp.bfloat16 if FLAGS.dtype == "bfloat16" else jnp.float32
    rows, notes = parity.run(config.method, classes, train=FLAGS.train, dtype=dtype,
                             batch=batch, seed=FLAGS.seed)
    mode = "train" if FLAGS.train else "eval"
    print(f"{config.method.name} ({config.method.get('backbone', '-')}, "
          f"{config.method.image_size} px, batch {batch}, {classes} classes, {mode} mode): "
          f"ours {FLAGS.dtype} vs PyTorch twin float32")
    for note in notes:
        print(f"note: {note}")
    print(parity.table(rows))
    worst = max(rows, key=lambda r: r.rel)
    print(f"largest relative difference: {worst.rel:.2e} ({worst.name})")
    if FLAGS.dtype == "float32" and worst.rel > FLAGS.tolerance:
        print(f"FAIL: above the float32 tolerance {FLAGS.tolerance:g}")
        sys.exit(1)


if __name__ == "__main__":
    app.run(main)
