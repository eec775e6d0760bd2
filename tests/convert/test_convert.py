"""The converter is strict and its errors name what is wrong; .safetensors needs no torch;
the CLI writes a restorable orbax checkpoint and checks it against PyTorch."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from safetensors.numpy import save_file

from fgvc_jax.convert import (
    ConversionError,
    convert_state_dict,
    load_pretrained,
    read_state_dict,
    store,
)
from fgvc_jax.reference.torch_import import torch
from tests.torch_checkpoints import saved_reference

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def resnet18_sd(tmp_path_factory):
    path = tmp_path_factory.mktemp("w") / "resnet18.pth"
    saved_reference("resnet18", path)
    return read_state_dict(str(path))


def test_truncated_state_dict_lists_every_unfilled_variable(resnet18_sd):
    sd = {k: v for k, v in resnet18_sd.items() if not k.startswith("layer4.1.")}
    with pytest.raises(ConversionError) as e:
        convert_state_dict("resnet18", sd, None)
    msg = str(e.value)
    assert "does not fill" in msg
    for name in (
        "params/layer4/1/conv1/kernel",
        "params/layer4/1/bn2/scale",
        "batch_stats/layer4/1/bn2/var",
    ):
        assert name in msg
    assert "layer4/0" not in msg


def test_wrong_shape_names_key_and_both_shapes(resnet18_sd):
    sd = dict(resnet18_sd, **{"layer2.0.conv1.weight": np.zeros((128, 64, 5, 5), np.float32)})
    with pytest.raises(
        ConversionError,
        match=r"layer2\.0\.conv1\.weight: checkpoint \(5, 5, 64, 128\), "
        r"model params/layer2/0/conv1/kernel \(3, 3, 64, 128\)",
    ):
        convert_state_dict("resnet18", sd, None)


def test_extra_key_is_named(resnet18_sd):
    sd = dict(resnet18_sd, **{"layer5.0.conv1.weight": np.zeros((8, 8, 3, 3), np.float32)})
    with pytest.raises(ConversionError, match=r"no place for:\n  layer5\.0\.conv1\.weight"):
        convert_state_dict("resnet18", sd, None)


def test_all_problems_reported_at_once(resnet18_sd):
    sd = dict(resnet18_sd, extra=np.zeros(3, np.float32), **{"fc.bias": np.zeros(7, np.float32)})
    del sd["bn1.weight"]
    with pytest.raises(ConversionError) as e:
        convert_state_dict("resnet18", sd, None)
    assert all(s in str(e.value) for s in ("fc.bias", "extra", "params/bn1/scale"))


def test_head_dropped_on_request(resnet18_sd):
    v = convert_state_dict("resnet18", resnet18_sd, 0)
    assert "fc" not in v["params"] and "layer4" in v["params"]
    kept = convert_state_dict("resnet18", resnet18_sd, None)
    assert kept["params"]["fc"]["kernel"].shape == (512, 1000)
    assert (
        "fc" not in convert_state_dict("resnet18", resnet18_sd, 200)["params"]
    )  # new classes: new head


def test_unknown_arch_and_missing_file(tmp_path, resnet18_sd):
    with pytest.raises(ConversionError, match="unknown arch 'resnet51'.*resnet50"):
        convert_state_dict("resnet51", resnet18_sd)
    with pytest.raises(ConversionError, match="no weights file at"):
        read_state_dict(str(tmp_path / "nope.pth"))


def test_safetensors_loads_without_torch(tmp_path, resnet18_sd):
    path = tmp_path / "resnet18.safetensors"
    save_file({k: np.ascontiguousarray(v) for k, v in resnet18_sd.items()}, str(path))
    code = (
        "import sys; from fgvc_jax.convert import load_pretrained; "
        f"v = load_pretrained('resnet18', {str(path)!r}, num_classes=None); "
        "assert 'torch' not in sys.modules, 'torch was imported'; "
        "print(v['params']['conv1']['kernel'].shape)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "(7, 7, 3, 64)" in out.stdout
    from_pth = convert_state_dict("resnet18", resnet18_sd, None)
    from_st = load_pretrained("resnet18", str(path), num_classes=None)
    jax.tree_util.tree_map(np.testing.assert_array_equal, from_pth, from_st)


def test_cli_writes_checkpoint_and_checks_against_torch(tmp_path):
    saved_reference("resnet18", tmp_path / "w.pth")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "fgvc_jax.convert",
            "--arch",
            "resnet18",
            "--src",
            str(tmp_path / "w.pth"),
            "--out",
            str(tmp_path / "ckpt"),
            "--check",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    rows = {
        line.split()[0]: float(line.split()[-1])
        for line in out.stdout.splitlines()
        if line.split()
        and line.split()[0] in ("stem", "stage1", "stage2", "stage3", "stage4", "logits")
    }
    assert len(rows) == 6 and max(rows.values()) <= 1e-4, out.stdout
    restored = store.restore(str(tmp_path / "ckpt"))
    direct = load_pretrained("resnet18", str(tmp_path / "w.pth"), num_classes=None)
    jax.tree_util.tree_map(np.testing.assert_array_equal, direct, restored)
    assert load_pretrained("resnet18", str(tmp_path / "ckpt"))["params"]["fc"]["kernel"].shape == (
        512,
        1000,
    )


def test_cli_reports_bad_checkpoint_without_traceback(tmp_path):
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, tmp_path / "bad.pth")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "fgvc_jax.convert",
            "--arch",
            "resnet18",
            "--src",
            str(tmp_path / "bad.pth"),
            "--out",
            str(tmp_path / "ckpt"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert out.returncode == 2
    assert (
        out.stderr.startswith("error: checkpoint does not fit the model")
        and "Traceback" not in out.stderr
    )
