"""`config.init.pretrained` sources (fgvc_jax.convert.pretrained): `torchvision:<weights enum>`
and `timm:<model name>` load through the libraries' own caches (tested offline: a random
model's state dict placed where torch.hub / the Hugging Face hub cache keeps the published
file), and a missing, unreadable, misfitting or unknown source is one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error

import numpy as np
import pytest
from flax import traverse_util

from fgvc_jax.convert import convert_state_dict, read_state_dict
from fgvc_jax.convert.pretrained import PretrainedError, read_backbone
from fgvc_jax.reference.torch_import import torch, torchvision
from tests.torch_checkpoints import saved_reference

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _assert_same_variables(got: dict, want: dict) -> None:
    got, want = traverse_util.flatten_dict(got), traverse_util.flatten_dict(want)
    assert sorted(got) == sorted(want)
    for k in want:
        np.testing.assert_array_equal(np.asarray(got[k]), np.asarray(want[k]), err_msg=str(k))


def test_torchvision_weights_come_from_torch_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    cached = tmp_path / "hub" / "checkpoints" / os.path.basename(weights.url)
    cached.parent.mkdir(parents=True)
    saved_reference("resnet18", cached)
    got = read_backbone("torchvision:ResNet18_Weights.IMAGENET1K_V1", "resnet18", {})
    _assert_same_variables(got, convert_state_dict("resnet18", read_state_dict(str(cached)), 0))


def test_torchvision_without_network_or_cache_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(PretrainedError) as e:
        read_backbone("torchvision:ResNet18_Weights.IMAGENET1K_V1", "resnet18", {})
    msg = str(e.value)
    assert "\n" not in msg
    assert "resnet18-f37072fd.pth" in msg and str(tmp_path / "hub" / "checkpoints") in msg


def test_unknown_published_names_are_one_line():
    with pytest.raises(PretrainedError, match=r"torchvision has no weights 'ResNet50_Weights\.X'"):
        read_backbone("torchvision:ResNet50_Weights.X", "resnet50", {})
    with pytest.raises(PretrainedError, match=r"timm has no pretrained model 'resnet51\.a1_in1k'"):
        read_backbone("timm:resnet51.a1_in1k", "resnet50", {})


_TIMM_SCRIPT = """
import json, sys
import numpy as np
from flax import traverse_util
from fgvc_jax.convert.pretrained import PretrainedError, read_backbone
got = read_backbone("timm:resnet18.a1_in1k", "resnet18", {})
flat = traverse_util.flatten_dict(got, sep="/")
np.savez(sys.argv[1], **{k: np.asarray(v) for k, v in flat.items()})
try:
    read_backbone("timm:resnet18.tv_in1k", "resnet18", {})  # not in the cache
    print(json.dumps({"error": None}))
except PretrainedError as e:
    print(json.dumps({"error": str(e)}))
"""


def test_timm_weights_come_from_the_hugging_face_cache(tmp_path):
    """timm's resnet18.a1_in1k is published on the hub as timm/resnet18.a1_in1k
    (model.safetensors); the hub cache layout is models--<org>--<name>/snapshots/<commit>."""
    from safetensors.torch import save_file

    from fgvc_jax.reference.torch_import import timm

    torch.manual_seed(0)
    model = timm.create_model("resnet18", pretrained=False)
    repo = tmp_path / "hf" / "hub" / "models--timm--resnet18.a1_in1k"
    commit = "0" * 40
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    safetensors = repo / "snapshots" / commit / "model.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(safetensors))
    env = dict(
        os.environ,
        PYTHONPATH=ROOT,
        JAX_PLATFORMS="cpu",
        HF_HOME=str(tmp_path / "hf"),
        HF_HUB_OFFLINE="1",
        TORCH_HOME=str(tmp_path / "torch"),
    )
    out = subprocess.run(
        [sys.executable, "-c", _TIMM_SCRIPT, str(tmp_path / "got.npz")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    want = convert_state_dict("resnet18", read_state_dict(str(safetensors)), 0)
    got = traverse_util.unflatten_dict(
        {tuple(k.split("/")): v for k, v in np.load(tmp_path / "got.npz").items()}
    )
    _assert_same_variables(got, want)
    error = json.loads(out.stdout.strip().splitlines()[-1])["error"]
    assert error and "\n" not in error and "timm:resnet18.tv_in1k" in error, error


def test_a_wrong_file_is_one_line(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(PretrainedError, match=r"bad\.pth'? is not a readable state dict") as e:
        read_backbone(str(bad), "resnet18", {})
    assert "\n" not in str(e.value)
    saved_reference("resnet18", tmp_path / "r18.pth")
    with pytest.raises(
        PretrainedError, match=r"does not fit the resnet50 backbone: .*and \d+ more"
    ):
        read_backbone(str(tmp_path / "r18.pth"), "resnet50", {})
    (tmp_path / "r18.txt").write_text("x")
    with pytest.raises(PretrainedError, match="unknown weights format"):
        read_backbone(str(tmp_path / "r18.txt"), "resnet18", {})


def test_a_converted_directory_loads_without_its_classifier(tmp_path):
    """`python -m fgvc_jax.convert` keeps the classifier by default; the method's backbone
    is headless."""
    from fgvc_jax.convert import store

    saved_reference("resnet18", tmp_path / "r18.pth")
    sd = read_state_dict(str(tmp_path / "r18.pth"))
    store.save(str(tmp_path / "converted"), convert_state_dict("resnet18", sd, None), {})
    got = read_backbone(str(tmp_path / "converted"), "resnet18", {})
    _assert_same_variables(got, convert_state_dict("resnet18", sd, 0))
