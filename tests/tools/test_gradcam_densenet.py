"""Grad-CAM taps a DenseNet's stages (CRA-SMRA on DenseNet-121, the family of its paper's
DenseNet-161) through the backbone registry: one map per dense block, at that block's
resolution (freshly initialised: this checks what is extracted, not what was learnt)."""

from __future__ import annotations

import jax
import numpy as np

from fgvc_jax.methods import registry
from fgvc_jax.tools import gradcam

SIZE = 64


def test_cra_smra_on_densenet_has_a_gradcam_map_per_dense_block():
    config = registry.default_config("cra_smra", "cpu")
    config.backbone = "densenet121"
    method = registry.create(config, 4)
    x = np.random.default_rng(0).standard_normal((2, SIZE, SIZE, 3)).astype(np.float32)
    rngs = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
    variables = jax.jit(lambda x: method.network.init(rngs, x, train=False))(x)  # eager: 1.4x
    variables = {k: v for k, v in variables.items() if k in ("params", "batch_stats")}
    cams, scores, targets, _ = jax.jit(lambda v, x: gradcam.grad_cam(method, v, x))(variables, x)
    # stem /4, then each transition halves: 16, 8, 4, 2 at 64 px
    want = {f"denseblock{i}": (2, SIZE // 2 ** (i + 1), SIZE // 2 ** (i + 1)) for i in (1, 2, 3, 4)}
    assert {k: tuple(v.shape) for k, v in cams.items()} == want
    for name, cam in cams.items():
        cam = np.asarray(cam)
        assert np.all(np.isfinite(cam)), name
        assert cam.min() >= 0, name  # ReLU of the weighted activation
        for b in range(2):
            assert cam[b].max() > cam[b].min(), (name, b)  # a map, not a constant
    assert targets.shape == (2,) and scores["combined"].shape == (2, 4)
