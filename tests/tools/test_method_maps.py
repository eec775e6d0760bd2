"""explain's method-specific maps and per-stage Grad-CAM on every method's CPU-sized network
(freshly initialised: these check what is extracted, not what was learnt)."""

from __future__ import annotations

import importlib

import jax
import jax.numpy as jnp
import numpy as np

from fgvc_jax import explain, layers
from fgvc_jax.recipe import Recipe
from fgvc_jax.recipe import train_state as state
from fgvc_jax.run import trained
from fgvc_jax.tools import gradcam

SIZE = 64


def _model(name: str, **fields) -> trained.Trained:
    config = importlib.import_module(f"configs.{name}").get_config("synthetic")
    for k, v in fields.items():
        config.method[k] = v
    method = Recipe(config, 4).method
    variables = state.init_variables(method, (SIZE, SIZE, 3), 0, jnp.float32)
    variables = {k: v for k, v in variables.items() if k in ("params", "batch_stats")}
    return trained.Trained(
        config=config,
        method=method,
        variables=variables,
        class_names=[f"c{i}" for i in range(4)],
        step=0,
        workdir="",
    )


def _images(n=2):
    return np.random.default_rng(0).integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)


def _grad_cam(model, x, targets=None):
    """`gradcam.grad_cam` jitted, as explain runs it (op by op it takes 5x as long)."""
    fn = jax.jit(lambda v, x, t: gradcam.grad_cam(model.method, v, x, t))
    return fn(model.variables, x, targets)


def _check_maps(result, titles):
    assert set(titles) <= set(result["maps"]), sorted(result["maps"])
    for t, m in result["maps"].items():
        assert m.shape == (2, SIZE, SIZE) and np.all(np.isfinite(m)), t
        assert m.min() >= 0 and m.max() <= 1 + 1e-6, t


def test_gradcam_is_the_gradient_weighted_activation():
    """Grad-CAM of the last stage of a baseline (GAP → Dense): the gradient of the summed
    target logit w.r.t. A is W[:, t] / (H·W) at every position, so CAM = ReLU(A · W[:, t]) /
    (H·W), computed here independently of the interceptor."""
    model = _model("baseline_resnet")
    x = model.normalize(_images())
    targets = jnp.array([1, 3])
    cams, _, _, _ = _grad_cam(model, x, targets)
    v = model.variables
    a = model.method.network.apply(v, x, method=_last_stage)
    w = v["params"]["head"]["kernel"]  # (C, K)
    hw = a.shape[1] * a.shape[2]
    expected = jax.nn.relu(jnp.einsum("bhwc,bc->bhw", a, w[:, targets].T)) / hw
    np.testing.assert_allclose(cams["conv5_x"], expected, rtol=1e-4, atol=1e-6)


def test_ma_ea_maps():
    result = explain.explain_arrays(_model("ma_ea"), _images())
    _check_maps(
        result,
        [
            "Grad-CAM conv5_x",
            "MA conv4",
            "EA erased conv4",
            "MA on erased conv4 (round 1)",
            "MA conv5",
            "EA erased conv5",
        ],
    )


def _last_stage(module, x):
    h = module.backbone.stem(x, False)
    for i in range(1, 5):
        h = module.backbone.stage(i, h, False)
    return h


def test_ma_ea_hard_erasure_is_the_thresholded_map():
    """The network's 'EA erased conv5' map against F (conv5_x) and M (its first MA, applied
    here on its own)."""
    model = _model("ma_ea", erase="hard")
    x = model.normalize(_images())
    _, _, _, maps = _grad_cam(model, x)
    f = model.method.network.apply(model.variables, x, method=_last_stage)
    _, m = layers.HybridAttention(residual=True).apply(
        {"params": model.variables["params"]["maea_conv5"]["ma"]}, f
    )
    s = jnp.mean(m, -1)
    removed = s >= 0.8 * jnp.max(s, axis=(1, 2), keepdims=True)
    nonzero = jnp.linalg.norm(f, axis=-1) > 0
    np.testing.assert_allclose(
        np.asarray(maps["EA erased conv5"])[np.asarray(nonzero)],
        np.asarray(removed, np.float32)[np.asarray(nonzero)],
        atol=1e-5,
    )


def test_cra_smra_maps_are_spatial_distributions():
    model = _model("cra_smra")
    result = explain.explain_arrays(model, _images())
    _check_maps(
        result,
        ["Grad-CAM conv3_x"]
        + [f"CRAM X_e conv{s}_x" for s in (3, 4, 5)]
        + [f"SMRAM P conv{s}_x" for s in (3, 4, 5)],
    )
    x = model.normalize(_images())
    _, _, _, raw = _grad_cam(model, x)
    for s in (3, 4, 5):
        np.testing.assert_allclose(
            np.asarray(raw[f"SMRAM P conv{s}_x"]).sum((1, 2)), 1.0, rtol=1e-5
        )


def test_swinfc_attention_and_fsm_patches():
    model = _model("swinfc")
    x = model.normalize(_images())
    _, _, _, raw = _grad_cam(model, x)
    bb = model.config.method.backbone_overrides
    blocks_x_heads = bb.depths[-1] * bb.num_heads[-1]
    counts = np.asarray(raw["FSM patches"])
    assert counts.sum((1, 2)).tolist() == [blocks_x_heads] * 2
    np.testing.assert_allclose(np.asarray(raw["stage-4 attention"]).sum((1, 2)), 1.0, rtol=1e-5)
    result = explain.explain_arrays(model, _images())
    _check_maps(
        result, [f"Grad-CAM stage{i}" for i in (1, 2, 3, 4)] + ["stage-4 attention", "FSM patches"]
    )


def test_attention_cnn_taps_its_convolutions():
    result = explain.explain_arrays(_model("attention_cnn"), _images())
    _check_maps(
        result, ["Grad-CAM conv1", "Grad-CAM conv2", "Grad-CAM conv3", "Grad-CAM attention"]
    )
