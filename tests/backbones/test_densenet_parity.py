"""torchvision DenseNet ⇔ fgvc_jax DenseNet through the converter: every stage and the logits."""

import functools

import jax
import numpy as np
import pytest

from fgvc_jax.backbones.densenet import ARCHS, densenet
from fgvc_jax.convert import build, load_pretrained
from fgvc_jax.convert import torch_reference as ref
from fgvc_jax.reference.torch_import import torch
from tests.torch_checkpoints import flat_numpy, random_images, saved_reference

TOL = 1e-4  # max abs difference relative to the output's max magnitude (issue 2)


def test_eval_parity_densenet121(tmp_path):
    tmodel = saved_reference("densenet121", tmp_path / "w.pth")
    variables = load_pretrained("densenet121", str(tmp_path / "w.pth"), num_classes=None)
    x = random_images(2, 64)
    theirs = ref.torch_stages(tmodel, x)
    with torch.no_grad():  # the stage split recomposes torchvision's own forward
        whole = tmodel(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    np.testing.assert_allclose(theirs["logits"], whole, rtol=0, atol=1e-5)
    ours = ref.jax_stages(build("densenet121", 1000), variables, x)
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}
    assert ours["stage4"].shape == (2, 2, 2, 1024)
    errs = ref.max_relative_errors(ours, theirs)
    assert set(errs) == set(ref.STAGES)
    assert max(errs.values()) <= TOL, errs


@pytest.mark.slow
def test_eval_parity_densenet161_full_size_headless(tmp_path):
    """The CRA-SMRA backbone at 224 px, loaded headless as a method loads it."""
    tmodel = saved_reference("densenet161", tmp_path / "w.pth")
    variables = load_pretrained("densenet161", str(tmp_path / "w.pth"), num_classes=0)
    assert "classifier" not in variables["params"]
    tmodel.classifier = torch.nn.Identity()  # headless: the "logits" are the pooled features
    x = random_images(1, 224)
    ours = ref.jax_stages(build("densenet161", 0), variables, x)
    theirs = ref.torch_stages(tmodel, x)
    want = [
        (1, 56, 56, 96),
        (1, 56, 56, 384),
        (1, 28, 28, 768),
        (1, 14, 14, 2112),
        (1, 7, 7, 2208),
        (1, 2208),
    ]
    assert [ours[k].shape for k in ref.STAGES] == want
    errs = ref.max_relative_errors(ours, theirs)
    assert max(errs.values()) <= TOL, errs


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_stage_channels_match_torchvision(arch):
    tmodel = ref.torch_model(arch)
    last = [list(getattr(tmodel.features, f"denseblock{i}").values())[-1] for i in range(1, 5)]
    want = tuple(layer.conv1.in_channels + layer.conv2.out_channels for layer in last)
    assert densenet(arch).stage_channels == want
    assert want[-1] == tmodel.classifier.in_features


def test_train_mode_batch_norm_matches_torch(tmp_path):
    """Batch statistics in the forward pass and the updated (unbiased) running stats."""
    tmodel = saved_reference("densenet121", tmp_path / "w.pth").train()
    variables = load_pretrained("densenet121", str(tmp_path / "w.pth"), num_classes=None)
    x = random_images(4, 64)
    with torch.no_grad():
        theirs = tmodel(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    apply = functools.partial(build("densenet121", 1000).apply, train=True, mutable=["batch_stats"])
    ours, updated = jax.jit(apply)(variables, x)
    assert np.max(np.abs(np.asarray(ours) - theirs)) / np.max(np.abs(theirs)) <= 1e-5
    flat = flat_numpy(updated["batch_stats"])
    checked = 0
    for key, t in tmodel.state_dict().items():
        if key.endswith(("running_mean", "running_var")):
            path = (
                key.replace("running_mean", "mean").replace("running_var", "var").replace(".", "/")
            )
            np.testing.assert_allclose(flat[path], t.numpy(), rtol=1e-5, atol=1e-5, err_msg=key)
            checked += 1
    assert checked == 2 * 121  # norm0, 2 per dense layer (58), 3 transitions, norm5
    loaded = variables["batch_stats"]["features"]["norm5"]["mean"]
    assert not np.allclose(flat["features/norm5/mean"], loaded)  # the stats really moved
