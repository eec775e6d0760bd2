"""backbones.conv: where the kernel reaches past the input, the taps as matmuls give lax's
convolution (values and gradients, float64); elsewhere it is lax's convolution itself."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from fgvc_jax.backbones import conv

DN = ("NHWC", "HWIO", "NHWC")

# (input N, H, W, C), kernel (kh, kw), stride, padding, dilation
PAST_INPUT = [
    ((3, 2, 2, 5), (3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1)),  # ResNet's last stage at 64 px
    ((2, 4, 4, 3), (3, 3), (1, 1), ((2, 2), (2, 2)), (2, 2)),  # dilated conv5 at 64 px
    ((2, 3, 2, 4), (7, 7), (1, 1), ((3, 3), (3, 3)), (1, 1)),  # CBAM's 7x7 on a small map
    ((2, 2, 3, 4), (3, 3), (2, 2), ((1, 1), (1, 1)), (1, 1)),  # strided
    ((2, 2, 2, 3), (3, 3), (1, 1), "SAME", (1, 1)),
]


def _pair(shape, kernel, seed=0):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.standard_normal(shape), jnp.float64)
    w = jnp.asarray(rng.standard_normal((*kernel, shape[-1], 6)), jnp.float64)
    return x, w


@pytest.mark.parametrize("shape,kernel,stride,padding,dilation", PAST_INPUT)
def test_taps_equal_lax_convolution(shape, kernel, stride, padding, dilation):
    with jax.enable_x64(True):
        x, w = _pair(shape, kernel)

        def ours(x, w):
            return conv.conv_general_dilated(
                x, w, stride, padding, rhs_dilation=dilation, dimension_numbers=DN
            )

        def theirs(x, w):
            return lax.conv_general_dilated(
                x, w, stride, padding, rhs_dilation=dilation, dimension_numbers=DN
            )

        assert conv.kernel_reaches_past_input(x.shape, w.shape, dilation)
        assert "conv_general_dilated" not in str(jax.make_jaxpr(ours)(x, w))
        np.testing.assert_allclose(ours(x, w), theirs(x, w), rtol=1e-12, atol=1e-12)
        loss = [
            jax.grad(lambda x, w, f=f: jnp.sum(jnp.sin(f(x, w))), (0, 1)) for f in (ours, theirs)
        ]
        for a, b in zip(loss[0](x, w), loss[1](x, w)):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_within_the_input_it_is_lax_convolution():
    x, w = (jnp.ones(s, jnp.float32) for s in ((2, 5, 5, 3), (3, 3, 3, 6)))
    assert not conv.kernel_reaches_past_input(x.shape, w.shape)
    jaxpr = str(
        jax.make_jaxpr(
            lambda x, w: conv.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=DN)
        )(x, w)
    )
    assert "conv_general_dilated" in jaxpr


def test_flax_conv_with_it_keeps_its_parameters_and_numbers():
    import flax.linen as nn

    with jax.enable_x64(True):
        x, _ = _pair((2, 2, 2, 3), (3, 3))
        kw = dict(features=4, kernel_size=(3, 3), padding=[(1, 1), (1, 1)], param_dtype=jnp.float64)
        plain, taps = nn.Conv(**kw), nn.Conv(**kw, conv_general_dilated=conv.conv_general_dilated)
        v = plain.init(jax.random.key(0), x)
        assert jax.tree.structure(taps.init(jax.random.key(0), x)) == jax.tree.structure(v)
        np.testing.assert_allclose(taps.apply(v, x), plain.apply(v, x), rtol=1e-12, atol=1e-12)
