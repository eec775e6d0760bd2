"""Behaviour tests: each fails when the idea of the block is broken."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fgvc_jax import layers
from fgvc_jax.methods import losses
from tests.layers.helpers import randomize


def _x(shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape).astype(np.float32))


def test_cram_suppresses_exactly_the_selected_channels_and_only_in_training():
    x = _x((3, 6, 6, 64)) + 1.0
    block = layers.CRAM(mid=16, out=24, omega=0.5, delta=0.9)
    v = randomize(block.init(jax.random.PRNGKey(0), x), scale=1.0)
    imp = np.asarray(
        layers.CBAMChannel(return_map=True).apply({"params": v["params"]["channel"]}, x)
    )[:, 0, 0, :]  # (B, C)
    p = np.exp(imp - imp.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    selected = p >= 0.9 * p.max(-1, keepdims=True)  # (B, C)
    assert selected.any(-1).all() and not selected.all(-1).any()  # the rule is not trivial here

    (_, s), _ = block.apply(v, x, train=True, mutable=["batch_stats"])
    s, xn = np.asarray(s), np.asarray(x)
    changed = np.any(s != xn, axis=(1, 2))  # (B, C)
    np.testing.assert_array_equal(changed, selected)
    np.testing.assert_allclose(s, np.where(selected[:, None, None, :], 0.5 * xn, xn), rtol=1e-6)

    _, s_eval = block.apply(v, x, train=False)
    np.testing.assert_array_equal(np.asarray(s_eval), xn)
    _, s_eval2 = layers.CRAM(mid=16, out=24, suppress_at_eval=True).apply(v, x, train=False)
    assert np.any(np.asarray(s_eval2) != xn)


def test_cram_indicator_has_no_gradient():
    imp = _x((2, 1, 1, 16))
    g = jax.grad(lambda i: jnp.sum(layers.suppression_mask(i)))(imp)
    np.testing.assert_array_equal(np.asarray(g), 0.0)


@pytest.mark.parametrize("residual", [True, False])
def test_hybrid_attention_combines_channel_and_spatial_maps(residual):
    f = _x((2, 5, 5, 32))
    block = layers.HybridAttention(residual=residual)
    params = randomize(block.init(jax.random.PRNGKey(0), f)["params"])
    out, m = block.apply({"params": params}, f)
    m_c = layers.SE(return_map=True).apply({"params": params["channel"]}, f)
    m_s = layers.CBAMSpatial(return_map=True).apply({"params": params["spatial"]}, f)
    np.testing.assert_allclose(m, m_c * m_s, rtol=1e-6)
    np.testing.assert_allclose(out, f + f * m if residual else f * m, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("stop", [True, False])
def test_erasure_stop_gradient_blocks_the_mask_path(stop):
    """F'' depends on the first MA only through the erase mask; with stop_gradient its
    gradient w.r.t. the first MA's parameters is exactly 0, without it is not."""
    f = _x((2, 5, 5, 32))
    block = layers.MAEA(stop_gradient=stop)
    params = randomize(block.init(jax.random.PRNGKey(0), f)["params"])

    def second(p):
        return jnp.sum(block.apply({"params": p}, f)[1] ** 2)

    g = jax.grad(second)(params)
    first_ma = np.concatenate([np.ravel(l) for l in jax.tree_util.tree_leaves(g["ma"])])
    assert np.all(first_ma == 0) == stop
    assert np.any(
        np.concatenate([np.ravel(l) for l in jax.tree_util.tree_leaves(g["ma_erased1"])]) != 0
    )


def test_erasure_uses_the_original_features():
    f = _x((2, 5, 5, 32))
    block = layers.MAEA(mode="soft")
    params = randomize(block.init(jax.random.PRNGKey(0), f)["params"])
    first, second = block.apply({"params": params}, f)
    _, m = layers.HybridAttention().apply({"params": params["ma"]}, f)
    want, _ = layers.HybridAttention().apply({"params": params["ma_erased1"]}, f * (1 - m))
    np.testing.assert_allclose(second, want, rtol=1e-6)
    assert (
        len(layers.MAEA(rounds=2).apply(layers.MAEA(rounds=2).init(jax.random.PRNGKey(0), f), f))
        == 3
    )


