"""Every method's steps compiled for H100 and TPU without the device (`python -m fgvc_jax.aot`).

Each compile runs in a subprocess: an abort inside XLA (as the Triton GEMM pass did on the
ResNet's strided 1x1 convolution) fails the test instead of killing pytest. The tests need
the aot-gpu and aot-tpu extras (`make dev`); without them they fail, naming the extra.
"""

import json
import os
import subprocess
import sys

import pytest

from fgvc_jax import aot
from fgvc_jax.methods import registry

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
H100_BYTES = 80 * 2**30
pytestmark = pytest.mark.aot


def _run(*args, timeout=900):
    env = {k: v for k, v in os.environ.items() if k not in ("JAX_PLATFORMS", "XLA_FLAGS")}
    env["PYTHONPATH"] = ROOT
    return subprocess.run(
        [sys.executable, "-m", "fgvc_jax.aot", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _report(*args) -> dict:
    out = _run(*args, "--json")
    assert out.returncode == 0, f"exit {out.returncode}:\n{out.stderr[-4000:]}"
    for notice in ("Could not find cuda drivers", "Unable to initialize backend"):
        assert notice not in out.stderr  # the report only (issue 24)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _check_fits(r: dict, step: str = "train") -> dict:
    s = r["steps"][step]
    peak = s["memory_gib"]["peak"]
    assert 0 < peak < H100_BYTES / 2**30, f"{r['method']}: peak {peak:.2f} GiB per device"
    assert s["memory_gib"]["temporaries"] > 0 and s["flops"] > 0
    return s


def test_resnet50_train_step_compiles_for_h100_with_default_xla_flags():
    """The stride-2 1x1 conv as an einsum over x[:, ::2, ::2] aborted XLA:GPU's Triton GEMM
    pass (triton_tiling_propagation.cc:627); --strict allows no fallback flag."""
    r = _report(
        "--config",
        "configs/baseline_resnet.py:cub",
        "--target",
        "h100",
        "--steps",
        "train",
        "--strict",
    )
    assert (r["method"], r["batch_size"], r["image_size"]) == ("baseline_resnet", 16, 448)
    s = _check_fits(r)
    assert s["triton_gemm"] == "default" and not s["collectives"]
    # ResNet-50 at 448²: ≈ 3 x 4.1 GMAC x 4 (image area) x 2 FLOP/MAC ≈ 98 GFLOP per image
    assert 85 < r["train_gflops_per_image"] < 110, r["train_gflops_per_image"]


def _a_part_of_another(method: str) -> bool:
    """A baseline (its backbone and a linear head) whose backbone another method builds on at
    the same image size (and, in the configs, the same batch): its step is a part of that
    method's, compiled below. baseline_resnet is compiled by the test above all the same; for
    baseline_swin, a part of SwinFC's step, the one figure of its own, the FLOPs, needs no
    compile (`hlo_flops` of the lowered step: tests/methods/test_full_size.py)."""
    config = registry.default_config(method)
    return method.startswith("baseline") and any(
        other != method
        and registry.has_paper_size(other)
        and registry.default_config(other).backbone == config.backbone
        and registry.default_config(other).image_size == config.image_size
        for other in registry.METHODS
    )


@pytest.mark.parametrize(
    "method",
    [
        m
        for m in sorted(registry.METHODS)
        if registry.has_paper_size(m) and not _a_part_of_another(m)
    ],
)
def test_paper_size_train_step_compiles_and_fits_on_h100(method):
    resnet = registry.default_config(method).backbone.startswith("resnet")
    r = _report(
        "--config",
        f"configs/{method}.py:cub",
        "--target",
        "h100",
        "--steps",
        "train",
        *(["--strict"] if resnet else []),
    )
    s = _check_fits(r)
    if resnet:
        assert s["triton_gemm"] == "default"
    if s["triton_gemm"] == "off":
        assert "Couldn't find output tile sizes" in s["note"]


@pytest.mark.parametrize("method", sorted(registry.METHODS))
def test_cpu_size_train_step_compiles_for_tpu_v5e_with_gradient_all_reduce(method):
    r = _report(
        "--config", f"configs/{method}.py:synthetic", "--target", "tpu-v5e:2x2", "--steps", "train"
    )
    assert r["devices"] == 4 and "v5" in r["device"].lower()
    s = _check_fits(r)
    assert s["collectives"].get("all-reduce", 0) > 0, s["collectives"]


def test_a_step_above_the_chips_memory_is_one_clear_error():
    out = _run(
        "--config",
        "configs/attention_cnn.py:synthetic",
        "--target",
        "tpu-v5e:1x1",
        "--steps",
        "train",
        "--config.train.batch_size=131072",
    )
    err = out.stderr.strip().splitlines()[-1]
    assert out.returncode == 2, out.stderr[-4000:]
    assert (
        err.startswith("error: the train step at global batch 131072 does not fit on tpu-v5e:1x1: ")
        and "exceeds available HBM" in err
    ), err


def test_collectives_sharing_a_channel_are_counted_once():
    text = "\n".join(
        [
            "%all-gather.1 = bf16[32,256] all-gather(%p0), channel_id=3, dimensions={0}",
            "%all-gather.2 = bf16[32,256] all-gather(%p1), channel_id=3, dimensions={0}",
            "%all-reduce-start.1 = f32[8] all-reduce-start(%p2), channel_id=4, to_apply=%add",
            "%all-reduce.2 = f32[8] all-reduce(%p3), channel_id=5, to_apply=%add",
            "%all-reduce.3 = f32[8] all-reduce(%p4), to_apply=%add",
            "%fusion.1 = f32[8] fusion(%all-reduce.2), kind=kLoop",
        ]
    )
    assert aot.collectives(text) == {"all-reduce": 3, "all-gather": 1}


def test_eight_h100_train_and_eval_steps_all_reduce():
    """Data parallel over 8 GPUs: the gradient (train) and the metric sums (eval) are
    all-reduced."""
    r = _report("--config", "configs/baseline_resnet.py:synthetic", "--target", "h100x8")
    assert r["devices"] == 8
    for step in ("train", "eval"):
        assert r["steps"][step]["collectives"].get("all-reduce", 0) > 0, r["steps"][step]


_MATMUL = """
import json, sys
from fgvc_jax import aot
aot.prepare_environment(["--target", "h100x8"])
import jax, jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
from fgvc_jax.runtime import parallel
mesh = parallel.make_mesh(aot.target_devices(aot.parse_target("h100x8")))
x = jax.ShapeDtypeStruct((256, 512), jnp.bfloat16, sharding=NamedSharding(mesh, P("data")))
w = jax.ShapeDtypeStruct((512, 1024), jnp.bfloat16, sharding=NamedSharding(mesh, P()))
lowered = jax.jit(lambda x, w: (x @ w).sum(0), out_shardings=NamedSharding(mesh, P())).lower(x, w)
print(json.dumps({"flops": aot.hlo_flops(lowered),
                  "collectives": aot.collectives(lowered.compile().as_text())}))
"""


def test_flops_of_a_matmul_match_the_hand_count():
    """2·M·N·K for the dot of the whole (unpartitioned) program, plus the M·N additions of
    the sum; the sum over the sharded batch is an all-reduce."""
    out = subprocess.run(
        [sys.executable, "-c", _MATMUL],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, PYTHONPATH=ROOT),
    )
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    m, k, n = 256, 512, 1024
    assert 2 * m * n * k <= r["flops"] <= 2 * m * n * k + 2 * m * n, r["flops"]
    assert r["collectives"].get("all-reduce", 0) > 0, r["collectives"]


def test_targets_and_class_counts():
    assert aot.parse_target("h100x16")["topology"] == "1x2x8"
    assert aot.parse_target("tpu-v5p:4x4x4") == dict(
        kind="tpu", name="tpu-v5p:4x4x4", topology="v5p:4x4x4", peak=459.0
    )
    with pytest.raises(ValueError, match="--target='a100'; valid: h100, h100x8"):
        aot.parse_target("a100")
    from ml_collections import ConfigDict

    data = ConfigDict(dict(name="fgvc_aircraft", label_level="family"))
    assert aot.num_classes_of(data) == 70 and aot.num_classes_of(data, 7) == 7
    with pytest.raises(ValueError, match="pass --num_classes"):
        aot.num_classes_of(ConfigDict(dict(name="folder")))


def test_missing_extra_is_one_clear_error(monkeypatch, capsys):
    monkeypatch.setattr(aot, "SIDE_DIRS", {"gpu": "/nonexistent", "tpu": "/nonexistent"})
    monkeypatch.setattr(aot.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setenv("JAX_SKIP_CUDA_CONSTRAINTS_CHECK", "1")
    for target, extra in (("h100", "aot-gpu"), ("tpu-v5e:2x2", "aot-tpu")):
        with pytest.raises(SystemExit) as e:
            aot.prepare_environment(["--target", target])
        assert e.value.code == 2
        err = capsys.readouterr().err.strip()
        # `make dev` installs the extra beside site-packages (inside it breaks CPU jax)
        assert err.startswith("error: --target=") and "run `make dev`" in err
        assert f"the {extra} extra into .venv/{extra}" in err and "pip install" not in err
        assert len(err.splitlines()) == 1
