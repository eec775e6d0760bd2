"""The settings of the papers' public code as switches (FBSD, chaomaer/FBSD, the code CRA-SMRA
builds on): the ConvLayer BatchNorm momentum, how multi-head predictions are combined, the
input normalisation."""

import flax.traverse_util
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import cra_smra
from fgvc_jax.data import preprocess
from fgvc_jax.methods import registry
from fgvc_jax.methods.base import Outputs
from fgvc_jax.recipe import Recipe
from fgvc_jax.reference import parity, weights
from fgvc_jax.reference.torch_import import torch

STEPS, LR = 3, 0.05


def _sgd(params, grads):
    return jax.tree.map(lambda p, g: p - LR * g, params, grads)


def test_cra_smra_convlayer_bn_momentum_is_fbsds_and_running_stats_match_pytorch():
    """Three SGD steps of CRA-SMRA (CPU size, float64 both sides, different batches) and of
    its twin with `torch.optim.SGD`: every BatchNorm running statistic agrees ≤ 1e-10
    relative; the ConvLayer BNs are PyTorch BatchNorm2d(momentum=0.01), FBSD's BasicConv."""
    cfg = registry.default_config("cra_smra", "cpu")
    assert cfg.convlayer_bn_momentum == 0.01
    with jax.enable_x64(True):
        pair = parity.Pair(cfg, 10, train=True, dtype=jnp.float64, batch=4)
        variables = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), pair.variables(0))
        twin = pair.twin.double()
        weights.jax_to_torch(variables, twin)
        twin.train()
        conv_bns = {k: m for k, m in twin.named_modules() if "conv_layer" in k and k.endswith("bn")}
        assert len(conv_bns) == 6 and all(m.momentum == 0.01 for m in conv_bns.values())
        opt = torch.optim.SGD(twin.parameters(), lr=LR)
        params, stats = variables["params"], variables["batch_stats"]
        for step in range(STEPS):
            images, labels = pair.batch_of(step + 1)
            x = jnp.asarray(images, jnp.float64)
            (_, (_, _, state)), grads = pair._step(
                params, stats, x, jnp.asarray(labels), jax.random.key(0)
            )
            params, stats = _sgd(params, grads), state["batch_stats"]
            opt.zero_grad()
            logits, aux = twin(torch.from_numpy(images.transpose(0, 3, 1, 2).astype(np.float64)))
            twin.loss(logits, aux, torch.from_numpy(labels).long())[0].backward()
            opt.step()
        ours = flax.traverse_util.flatten_dict(jax.device_get(stats))
        sd = twin.state_dict()
        keymap = weights.pairs(twin, flax.traverse_util.flatten_dict(variables))
        checked = 0
        for key, path in keymap.items():
            if path[0] != "batch_stats":
                continue
            ref = sd[key].numpy()
            err = np.max(np.abs(np.asarray(ours[path[1:]]) - ref)) / np.max(np.abs(ref))
            assert err <= 1e-10, f"{key}: {err:.2e}"
            checked += 1
        assert checked >= 12  # the 6 ConvLayer BNs' mean and var at least


# Each multi-head method's heads, and what its default prediction combines.
HEADS = {
    "cra_smra": (["stage3", "stage4", "stage5", "concat"], "softmax_mean"),
    "swinfc": (["trunk", "stage2", "stage3", "stage4"], "softmax_mean"),
    "ma_ea": (["main", "conv4_ma", "conv4_erased1", "conv5_ma", "conv5_raw"], "main"),
}


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _logits(heads, seed=0):
    rng = np.random.default_rng(seed)
    return {k: rng.normal(0.0, 4.0, (256, 10)).astype(np.float32) for k in heads}


@pytest.mark.parametrize("name", sorted(HEADS))
def test_combine_default_is_unchanged_and_logit_sum_is_fbsds_rule(name):
    heads, default = HEADS[name]
    cfg = registry.default_config(name, "cpu")
    assert cfg.combine == default
    logits = _logits(heads)
    outputs = Outputs(logits={k: jnp.asarray(v) for k, v in logits.items()})
    got = np.asarray(registry.create(cfg, 10).predict(outputs))
    expected = (
        _softmax(logits["main"].astype(np.float64))
        if default == "main"
        else np.mean([_softmax(logits[k].astype(np.float64)) for k in heads], axis=0)
    )
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)

    cfg.combine = "logit_sum"
    total = sum(logits[k].astype(np.float64) for k in heads)
    summed = np.asarray(registry.create(cfg, 10).predict(outputs))
    np.testing.assert_allclose(summed, _softmax(total), rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(np.argmax(summed, -1), np.argmax(total, -1))
    # the two rules rank differently somewhere, so the switch is not a no-op
    assert np.any(np.argmax(summed, -1) != np.argmax(got, -1))

    cfg.combine = "vote"
    with pytest.raises(ValueError, match="method.combine='vote'"):
        registry.create(cfg, 10).predict(outputs)


@pytest.mark.parametrize("name", sorted(HEADS))
def test_combine_logit_sum_matches_the_twin(name):
    cfg = registry.default_config(name, "cpu")
    cfg.combine = "logit_sum"
    rows, _ = parity.run(cfg, 10, train=False, batch=2, twin_dtype="float64")
    (r,) = [r for r in rows if r.name == "combined prediction"]
    assert r.rel <= 1e-5, parity.table(rows)


def test_normalization_half_maps_0_to_minus_1_and_255_to_1_and_imagenet_is_the_default():
    config = cra_smra.get_config("synthetic")
    images = np.asarray([0, 255], np.uint8).reshape(1, 1, 2, 1).repeat(3, -1)
    method = Recipe(config, 10).method
    assert config.data.normalization == "imagenet"
    got = np.asarray(preprocess.normalize(images, method.mean, method.std))
    np.testing.assert_allclose(
        got[0, 0, 0], -np.array([0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225], rtol=1e-6
    )

    config.data.normalization = "half"
    method = Recipe(config, 10).method
    got = np.asarray(preprocess.normalize(images, method.mean, method.std))
    np.testing.assert_array_equal(got[0, 0, 0], [-1.0, -1.0, -1.0])
    np.testing.assert_array_equal(got[0, 0, 1], [1.0, 1.0, 1.0])

    config.data.normalization = "0.5"
    with pytest.raises(ValueError, match="config.data.normalization='0.5'; valid: imagenet, half"):
        Recipe(config, 10)


def test_a_config_written_before_these_fields_builds_with_their_defaults():
    cfg = registry.default_config("cra_smra", "cpu")
    old = {k: v for k, v in cfg.to_dict().items() if k not in ("combine", "convlayer_bn_momentum")}
    method = registry.create(ml_collections.ConfigDict(old), 10)
    assert method.config.combine == "softmax_mean"
    assert method.config.convlayer_bn_momentum == 0.01
