"""The training recipe over several steps against PyTorch's (`reference.recipe_parity`,
`python -m fgvc_jax.compare --steps N`): every method's synthetic recipe agrees in float64,
and each recipe mistake injected on our side (monkeypatch or our config only) is caught."""

import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

pytest.importorskip("torch")

from fgvc_jax import config as config_lib  # noqa: E402
from fgvc_jax.methods import registry  # noqa: E402
from fgvc_jax.recipe import optim  # noqa: E402
from fgvc_jax.reference import parity, recipe_parity  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FLOAT64 = 1e-9
CLASSES, STEPS, BATCH = 10, 5, 4
MISTAKE_STEPS = 3  # warm-up 0, 1/2, then the cosine's first step
CHEAPEST = "attention_cnn"  # the one method run in the unit tier (about 30 s)


def synthetic_config(name: str):
    return config_lib.sibling(os.path.join(ROOT, "configs", "x.py"), name).get_config("synthetic")


def failures(rows, tol=FLOAT64):
    return [f"{r.name}: {r.rel:.2e}" for r in rows if r.rel > tol]


def check(result):
    rows = recipe_parity.compare(result.ours, result.theirs["float64"])
    bad = failures(rows)
    assert not bad, "above 1e-9:\n" + "\n".join(bad) + "\n" + parity.table(rows)
    return rows


@pytest.mark.parametrize(
    "name",
    [
        n if n == CHEAPEST else pytest.param(n, marks=pytest.mark.slow)
        for n in sorted(registry.METHODS)
    ],
)
def test_every_method_recipe_matches_pytorch_in_float64(name):
    result = recipe_parity.run(synthetic_config(name), CLASSES, steps=STEPS, batch=BATCH, x64=True)
    rows = check(result)
    groups = set(registry.create(synthetic_config(name).method, CLASSES).param_groups())
    assert {f"params [{g}]" for g in groups} & {r.name for r in rows}
    assert len(result.ours.losses) == STEPS


@pytest.mark.slow
def test_cra_smra_densenet121_recipe_matches_pytorch_in_float64():
    """CRA-SMRA on DenseNet-121 amplifies rounding errors ~30x a step: PyTorch's own loss
    parts by 3e-9 from weights 1e-15 apart at step 4 (by 1e-3 at step 7), and after 5 steps
    the two sides differ by 2.5e-8. After 4 steps PyTorch still agrees with itself (its
    horizon) and so must we."""
    cfg = synthetic_config("cra_smra")
    cfg.method.backbone = "densenet121"
    steps = 4
    result = recipe_parity.run(cfg, CLASSES, steps=steps, batch=BATCH, x64=True, self_check=True)
    assert result.horizon == steps, result.horizon
    check(result)


# -- mistakes on our side -----------------------------------------------------------------
#
# The recipe they run: baseline_resnet (two learning-rate groups, BatchNorm, a biased head)
# with SGD, weight decay on convolution and linear weights only, a 2-step warm-up into the
# cosine, EMA and 2 micro-batches per step; a second variant clips the gradient.

MISTAKE_METHOD = "baseline_resnet"


def mistake_recipe(clip: bool = False):
    cfg = synthetic_config(MISTAKE_METHOD)
    cfg.optim.update(
        lr={"backbone": 1e-2, "new": 5e-2},
        wd_mask=recipe_parity.NO_NORM_NO_BIAS,
        warmup_steps=2,
        accumulate=2,
        clip_norm=0.5 if clip else 0.0,
    )
    cfg.train.ema_decay = 0.99
    return cfg


_REFERENCE = {}


def reference(clip: bool = False):
    """(inputs, PyTorch's float64 trace) of `mistake_recipe(clip)`, computed once."""
    if clip not in _REFERENCE:
        given = recipe_parity.inputs(
            mistake_recipe(clip), CLASSES, steps=MISTAKE_STEPS, batch=BATCH
        )
        theirs = recipe_parity.run_theirs(
            given.config, CLASSES, given.variables, given.batches, MISTAKE_STEPS, "float64"
        )
        _REFERENCE[clip] = given, theirs
    return _REFERENCE[clip]


