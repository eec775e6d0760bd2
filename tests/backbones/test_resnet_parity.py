"""torchvision ResNet ⇔ fgvc_jax ResNet through the converter: every stage and the logits."""

import numpy as np
import pytest

from fgvc_jax.backbones.resnet import multiscale_pool
from fgvc_jax.convert import build, load_pretrained
from fgvc_jax.convert import torch_reference as ref
from fgvc_jax.reference.torch_import import torch
from tests.torch_checkpoints import flat_numpy, random_images, saved_reference

TOL = 1e-4  # max abs difference relative to the output's max magnitude (issue 2)


@pytest.mark.parametrize("arch,size", [("resnet18", 64), ("resnet50", 112)])
def test_eval_parity(tmp_path, arch, size):
    tmodel = saved_reference(arch, tmp_path / "w.pth")
    variables = load_pretrained(arch, str(tmp_path / "w.pth"), num_classes=None)
    x = random_images(2, size)
    errs = ref.max_relative_errors(
        ref.jax_stages(build(arch, 1000), variables, x), ref.torch_stages(tmodel, x)
    )
    assert set(errs) == set(ref.STAGES)
    assert max(errs.values()) <= TOL, errs


def test_dilated_conv5_parity(tmp_path):
    tmodel = saved_reference(
        "resnet50", tmp_path / "w.pth", replace_stride_with_dilation=[False, False, True]
    )
    variables = load_pretrained(
        "resnet50", str(tmp_path / "w.pth"), num_classes=None, dilate_conv5=True
    )
    x = random_images(1, 96)
    ours = ref.jax_stages(build("resnet50", 1000, dilate_conv5=True), variables, x)
    theirs = ref.torch_stages(tmodel, x)
    assert ours["stage4"].shape == theirs["stage4"].shape == (1, 6, 6, 2048)  # stride 16, not 32
    errs = ref.max_relative_errors(ours, theirs)
    assert max(errs.values()) <= TOL, errs


def test_multiscale_stem_pool_matches_torch_max_pools():
    x = random_images(2, 20)
    t = torch.from_numpy(x.transpose(0, 3, 1, 2))
    want = sum(torch.nn.functional.max_pool2d(t, k, 2, k // 2) for k in (3, 5, 7)) / 3
    np.testing.assert_allclose(
        multiscale_pool(x), want.permute(0, 2, 3, 1).numpy(), rtol=1e-6, atol=1e-6
    )


def test_train_mode_batch_norm_matches_torch(tmp_path):
    """Batch statistics in the forward pass and the updated (unbiased) running stats."""
    tmodel = saved_reference("resnet18", tmp_path / "w.pth").train()
    variables = load_pretrained("resnet18", str(tmp_path / "w.pth"), num_classes=None)
    x = random_images(4, 64)
    with torch.no_grad():
        theirs = tmodel(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    ours, updated = build("resnet18", 1000).apply(variables, x, train=True, mutable=["batch_stats"])
    assert np.max(np.abs(np.asarray(ours) - theirs)) / np.max(np.abs(theirs)) <= 1e-5
    flat = flat_numpy(updated["batch_stats"])
    sd = tmodel.state_dict()
    checked = 0
    for key, t in sd.items():
        if key.endswith(("running_mean", "running_var")):
            path = (
                key.replace("downsample.", "downsample_")
                .replace("running_mean", "mean")
                .replace("running_var", "var")
            )
            np.testing.assert_allclose(
                flat[path.replace(".", "/")], t.numpy(), rtol=1e-5, atol=1e-5, err_msg=key
            )
            checked += 1
    assert checked == 2 * 20  # resnet18 has 20 BatchNorm layers
    # and the stats really moved away from the loaded ones
    assert not np.allclose(flat["bn1/mean"], variables["batch_stats"]["bn1"]["mean"])
