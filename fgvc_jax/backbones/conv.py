"""`lax.conv_general_dilated` for channels-last convolutions, with the kernel's taps as matmuls
when the kernel reaches past the input.

XLA:CPU (jax 0.10.2) runs a convolution whose (dilated) kernel is larger than the unpadded
input, e.g. a 3x3 conv on the 2x2 maps of a ResNet's last stage at 64 px, through a slow
generic loop: forward and both gradients of batch 32 × 512 → 512 channels take 392 ms there,
7.8 ms in PyTorch, and the CPU-size ResNet-18 train step 1.34 s (BENCHMARKS.md, "Small maps on
CPU"). The sum over the k₁·k₂ taps of (shifted, strided slice of the padded input) @ (that
tap's C×D weights) is the same convolution as plain matmuls: 8.8 ms, and the train step
0.26 s. It applies only when the kernel reaches past the input (the CPU-size models' last
stages, CBAM's 7x7 on small maps), never at the paper sizes, so a GPU or TPU program at 448 px
is the convolution it always was.
"""

from __future__ import annotations

import itertools

import jax.numpy as jnp
from jax import lax


def _channels_last(dn: lax.ConvDimensionNumbers, n: int) -> bool:
    spatial = tuple(range(1, n - 1))
    return (
        dn.lhs_spec == (0, n - 1, *spatial)
        and dn.out_spec == dn.lhs_spec
        and dn.rhs_spec == (n - 1, n - 2, *range(n - 2))
    )


def _extents(kernel_shape, rhs_dilation) -> tuple[int, ...]:
    """The dilated kernel's reach per spatial dimension: (k − 1)·d + 1."""
    spatial = kernel_shape[:-2]
    dilation = rhs_dilation or (1,) * len(spatial)
    return tuple((k - 1) * d + 1 for k, d in zip(spatial, dilation))


def kernel_reaches_past_input(input_shape, kernel_shape, rhs_dilation=None) -> bool:
    """Whether a channels-last conv of `kernel_shape` (spatial..., C, D) over `input_shape`
    (N, spatial..., C) has a spatial dimension where the dilated kernel exceeds the input."""
    return any(e > x for e, x in zip(_extents(kernel_shape, rhs_dilation), input_shape[1:-1]))


def conv_general_dilated(
    lhs,
    rhs,
    window_strides,
    padding,
    lhs_dilation=None,
    rhs_dilation=None,
    dimension_numbers=None,
    feature_group_count: int = 1,
    batch_group_count: int = 1,
    precision=None,
    preferred_element_type=None,
):
    """Drop-in for `lax.conv_general_dilated` (and `nn.Conv(conv_general_dilated=...)`): the
    taps as matmuls where the kernel reaches past a channels-last input, else lax's own."""
    n = lhs.ndim
    dn = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
    plain = (
        feature_group_count != 1
        or batch_group_count != 1
        or any(d != 1 for d in (lhs_dilation or ()))
        or not _channels_last(dn, n)
        or not kernel_reaches_past_input(lhs.shape, rhs.shape, rhs_dilation)
    )
    if plain:
        return lax.conv_general_dilated(
            lhs,
            rhs,
            window_strides,
            padding,
            lhs_dilation,
            rhs_dilation,
            dimension_numbers,
            feature_group_count,
            batch_group_count,
            precision,
            preferred_element_type,
        )
    spatial = rhs.shape[:-2]
    dilation = tuple(rhs_dilation or (1,) * len(spatial))
    extents = _extents(rhs.shape, dilation)
    if isinstance(padding, str):
        padding = lax.padtype_to_pads(lhs.shape[1:-1], extents, window_strides, padding)
    x = jnp.pad(lhs, ((0, 0), *(tuple(p) for p in padding), (0, 0)))
    out = [(n_in - e) // s + 1 for n_in, e, s in zip(x.shape[1:-1], extents, window_strides)]
    y = None
    for tap in itertools.product(*(range(k) for k in spatial)):
        window = tuple(
            slice(t * d, t * d + (o - 1) * s + 1, s)
            for t, d, s, o in zip(tap, dilation, window_strides, out)
        )
        term = lax.dot_general(
            x[(slice(None), *window)],
            rhs[tap],
            (((n - 1,), (0,)), ((), ())),
            precision=precision,
            preferred_element_type=preferred_element_type,
        )
        y = term if y is None else y + term
    return y