def ours_rows(ours_config=None, clip: bool = False):
    given, theirs = reference(clip)
    cfg = given.config if ours_config is None else recipe_parity.prepare(ours_config)[0]
    ours = recipe_parity.run_ours(cfg, CLASSES, given.variables, given.batches, MISTAKE_STEPS, True)
    return recipe_parity.compare(ours, theirs)


@pytest.mark.parametrize("clip", [False, True])
def test_the_mistake_recipe_itself_matches(clip):
    rows = ours_rows(clip=clip)
    assert not failures(rows), parity.table(rows)
    assert {"ema [backbone]", "bn running var", "lr [new]"} <= {r.name for r in rows}


def caught(rows, *expected):
    """The comparison fails, on each of the `expected` rows at least."""
    bad = {r.name for r in rows if r.rel > FLOAT64}
    assert set(expected) <= bad, parity.table(rows)


def test_weight_decay_on_norms_and_biases_is_caught():
    cfg = mistake_recipe()
    cfg.optim.wd_mask = ".*"
    caught(ours_rows(cfg), "params [backbone]", "params [new]")


def test_warmup_one_step_late_is_caught(monkeypatch):
    make = optim.make_schedule

    def late(*args, **kwargs):
        schedule = make(*args, **kwargs)
        return lambda count: schedule(jnp.maximum(count - 1, 0))

    monkeypatch.setattr(optim, "make_schedule", late)
    caught(ours_rows(), "lr [backbone]", "lr [new]", "params [backbone]")


def test_nesterov_on_one_side_only_is_caught():
    cfg = mistake_recipe()
    cfg.optim.nesterov = True
    caught(ours_rows(cfg), "params [backbone]", "params [new]")


def test_backbone_and_head_learning_rates_swapped_is_caught():
    cfg = mistake_recipe()
    cfg.optim.lr = {"backbone": cfg.optim.lr["new"], "new": cfg.optim.lr["backbone"]}
    caught(ours_rows(cfg), "lr [backbone]", "lr [new]", "params [backbone]", "params [new]")


def test_ema_decay_off_by_1e3_is_caught():
    cfg = mistake_recipe()
    cfg.train.ema_decay += 1e-3
    rows = ours_rows(cfg)
    caught(rows, "ema [backbone]", "ema [new]")
    assert not failures([r for r in rows if not r.name.startswith("ema [")]), parity.table(rows)


def test_clipping_per_group_instead_of_global_is_caught(monkeypatch):
    groups = registry.create(mistake_recipe().method, CLASSES).param_groups()

    def per_group(max_norm):
        def update(updates, state, params=None):
            labels = optim.group_labels(updates, groups)
            pairs = list(zip(jax.tree.leaves(updates), jax.tree.leaves(labels)))
            norm = {g: optax.global_norm([u for u, l in pairs if l == g]) for _, g in pairs}
            clip = lambda u, g: u * jnp.minimum(1.0, max_norm / norm[g])
            return jax.tree.map(clip, updates, labels), state

        return optax.GradientTransformation(lambda params: optax.EmptyState(), update)

    monkeypatch.setattr(optim, "clip_by_global_norm", per_group)
    caught(ours_rows(clip=True), "params [backbone]", "params [new]")


def test_accumulation_summing_instead_of_averaging_is_caught(monkeypatch):
    accumulate = optim.accumulate_gradients

    def summing(grad_fn, params, carry, batch, k, split=None):
        (loss, aux), carry, grads = accumulate(grad_fn, params, carry, batch, k, split)
        return (loss, aux), carry, optax.tree.scale(k, grads)

    monkeypatch.setattr(optim, "accumulate_gradients", summing)
    caught(ours_rows(), "params [backbone]", "params [new]")


