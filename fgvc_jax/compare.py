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

--steps N: the method's whole training recipe from the config for N steps on both sides
  (`fgvc_jax.reference.recipe_parity`: our optimizer and jitted train step; the twin with
  torch.optim, torch.optim.lr_scheduler, clip_grad_norm_ and AveragedModel), the same host
  batches from the same initial weights; prints per step the loss and every parameter
  group's learning rate, then every parameter group, the BatchNorm running statistics and
  (train.ema_decay > 0) the EMA weights. --dtype float64 also runs PyTorch from weights
  1e-15 apart (a few float64 roundings) and prints how far PyTorch parts from itself, per
  step and at the end; a row fails above 1e-9. A recipe that amplifies rounding errors
  (CRA-SMRA's and MA-EA's synthetic recipes: ~10x a step) parts from itself within N steps:
  then no implementation can agree with PyTorch to 1e-9 after N, and the rows are compared
  after the last step H where PyTorch still agrees with itself to 1e-10 (both sides run
  again for H steps). float32 as above (ours and PyTorch's float32 each against PyTorch's
  float64). After N steps both float32 errors are amplified rounding, heavy-tailed from
  seed to seed (a near-tie flipped at step 13 or at step 25): --seeds S decides each row on
  the medians over S seeds, as the one-step float32 test does. --augment host: a random
  crop and flip per example drawn once on the host and fed to both (off: no augmentation).

    python -m fgvc_jax.compare --config configs/baseline_resnet.py:synthetic --steps 30 \\
        --dtype float64
    python -m fgvc_jax.compare --config configs/cra_smra.py:synthetic --steps 30 \\
        --config.method.backbone=densenet121 --augment host