def test_hard_erase_mask():
    m = jnp.zeros((1, 2, 2, 3)).at[0, 0, 0].set(1.0).at[0, 1, 1].set(0.85).at[0, 0, 1].set(0.5)
    mask = np.asarray(layers.erase_mask(m, "hard", theta=0.8))[0, :, :, 0]
    np.testing.assert_array_equal(mask, [[0, 1], [1, 0]])
    with pytest.raises(ValueError, match="soft"):
        layers.erase_mask(m, "medium")


def test_diversity_loss_extremes():
    n = 16
    distinct = jax.nn.one_hot(jnp.array([[2, 7, 11]]), n)  # (1, 3, HW)
    same = jax.nn.one_hot(jnp.array([[5, 5, 5]]), n)
    assert float(losses.diversity_loss(distinct)) == pytest.approx(0.0, abs=1e-7)
    assert float(losses.diversity_loss(same)) == pytest.approx(2 / 3, abs=1e-7)
    uniform = jnp.full((2, 3, n), 1 / n)
    assert float(losses.diversity_loss(uniform)) == pytest.approx(1 - 1 / 3, abs=1e-6)


def test_fsm_picks_the_argmax_columns():
    b, heads, n, c = 2, 3, 5, 4
    rng = np.random.default_rng(0)
    attn = [rng.random((b, heads, n, n)).astype(np.float32) for _ in range(2)]
    tokens = rng.normal(size=(b, n, c)).astype(np.float32)
    z, idx = layers.select_tokens([jnp.asarray(a) for a in attn], jnp.asarray(tokens))
    want_idx = np.concatenate([a.mean(axis=2).argmax(-1) for a in attn], axis=-1)
    np.testing.assert_array_equal(idx, want_idx)
    want_z = np.stack([tokens[i, want_idx[i]].mean(0) for i in range(b)])
    np.testing.assert_allclose(z, want_z, rtol=1e-6)
    # Columns, not rows: a single dominant key column is picked by every head.
    a = np.full((1, 2, n, n), 0.1, np.float32)
    a[:, :, :, 3] = 0.9
    a[:, :, 1, :] = 1.0  # a dominant *row* must not matter
    _, idx = layers.select_tokens([jnp.asarray(a)], jnp.asarray(tokens[:1]))
    np.testing.assert_array_equal(idx, [[3, 3]])


def test_ffm_adds_the_least_similar_content():
    """With one position per branch pair the softmax is 1: x̃_i = x_i + Σ_j x_j; with two
    positions in j, the one less similar to x_i gets the larger weight."""
    xi = jnp.array([[[[1.0, 0.0]]]])
    xj = jnp.array([[[[1.0, 0.0], [0.0, 1.0]]]])  # j: 1x2 map, same then orthogonal
    out_i, _ = layers.FFM().apply({}, [xi, xj])
    w = jax.nn.softmax(jnp.array([-1.0, 0.0]))
    np.testing.assert_allclose(
        out_i[0, 0, 0], xi[0, 0, 0] + w[0] * xj[0, 0, 0] + w[1] * xj[0, 0, 1], rtol=1e-6
    )
    assert w[1] > w[0]


def test_coordinate_attention_shapes_and_gating():
    x = _x((2, 6, 8, 32))
    block = layers.CoordinateAttention()
    v = block.init(jax.random.PRNGKey(0), x)
    out = block.apply(v, x)
    assert out.shape == x.shape
    ratio = np.asarray(out / x)
    assert np.all((ratio > 0) & (ratio < 1))  # a product of two sigmoid gates
