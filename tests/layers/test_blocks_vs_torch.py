"""Each block given in PyTorch or as an equation by a source, against its PyTorch
twin (fgvc_jax/reference/blocks.py) with shared weights: max abs diff ≤ 1e-5 relative."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fgvc_jax import layers
from fgvc_jax.methods import losses
from fgvc_jax.reference import blocks as ref
from fgvc_jax.reference import functional
from fgvc_jax.reference.torch_import import torch
from tests.layers.helpers import assert_close, load, nchw, randomize, to_nhwc


def _x(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _init(module, *args, **kw):
    return module.init(jax.random.PRNGKey(0), *args, **kw)


@pytest.mark.parametrize("name", ["SE", "CBAMChannel", "CBAMSpatial"])
def test_gates(name):
    x = _x((2, 9, 7, 32))
    block = getattr(layers, name)()
    params = randomize(_init(block, x)["params"])
    got = block.apply({"params": params}, x)
    t = getattr(ref, name)(32) if name != "CBAMSpatial" else ref.CBAMSpatial()
    load(t, params)
    assert_close(got, to_nhwc(t(nchw(x))))


@pytest.mark.parametrize("scaled", [False, True])
def test_self_attention(scaled):
    x = _x((2, 6, 5, 32))
    block = layers.ScaledSelfAttention() if scaled else layers.NonLocal()
    params = randomize(_init(block, x)["params"])
    got = block.apply({"params": params}, x)
    t = load(ref.SelfAttention(32, scaled=scaled), params)
    assert_close(got, to_nhwc(t(nchw(x))))


def test_non_local_starts_as_identity():
    x = _x((1, 4, 4, 16))
    block = layers.NonLocal()
    np.testing.assert_array_equal(block.apply(_init(block, x), x), x)


def test_external_attention():
    x = _x((2, 6, 7, 24))
    block = layers.ExternalAttention(memory=16)
    params = randomize(_init(block, x)["params"])
    t = load(ref.ExternalAttention(24, 16), params)
    assert_close(block.apply({"params": params}, x), to_nhwc(t(nchw(x))))


def test_cross_space_attention():
    x = _x((2, 6, 7, 24))
    block = layers.CrossSpaceAttention()
    params = randomize(_init(block, x)["params"])
    t = load(ref.CrossSpaceAttention(24), params)
    assert_close(block.apply({"params": params}, x), to_nhwc(t(nchw(x))))


def test_eaca_is_sum_of_ea_and_ca():
    x = _x((2, 6, 6, 24))
    block = layers.EACA(memory=16)
    params = randomize(_init(block, x)["params"])
    ea = layers.ExternalAttention(16).apply({"params": params["ea"]}, x)
    ca = layers.CrossSpaceAttention().apply({"params": params["ca"]}, x)
    np.testing.assert_allclose(block.apply({"params": params}, x), ea + ca, rtol=1e-6)


@pytest.mark.parametrize("train", [False, True])
def test_cram(train):
    x = _x((2, 8, 8, 64)) + 0.5
    block = layers.CRAM(mid=32, out=48)
    v = randomize(_init(block, x))
    (e, s), _ = block.apply(v, x, train=train, mutable=["batch_stats"])
    t = load(ref.CRAM(64, 32, 48), v["params"], v["batch_stats"])
    t.train(train)
    te, ts, _ = t(nchw(x))
    assert_close(e, to_nhwc(te))
    assert_close(s, to_nhwc(ts))


@pytest.mark.parametrize("down", ["avgpool", "conv"])
def test_smram_diversity_loss(down):
    xs = [_x((2, 16, 16, 8), 1), _x((2, 8, 8, 8), 2), _x((2, 4, 4, 8), 3)]
    block = layers.SMRAM(down=down)
    v = randomize(_init(block, xs))
    probs = block.apply(v, xs)
    t = load(ref.SMRAM([16, 8, 4], 8, down=down), v["params"], v["batch_stats"])
    t.eval()
    txs = [nchw(x) for x in xs]
    assert_close(probs, t(txs).detach().numpy())
    assert_close(losses.diversity_loss(probs), functional.diversity_loss(t(txs)).detach().numpy())


@pytest.mark.parametrize("similarity,scale", [("dot", 1.0), ("cosine", 1.0), ("cosine", 0.001)])
def test_ffm(similarity, scale):
    """`similarity='dot'`, scale 1 is the paper's Eq. 7-12; 'cosine' x 0.001 is FBSD's code."""
    xs = [0.3 * _x((2, 8, 8, 16), 1), 0.3 * _x((2, 4, 4, 16), 2), 0.3 * _x((2, 2, 2, 16), 3)]
    got = layers.FFM(similarity, scale).apply({}, xs)
    want = ref.ffm([nchw(x) for x in xs], similarity=similarity, scale=scale)
    for g, w in zip(got, want):
        assert_close(g, to_nhwc(w))


def test_contrastive_loss():
    z = _x((8, 32))
    labels = np.array([0, 1, 0, 2, 1, 3, 0, 2])
    got = losses.contrastive_loss(jnp.asarray(z), jnp.asarray(labels))
    want = functional.contrastive_loss(torch.from_numpy(z), torch.from_numpy(labels)).numpy()
    assert_close(got, want)
    # Identical features with a shared label cost nothing; with distinct labels they pay 1 − α.
    same = jnp.ones((4, 8))
    assert float(losses.contrastive_loss(same, jnp.zeros(4, jnp.int32))) == pytest.approx(
        0, abs=1e-6
    )
    assert float(losses.contrastive_loss(same, jnp.arange(4))) == pytest.approx(
        0.6 * 12 / 16, abs=1e-6
    )


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy(smoothing):
    logits = _x((6, 5))
    labels = np.array([0, 4, 2, 1, 1, 3])
    got = losses.cross_entropy(jnp.asarray(logits), jnp.asarray(labels), smoothing)
    want = torch.nn.functional.cross_entropy(
        torch.from_numpy(logits), torch.from_numpy(labels), label_smoothing=smoothing
    ).numpy()
    assert_close(got, want)
