"""A Swin stage's blocks run as a scan compute what the unrolled loop computes, with the same
per-block parameters (timm layout), stochastic-depth rates and attention maps."""
import jax
import jax.numpy as jnp
import numpy as np

from fgvc_jax.backbones.swin import SwinBlock, SwinStage, swin

# Odd and even depths: stage 2 ends on a lone unshifted block, stage 3 is two scanned pairs.
KW = dict(img_size=64, window_size=4, embed_dim=32, depths=(2, 3, 4, 2), num_heads=(1, 2, 4, 8), num_classes=5)


def _relative(a, b) -> float:
    return float(jnp.abs(a - b).max() / jnp.abs(b).max())


def _models():
    return [swin("swin_tiny_patch4_window7_224", scan_blocks=scan, **KW) for scan in (True, False)]


def test_scanned_stages_keep_the_per_block_parameter_layout():
    x = jax.ShapeDtypeStruct((2, 64, 64, 3), jnp.float32)
    shapes = [jax.eval_shape(m.init, jax.random.key(0), x) for m in _models()]
    assert shapes[0] == shapes[1]
    assert sorted(shapes[0]["params"]["layers_1"]) == ["blocks_0", "blocks_1", "blocks_2", "downsample"]


def test_scanned_forward_attention_and_gradients_equal_the_unrolled_loop():
    scanned, unrolled = _models()
    x = jax.random.normal(jax.random.key(1), (2, 64, 64, 3))
    variables = jax.jit(unrolled.init)(jax.random.key(0), x)
    forward = lambda m: jax.jit(m.apply)(variables, x)
    assert _relative(forward(scanned), forward(unrolled)) <= 1e-6

    def stage4(module, x):
        h = module.embed(x)
        for i in (1, 2, 3):
            h = module.stage(i, h)
        return module.stage(4, h, return_attn=True)

    (ys, attn_s), (yu, attn_u) = (jax.jit(lambda v, x, m=m: m.apply(v, x, method=stage4))(variables, x)
                                  for m in (scanned, unrolled))
    assert _relative(ys, yu) <= 1e-6
    assert len(attn_s) == len(attn_u) == 2
    for a, b in zip(attn_s, attn_u):
        assert a.shape == b.shape == (2, 8, 4, 4)
        assert _relative(a, b) <= 1e-6

    grad = lambda m: jax.jit(jax.grad(lambda v: (m.apply(v, x, train=True) ** 2).sum()))(variables)
    gs, gu = grad(scanned), grad(unrolled)
    errs = jax.tree.map(_relative, gs, gu)
    assert max(jax.tree.leaves(errs)) <= 1e-5, errs


def test_scanned_stochastic_depth_uses_each_blocks_rate_and_key():
    """Block j drops its branches with rate dpr[j] from fold_in(stage key, j): the scan must
    hand each block its own rate, parameters and shift."""
    rates = (0.0, 0.3, 0.6, 0.9)
    stage = SwinStage(32, 4, 2, (4, 4), (8, 8), False, rates)
    x = jax.random.normal(jax.random.key(3), (16, 8, 8, 32))
    variables = jax.jit(stage.init, static_argnums=2)(jax.random.key(0), x, False)
    rngs = {"dropout": jax.random.key(7)}
    out = stage.apply(variables, x, True, rngs=rngs)

    key = stage.bind(variables, rngs=rngs).make_rng("dropout")
    expected = x
    for j, rate in enumerate(rates):
        block = SwinBlock(32, 2, (4, 4), (2, 2) if j % 2 else (0, 0), drop_path=rate)
        expected, _ = block.apply({"params": variables["params"][f"blocks_{j}"]}, expected, True,
                                  rngs={"dropout": jax.random.fold_in(key, j)})
    assert _relative(out, expected) <= 1e-6
    assert _relative(out, stage.apply(variables, x, False)) > 1e-2  # some branches were dropped
    np.testing.assert_array_equal(stage.apply(variables, x, True, rngs=rngs), out)
