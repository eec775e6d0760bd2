"""CRAM: the channel re-attention of CRA-SMRA (Neural Processing Letters 57:43, 2025) that
enhances a stage's features for its head and suppresses its most important channels for the
next stage. The paper's text survives, its equations do not: where it is silent, the reading
of FBSD's public code (Song & Yang, IJCNN 2021) is the choice."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from fgvc_jax.backbones import conv
from fgvc_jax.backbones.batch_norm import BatchNorm
from fgvc_jax.layers.attention import CBAMChannel, CBAMSpatial
from fgvc_jax.runtime.precision import upcast

Dtype = Any


class ConvBNReLU(nn.Module):
    """Conv (no bias, explicit symmetric padding k//2) → BN (torch semantics, eps 1e-5,
    `momentum` in flax's convention: 0.9 = torch 0.1) → ReLU: the PMG/FBSD BasicConv."""

    features: int
    kernel_size: int = 1
    strides: int = 1
    momentum: float = 0.9
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        k, p = self.kernel_size, self.kernel_size // 2
        x = nn.Conv(
            self.features,
            (k, k),
            strides=self.strides,
            padding=[(p, p), (p, p)],
            use_bias=False,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="conv",
            conv_general_dilated=conv.conv_general_dilated,  # small maps: taps as matmuls
        )(x)
        x = BatchNorm(self.momentum, dtype=self.dtype, param_dtype=self.param_dtype, name="bn")(
            x, train
        )
        return nn.relu(x)


SUPPRESS_FORMS = ("scale", "subtract")
CHANNEL_BLOCKS = ("cram", "cbam")


def suppression_indicator(importance, delta: float = 0.9):
    """𝟙[I*_c ≥ δ·max_c I*] with I* = softmax over channels of I (the paper's δ, "which
    channels"), under stop_gradient. importance: (B, 1, 1, C)."""
    p = jax.nn.softmax(upcast(importance), axis=-1)
    top = jnp.max(p, axis=-1, keepdims=True)
    return jax.lax.stop_gradient((p >= delta * top).astype(importance.dtype))


def suppression_mask(importance, omega: float = 0.5, delta: float = 0.9, form: str = "scale"):
    """S (B, 1, 1, C) from the indicator (ω = the paper's "degree of suppression"):
    'scale' (choice, FBSD's `clamp((p < max p), min=ω)` reading): S_c = ω where selected, else
    1; 'subtract': S_c = 1 − ω·𝟙[selected]. The two agree at ω = 0.5."""
    ind = suppression_indicator(importance, delta)
    if form == "scale":
        return jnp.where(ind > 0, jnp.asarray(omega, importance.dtype), 1.0).astype(
            importance.dtype
        )
    if form == "subtract":
        return 1.0 - omega * ind
    raise ValueError(f"method.suppress_form={form!r}; valid: {', '.join(SUPPRESS_FORMS)}")


class CRAM(nn.Module):
    """CRAM on a stage output X (B, H, W, C):
    I = σ(MLP(GAP X) + MLP(GMP X)) (the paper's text; shared MLP C→C/r→C, ReLU, r = 16, no
    bias: choice); X_e = ConvLayer(X ⊗ I), ConvLayer = [1x1 conv C→`mid`, BN, ReLU, 3x3 conv
    `mid`→`out`, BN, ReLU] (choice, FBSD's block: C_a = 1024; its BNs' momentum
    `convlayer_bn_momentum` in PyTorch's convention, 0.01 as FBSD's `BasicConv`'s
    `BatchNorm2d(momentum=0.01)`, 0.99 in flax's); X_s = X ⊗ S with
    S = `suppression_mask(I)`, in training and, with `suppress_at_eval`, at evaluation.
    The mean number of suppressed channels is sown into the 'metrics' collection.

    `channel_block='cbam'` (the paper's Table 3 ablation, choice of reading): standard CBAM
    (channel then spatial attention) in place of the re-attention, X_e = ConvLayer(CBAM(X))
    and no suppression (X_s = X).

    Returns (X_e, X_s)."""

    reduction: int = 16
    mid: int = 512
    out: int = 1024
    omega: float = 0.5
    delta: float = 0.9
    suppress_at_eval: bool = False
    suppress_form: str = "scale"
    channel_block: str = "cram"
    convlayer_bn_momentum: float = 0.01
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        if self.channel_block not in CHANNEL_BLOCKS:
            raise ValueError(
                f"method.channel_block={self.channel_block!r}; valid: {', '.join(CHANNEL_BLOCKS)}"
            )
        importance = CBAMChannel(self.reduction, return_map=True, name="channel", **kw)(x)
        attended = x * importance
        if self.channel_block == "cbam":
            attended = attended * CBAMSpatial(return_map=True, name="spatial", **kw)(attended)
        bn = dict(momentum=1.0 - self.convlayer_bn_momentum, **kw)  # torch → flax convention
        e = ConvBNReLU(self.mid, 1, name="conv_layer1", **bn)(attended, train)
        e = ConvBNReLU(self.out, 3, name="conv_layer2", **bn)(e, train)
        if self.channel_block == "cram" and (train or self.suppress_at_eval):
            s = x * suppression_mask(importance, self.omega, self.delta, self.suppress_form).astype(
                x.dtype
            )
            count = jnp.sum(suppression_indicator(importance, self.delta), axis=-1)
            self.sow(
                "metrics",
                "suppressed_channels",
                jnp.mean(count.astype(jnp.float32)),
                init_fn=lambda: 0.0,
                reduce_fn=lambda _, new: new,
            )
        else:
            s = x
        return e, s