Exits 1 when a row fails. Needs torch, torchvision and timm (`make dev` installs them)."""

from __future__ import annotations

import importlib.util
import sys

import jax.numpy as jnp
from absl import app, flags
from ml_collections import config_flags

from fgvc_jax.reference import parity, recipe_parity  # torch itself only on first use
from fgvc_jax.tools import cli_common

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
    "largest relative difference that passes (default 1e-4; with --dtype float64 1e-10, "
    "1e-9 with --steps)",
)
flags.DEFINE_integer("steps", 0, "> 0: the whole training recipe for this many steps")
flags.DEFINE_integer(
    "seeds",
    1,
    "--steps with --dtype float32: decide each row on the median over this many seeds "
    "(--seed, --seed + 1, ...) of ours' and PyTorch's float32 errors",
)
flags.DEFINE_enum(
    "augment", "off", ["off", "host"], "--steps: no augmentation, or crop+flip made on the host"
)


def check_torch() -> None:
    """One line naming `make dev` when torch, torchvision or timm is not installed."""
    missing = [m for m in ("torch", "torchvision", "timm") if importlib.util.find_spec(m) is None]
    if missing:
        print(f"error: compare needs {', '.join(missing)}: run `make dev`.", file=sys.stderr)
        sys.exit(2)


def main(argv):
    del argv
    cli_common.quiet()  # the tables only: no absl/JAX INFO lines ("Unable to initialize ...")
    check_torch()
    config = FLAGS.config
    if config is None:
        raise app.UsageError("--config configs/<method>.py:<dataset> is required")
    if FLAGS.seeds != 1 and not (FLAGS.seeds > 1 and FLAGS.steps > 0 and FLAGS.dtype == "float32"):
        raise app.UsageError(
            f"--seeds={FLAGS.seeds}: --seeds S (S > 1) decides the float32 rule of --steps N "
            "over S seeds; use it with --steps N and --dtype float32"
        )
    cpu = config.method.get("size", "full") == "cpu"
    batch = FLAGS.batch or (4 if cpu else 2)
    classes = FLAGS.num_classes or (10 if cpu else 200)
    if FLAGS.steps > 0:
        return recipe_main(config, batch, classes)
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


def recipe_main(config, batch: int, classes: int) -> None:
    """--steps N: the training recipe on both sides (`reference.recipe_parity`)."""
    x64 = FLAGS.dtype == "float64"
    tolerance = FLAGS.tolerance or (1e-9 if x64 else 1e-4)
    ours_config = None
    if FLAGS.dtype == "bfloat16":
        ours_config = config.copy_and_resolve_references()
        ours_config.train.dtype = "bfloat16"
    twin_dtypes = ("float64",) if x64 else ("float32", "float64")
    result = recipe_parity.run(
        config,
        classes,
        steps=FLAGS.steps,
        batch=batch,
        x64=x64,
        twin_dtypes=twin_dtypes,
        seed=FLAGS.seed,
        augment=FLAGS.augment,
        ours_config=ours_config,
        self_check=x64,
    )
    twin = result.theirs[twin_dtypes[0]]
    print(
        f"{config.method.name} ({config.method.get('backbone', '-')}, "
        f"{config.method.image_size} px, batch {batch}, {classes} classes, "
        f"optim {config.optim.name}, accumulate {config.optim.accumulate}, "
        f"EMA {config.train.get('ema_decay', 0.0)}, augment {FLAGS.augment}): the training "
        f"recipe for {FLAGS.steps} steps, ours {FLAGS.dtype} vs PyTorch {twin_dtypes[0]}"
    )
    for note in result.notes:
        print(f"note: {note}")
    perturbed = result.theirs.get(recipe_parity.PERTURBED)
    print(recipe_parity.steps_table(result.ours, twin, perturbed))
    rows = recipe_parity.compare(result.ours, twin)
    if x64:
        own = recipe_parity.compare(perturbed, twin)
        print(parity.table(rows, {"PyTorch ±1e-15": own}))
        if result.at_horizon:
            h = result.horizon
            print(
                f"PyTorch parts from itself (its run from weights 1e-15 apart) by more than "
                f"{recipe_parity.SELF_AGREEMENT:g} in the loss of step {h + 1}: this recipe "
                f"amplifies rounding errors, so after {FLAGS.steps} steps no implementation "
                f"agrees with PyTorch to {tolerance:g}, PyTorch itself included (its column "
                f"above). Decided after {h} steps, where PyTorch still agrees with itself:"
            )
            rows = recipe_parity.compare(*result.at_horizon)
            print(parity.table(rows))
        failed = [r.name for r in rows if r.rel > tolerance]
    elif FLAGS.dtype == "float32":
        exact = result.theirs["float64"]
        ours_err = recipe_parity.compare(result.ours, exact)
        torch_err = recipe_parity.compare(twin, exact)
        print(parity.table(rows, {"ours vs f64": ours_err, "PyTorch f32 vs f64": torch_err}))
        if FLAGS.seeds > 1:
            ours_err, torch_err = float32_medians(config, classes, batch, ours_err, torch_err)
        failed = [o.name for o, t in zip(ours_err, torch_err) if o.rel > max(tolerance, 2 * t.rel)]
    else:
        print(parity.table(rows))
        failed = []
    worst = max(rows, key=lambda r: r.rel)
    print(f"largest relative difference: {worst.rel:.2e} ({worst.name})")
    if failed:
        print(
            f"FAIL: {', '.join(failed)} above {tolerance:g}"
            + (" and twice PyTorch's own float32 error" if FLAGS.dtype == "float32" else "")
        )
        sys.exit(1)


def float32_medians(config, classes: int, batch: int, ours_err: list, torch_err: list):
    """--seeds S: the float32 errors (ours, PyTorch's; each against PyTorch's float64) of
    seeds --seed + 1 ... --seed + S - 1 besides the first run's; prints each seed's worst row
    and returns rows holding the per-row medians over the S seeds."""
    runs = [(ours_err, torch_err)]
    for seed in range(FLAGS.seed + 1, FLAGS.seed + FLAGS.seeds):
        r = recipe_parity.run(
            config,
            classes,
            steps=FLAGS.steps,
            batch=batch,
            x64=False,
            twin_dtypes=("float32", "float64"),
            seed=seed,
            augment=FLAGS.augment,
        )
        exact = r.theirs["float64"]
        runs.append(
            (
                recipe_parity.compare(r.ours, exact),
                recipe_parity.compare(r.theirs["float32"], exact),
            )
        )
    print(f"float32 against PyTorch's float64 over {FLAGS.seeds} seeds (worst row of each):")
    for seed, (o, t) in enumerate(runs, FLAGS.seed):
        wo, wt = max(o, key=lambda x: x.rel), max(t, key=lambda x: x.rel)
        print(f"  seed {seed}: ours {wo.rel:.2e} ({wo.name}), PyTorch {wt.rel:.2e} ({wt.name})")

    ours_med = recipe_parity.median_rows([o for o, _ in runs])
    torch_med = recipe_parity.median_rows([t for _, t in runs])
    print(f"{'median over the seeds':<34} {'ours vs f64':>13} {'PyTorch f32 vs f64':>19}")
    for o, t in zip(ours_med, torch_med):
        print(f"{o.name:<34} {o.rel:>13.2e} {t.rel:>19.2e}")
    return ours_med, torch_med


if __name__ == "__main__":
    cli_common.exit_if_help(sys.argv)
    app.run(main)
