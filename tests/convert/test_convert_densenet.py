"""DenseNet conversion: torchvision's current and legacy (`norm.1`) key forms, strict errors
naming the checkpoint's own keys, the classifier kept or dropped, and the CLI's --check."""

import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest

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
STAGES = ("stem", "stage1", "stage2", "stage3", "stage4", "logits")


def legacy(sd: dict) -> dict:
    """The key form of torchvision's published DenseNet weights: `denselayer1.norm.1.weight`."""
    return {
        re.sub(r"(denselayer\d+\.(?:norm|conv))([12])\.", r"\1.\2.", k): v for k, v in sd.items()
    }


@pytest.fixture(scope="module")
def densenet121_sd(tmp_path_factory):
    path = tmp_path_factory.mktemp("w") / "densenet121.pth"
    saved_reference("densenet121", path)
    return read_state_dict(str(path))


def test_legacy_keys_convert_to_the_same_variables(densenet121_sd):
    old = legacy(densenet121_sd)
    assert "features.denseblock1.denselayer1.norm.1.running_var" in old
    assert "features.denseblock4.denselayer16.conv.2.weight" in old
    assert not any(".norm1." in k or ".conv2." in k for k in old)
    jax.tree_util.tree_map(
        np.testing.assert_array_equal,
        convert_state_dict("densenet121", old, None),
        convert_state_dict("densenet121", densenet121_sd, None),
    )


@pytest.mark.parametrize("form", ["current", "legacy"])
def test_missing_layer_lists_every_unfilled_variable(densenet121_sd, form):
    sd = {k: v for k, v in densenet121_sd.items() if ".denseblock3.denselayer24." not in k}
    with pytest.raises(ConversionError) as e:
        convert_state_dict("densenet121", legacy(sd) if form == "legacy" else sd, None)
    msg = str(e.value)
    assert "does not fill" in msg and "no place for" not in msg
    prefix = "features/denseblock3/denselayer24"
    for name in ("conv1/kernel", "conv2/kernel", "norm1/scale", "norm2/bias"):
        assert f"params/{prefix}/{name}" in msg
    assert f"batch_stats/{prefix}/norm2/var" in msg
    assert "denselayer23" not in msg


def test_wrong_shape_names_legacy_key_and_both_shapes(densenet121_sd):
    sd = legacy(densenet121_sd)
    sd["features.denseblock2.denselayer3.conv.2.weight"] = np.zeros((32, 128, 5, 5), np.float32)
    with pytest.raises(
        ConversionError,
        match=(
            r"features\.denseblock2\.denselayer3\.conv\.2\.weight: checkpoint \(5, 5, 128, 32\), "
            r"model params/features/denseblock2/denselayer3/conv2/kernel \(3, 3, 128, 32\)"
        ),
    ):
        convert_state_dict("densenet121", sd, None)


def test_wrong_arch_is_refused(densenet121_sd):
    """densenet121 weights into densenet169: every extra layer is named as unfilled."""
    with pytest.raises(ConversionError) as e:
        convert_state_dict("densenet169", densenet121_sd, None)
    assert "params/features/denseblock4/denselayer32/conv2/kernel" in str(e.value)


def test_classifier_kept_or_dropped(densenet121_sd):
    kept = convert_state_dict("densenet121", densenet121_sd, None)
    assert kept["params"]["classifier"]["kernel"].shape == (1024, 1000)
    assert kept["params"]["features"]["norm5"]["scale"].shape == (1024,)
    for n in (0, 200):  # headless, or new classes: the head is left to the caller
        assert "classifier" not in convert_state_dict("densenet121", densenet121_sd, n)["params"]


@pytest.mark.slow
def test_cli_densenet161_legacy_keys_check_against_torch(tmp_path):
    """`convert --arch densenet161 --check` on a legacy-keyed file: --check loads the same
    weights into torchvision (or its rows would not be ≤ 1e-4) and compares at 224 px."""
    tmodel = saved_reference("densenet161", tmp_path / "current.pth")
    torch.save(legacy(tmodel.state_dict()), tmp_path / "w.pth")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "fgvc_jax.convert",
            "--arch",
            "densenet161",
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
    assert "1000 classes" in out.stdout
    rows = {
        line.split()[0]: float(line.split()[-1])
        for line in out.stdout.splitlines()
        if line.split() and line.split()[0] in STAGES
    }
    assert len(rows) == 6 and max(rows.values()) <= 1e-4, out.stdout
    restored = store.restore(str(tmp_path / "ckpt"))
    headless = load_pretrained("densenet161", str(tmp_path / "current.pth"), num_classes=0)
    assert restored["params"]["classifier"]["kernel"].shape == (2208, 1000)
    del restored["params"]["classifier"]
    jax.tree_util.tree_map(np.testing.assert_array_equal, headless, restored)
