"""CRA-SMRA (METHODS.md §2; Neural Processing Letters 57:43, 2025) on a ResNet.

CRAM after conv3_x, conv4_x, conv5_x: the enhanced map X_e feeds the stage's head, the
suppressed map X_s (training only) replaces X as the next stage's input. SMRAM (training only)
adds the diversity loss. Loss = β Σ_s CE_s + α CE_concat + γ L_div; prediction = mean of the
four softmaxes."""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from fgvc_jax import losses
from fgvc_jax.backbones.batch_norm import BatchNorm
from fgvc_jax.layers import CRAM, SMRAM
from fgvc_jax.methods.base import Outputs
from fgvc_jax.methods.common import BackboneMethod, mean_softmax

STAGES = (3, 4, 5)  # conv3_x, conv4_x, conv5_x = torchvision layer2, layer3, layer4


class PMGHead(nn.Module):
    """Head (choice, PMG style): BN → Dense hidden → BN → ELU → Dense K."""

    hidden: int
    num_classes: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, v, train: bool = False):
        kw = dict(dtype=self.dtype, param_dtype=jnp.float32)
        v = BatchNorm(name="bn1", **kw)(v, train)
        v = nn.Dense(self.hidden, name="fc1", **kw)(v)
        v = nn.elu(BatchNorm(name="bn2", **kw)(v, train))
        return nn.Dense(self.num_classes, name="fc2", **kw)(v)


class CRASMRANet(nn.Module):
    backbone: nn.Module
    num_classes: int
    cram_reduction: int = 16
    cram_mid: int = 512
    cram_out: int = 1024
    head_hidden: int = 512
    omega: float = 0.5
    delta: float = 0.9
    suppress_at_eval: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, images, train: bool = False):
        kw = dict(dtype=self.dtype, param_dtype=jnp.float32)
        cram = dict(reduction=self.cram_reduction, mid=self.cram_mid, out=self.cram_out,
                    omega=self.omega, delta=self.delta, suppress_at_eval=self.suppress_at_eval)
        bb = self.backbone
        x = bb.stage(1, bb.stem(images, train), train)
        enhanced, logits = [], {}
        for s in STAGES:
            x = bb.stage(s - 1, x, train)
            e, x = CRAM(**cram, name=f"cram{s}", **kw)(x, train)
            enhanced.append(e)
        pooled = [jnp.max(e, axis=(1, 2)) for e in enhanced]  # v_s = GMP(X_e)
        for s, v in zip(STAGES, pooled):
            logits[f"stage{s}"] = PMGHead(self.head_hidden, self.num_classes, self.dtype,
                                          name=f"head{s}")(v, train)
        logits["concat"] = PMGHead(self.head_hidden, self.num_classes, self.dtype,
                                   name="head_concat")(jnp.concatenate(pooled, axis=-1), train)
        aux = {}
        if train or self.is_initializing():  # SMRAM: training only
            aux["smram"] = SMRAM(name="smram", **kw)(enhanced, train)
        return Outputs(logits=logits, aux=aux)


class CRASMRA(BackboneMethod):
    """Config fields: cram_reduction, cram_mid, cram_out (C_a), head_hidden, omega (ω), delta
    (δ), suppress_at_eval, alpha (α, on CE_concat), beta (β, on each stage CE), gamma (γ, on
    L_div)."""

    def build_network(self, backbone):
        c = self.config
        return CRASMRANet(backbone, self.num_classes, c.cram_reduction, c.cram_mid, c.cram_out,
                          c.head_hidden, c.omega, c.delta, c.suppress_at_eval, self.dtype)

    def loss(self, outputs, labels):
        c = self.config
        terms = {f"ce_stage{s}": self.ce(outputs.logits[f"stage{s}"], labels) for s in STAGES}
        terms["ce_concat"] = self.ce(outputs.logits["concat"], labels)
        total = c.beta * sum(terms[f"ce_stage{s}"] for s in STAGES) + c.alpha * terms["ce_concat"]
        if "smram" in outputs.aux:
            terms["div"] = losses.diversity_loss(outputs.aux["smram"])
            total = total + c.gamma * terms["div"]
        return total, terms

    def predict(self, outputs):
        return mean_softmax(outputs.logits, [f"stage{s}" for s in STAGES] + ["concat"])

    def param_groups(self):
        """Backbone and SMRAM at the backbone lr (2e-4); CRAM, ConvLayers, heads 'new' (6e-3)."""
        return {"backbone": r"^(backbone|smram)/", "new": r".*"}
