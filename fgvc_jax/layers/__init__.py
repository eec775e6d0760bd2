"""The blocks the methods are built from (docs/methods.md §1–4); one concept per file."""

from fgvc_jax.layers.attention import (
    SE,
    CBAMChannel,
    CBAMSpatial,
    CoordinateAttention,
    NonLocal,
    ScaledSelfAttention,
)
from fgvc_jax.layers.cram import CRAM, ConvBNReLU, suppression_indicator, suppression_mask
from fgvc_jax.layers.eaca import EACA, CrossSpaceAttention, ExternalAttention
from fgvc_jax.layers.erasure import MAEA, erase_mask
from fgvc_jax.layers.fusion import FFM, l2_normalize
from fgvc_jax.layers.hybrid import HybridAttention
from fgvc_jax.layers.selection import select_tokens
from fgvc_jax.layers.smram import SMRAM

__all__ = [
    "SE",
    "CBAMChannel",
    "CBAMSpatial",
    "CoordinateAttention",
    "NonLocal",
    "ScaledSelfAttention",
    "CRAM",
    "ConvBNReLU",
    "suppression_indicator",
    "suppression_mask",
    "EACA",
    "CrossSpaceAttention",
    "ExternalAttention",
    "MAEA",
    "erase_mask",
    "FFM",
    "l2_normalize",
    "HybridAttention",
    "select_tokens",
    "SMRAM",
]