# -- the command ----------------------------------------------------------------------------


def compare(*args):
    return subprocess.run(
        [sys.executable, "-m", "fgvc_jax.compare", "--config", f"configs/{CHEAPEST}.py:synthetic"]
        + ["--steps", "3", *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )


def test_command_float64_with_host_augmentation_ema_and_accumulation():
    done = compare(
        "--dtype=float64",
        "--augment=host",
        "--config.train.ema_decay=0.9",
        "--config.optim.accumulate=2",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "loss PyTorch" in out and "lr new ours" in out and "augment host" in out
    assert "ema [new]" in out and "params [new]" in out and "FAIL" not in out


def test_command_float32_shows_both_errors_against_float64_and_passes():
    done = compare("--augment=host", "--config.optim.accumulate=2")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ours vs f64" in done.stdout and "PyTorch f32 vs f64" in done.stdout
    assert "params [new]" in done.stdout


def test_command_float32_over_seeds_decides_on_the_medians():
    done = compare("--seeds", "3")
    assert done.returncode == 0, done.stdout + done.stderr
    seeds = re.findall(
        r"^  seed (\d+): ours ([0-9.e+-]+) \(.*\), PyTorch ([0-9.e+-]+)", done.stdout, re.M
    )
    assert [int(s) for s, _, _ in seeds] == [0, 1, 2], done.stdout
    assert "median over the seeds" in done.stdout, done.stdout


def test_seeds_outside_the_float32_recipe_rule_is_a_usage_error():
    done = compare("--seeds", "3", "--dtype=float64")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "use it with --steps N and --dtype float32" in done.stderr, done.stderr[-2000:]


def test_median_rows_is_the_per_row_median_over_seeds():
    def rows(*rels):
        return [parity.Row(f"r{i}", 2.0, 2.0 * rel) for i, rel in enumerate(rels)]

    med = recipe_parity.median_rows([rows(1e-3, 5.0), rows(1e-1, 1.0), rows(1e-2, 3.0)])
    assert [r.name for r in med] == ["r0", "r1"]
    np.testing.assert_allclose([r.rel for r in med], [1e-2, 3.0])


def trace(losses):
    return recipe_parity.Trace(list(losses), {}, {})


def test_horizon_is_the_last_update_after_which_pytorch_agrees_with_itself():
    reference = trace([2.0, 2.0, 2.0, 2.0, 2.0])
    parting = trace([2.0, 2.0 * (1 + 1e-12), 2.0 * (1 + 1e-9), 2.0 * (1 + 1e-3), 2.0])
    # the loss of step 2 (after 2 updates) parts by 1e-9 > 1e-10: decided after 1 update
    assert recipe_parity.horizon(reference, parting) == 1
    assert recipe_parity.horizon(reference, trace([2.0] * 5)) == 5
    assert recipe_parity.horizon(reference, parting, tol=1e-8) == 2


def test_command_float64_on_a_recipe_that_amplifies_rounding_is_decided_where_pytorch_agrees_with_itself():
    """CRA-SMRA's synthetic recipe parts from itself ~10x a step (its loss 1e-9 apart from
    weights 1e-15 apart after 5 steps): after 8 steps PyTorch's own rows exceed 1e-9, and the
    rows are compared after the steps where PyTorch still agrees with itself."""
    done = subprocess.run(
        [sys.executable, "-m", "fgvc_jax.compare", "--config", "configs/cra_smra.py:synthetic"]
        + ["--steps", "8", "--dtype=float64"],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    final = out.split("PyTorch parts from itself")[0].split("PyTorch ±1e-15")[-1]
    own = [
        float(line.split("(largest")[0].split()[-1])
        for line in final.splitlines()
        if line.startswith("params [")
    ]
    assert own and max(own) > FLOAT64, out
    decided = re.search(r"Decided after (\d+) steps", out)
    assert decided and 0 < int(decided.group(1)) < 8, out
    assert "FAIL" not in out, out
