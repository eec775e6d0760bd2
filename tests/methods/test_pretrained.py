"""Methods load their backbone's converted PyTorch weights (new layers stay random), and
`merge_backbone` is strict about names and shapes."""

import jax
import numpy as np
import pytest

from fgvc_jax.convert import load_pretrained
from fgvc_jax.convert.pretrained import merge_backbone
from fgvc_jax.methods import registry
from fgvc_jax.methods.baseline import Baseline
from fgvc_jax.reference.torch_import import torch
from tests.torch_checkpoints import random_images, saved_reference

K = 10


def _init(method, size):
    x = np.zeros((2, size, size, 3), np.float32)
    rngs = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
    return jax.jit(lambda x: method.network.init(rngs, x, train=True))(x)


def _head(fc):
    return {"kernel": fc.weight.detach().numpy().T, "bias": fc.bias.detach().numpy()}


@pytest.mark.parametrize(
    "name,head",
    [(n, "main") for n, m in sorted(registry.METHODS.items()) if issubclass(m, Baseline)],
)
def test_method_with_converted_backbone_matches_torch(tmp_path, name, head):
    """(SwinFC's trunk is the baseline's: tests/methods/test_methods.py.)"""
    cfg = registry.default_config(name, "cpu")
    if "backbone_overrides" in cfg:  # fewer blocks: compile time dominates
        cfg.backbone_overrides.depths = (1, 1, 1, 2)
    method = registry.create(cfg, K)
    kw = method.backbone_kwargs
    torch_kw = {
        k: v for k, v in kw.items() if k not in ("stem_pool", "dilate_conv5", "drop_path_rate")
    }
    ref = saved_reference(method.backbone_arch, tmp_path / "w.pth", num_classes=K, **torch_kw)
    converted = load_pretrained(method.backbone_arch, str(tmp_path / "w.pth"), 0, **kw)
    variables = _init(method, cfg.image_size)
    merged = merge_backbone(variables, converted)
    fresh = {k: v for k, v in variables["params"].items() if k != "backbone"}
    jax.tree.map(
        np.testing.assert_array_equal,
        {k: v for k, v in merged["params"].items() if k != "backbone"},
        fresh,
    )  # new layers untouched
    fc = ref.fc if hasattr(ref, "fc") else ref.head.fc
    merged["params"] = {**merged["params"], "head": _head(fc)}
    x = random_images(2, cfg.image_size)
    got = jax.jit(lambda v, x: method.network.apply(v, x, train=False))(merged, x).logits[head]
    with torch.no_grad():
        want = ref(torch.from_numpy(np.transpose(x, (0, 3, 1, 2)))).numpy()
    err = np.max(np.abs(np.asarray(got) - want))
    assert err <= 1e-4 * np.max(np.abs(want)), err


def test_merge_backbone_is_strict():
    variables = {
        "params": {
            "backbone": {"a": {"kernel": np.zeros((2, 3))}, "b": np.zeros(4)},
            "head": {"kernel": np.ones((3, 3))},
        },
        "batch_stats": {"backbone": {"bn": {"mean": np.zeros(4)}}},
    }
    good = {
        "params": {"a": {"kernel": np.full((2, 3), 2.0)}, "b": np.ones(4)},
        "batch_stats": {"bn": {"mean": np.ones(4)}},
    }
    out = merge_backbone(variables, good)
    np.testing.assert_array_equal(out["params"]["backbone"]["a"]["kernel"], 2.0)
    np.testing.assert_array_equal(out["batch_stats"]["backbone"]["bn"]["mean"], 1.0)
    np.testing.assert_array_equal(out["params"]["head"]["kernel"], 1.0)
    missing = {"params": {"a": {"kernel": np.zeros((2, 3))}}, "batch_stats": good["batch_stats"]}
    with pytest.raises(ValueError, match="params/backbone/b: missing"):
        merge_backbone(variables, missing)
    extra = {"params": {**good["params"], "c": np.zeros(1)}, "batch_stats": good["batch_stats"]}
    with pytest.raises(ValueError, match="params/backbone/c: not in the method"):
        merge_backbone(variables, extra)
    shape = {"params": {**good["params"], "b": np.zeros(5)}, "batch_stats": good["batch_stats"]}
    with pytest.raises(
        ValueError, match=r"params/backbone/b: converted shape \(5,\), method shape \(4,\)"
    ):
        merge_backbone(variables, shape)
    with pytest.raises(ValueError, match="batch_stats/backbone/bn/mean: missing"):
        merge_backbone(variables, {"params": good["params"]})
