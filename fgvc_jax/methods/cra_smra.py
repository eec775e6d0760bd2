"""CRA-SMRA (Wang, Sun, Liu et al., "Rethinking Attention Mechanism: Channel Re-attention and
Spatial Multi-region Attention for Fine-grained Visual Classification", Neural Processing
Letters 57:43, 2025) on a ResNet (or DenseNet: `backbone='densenet161'`).

The paper's text survives, its equations do not; it is built on FBSD (Song & Yang, IJCNN
2021), whose public code is the reading where the text is silent (each such field is a
labelled choice). CRAM after conv3_x, conv4_x, conv5_x: the enhanced map X_e feeds the
stage's head, the suppressed map X_s replaces X as the next stage's input (in training, and
at evaluation with `suppress_at_eval`: FBSD suppresses at test too, and the next stage's BN
statistics are learned on suppressed inputs). SMRAM (training only) adds the diversity loss.
Loss (the paper's order "each stage, overall, L_div"): L = α Σ_s CE_s + β CE_concat + γ L_div
with α, β, γ = 2, 1, 1 (FBSD weights each stage x2, the concat x1). Prediction: the mean of
the four softmaxes (the paper; `combine='logit_sum'`: FBSD's sum of the logits).

Explanation maps (`explain=True`, `aux['maps']`): 'CRAM X_e conv<s>_x' (mean_c X_e) and
'SMRAM P conv<s>_x' (SMRAM's spatial softmax P_s with the trained weights, at conv5_x's
size; SMRAM is otherwise a training-only branch). The mean number of suppressed channels per
stage is logged (the 'metrics' collection: with δ = 0.9 on softmax(sigmoid) values it can be
many).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from fgvc_jax.backbones.batch_norm import BatchNorm
from fgvc_jax.layers import CRAM, SMRAM
from fgvc_jax.methods import backbone as backbone_lib
from fgvc_jax.methods import losses, registry
from fgvc_jax.methods.base import Outputs
from fgvc_jax.methods.common import BackboneMethod, channel_mean, combine

STAGES = (3, 4, 5)  # conv3_x, conv4_x, conv5_x = torchvision layer2, layer3, layer4
HEAD_POOLS = ("max", "top5")


def head_pool(x, how: str) -> jax.Array:
    """v_s = pool(X_e) (B, C): global max pooling ('max', choice) or FBSD's mean of the 5
    largest values per channel ('top5')."""
    if how == "max":
        return jnp.max(x, axis=(1, 2))
    if how == "top5":
        b, h, w, c = x.shape
        top = jax.lax.top_k(jnp.swapaxes(x.reshape(b, h * w, c), 1, 2), min(5, h * w))[0]
        return jnp.mean(top, axis=-1)
    raise ValueError(f"method.head_pool={how!r}; valid: {', '.join(HEAD_POOLS)}")


class PMGHead(nn.Module):
    """Head (choice, FBSD): BN → Dense hidden → BN → ELU → Dense K."""

    hidden: int
    num_classes: int
    dtype: Any

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
    cram_reduction: int
    cram_mid: int
    cram_out: int
    head_hidden: int
    head_pool: str
    omega: float
    delta: float
    suppress_at_eval: bool
    suppress_form: str
    channel_block: str
    smram_down: str
    convlayer_bn_momentum: float
    dtype: Any

    @nn.compact
    def __call__(self, images, train: bool = False, explain: bool = False):
        kw = dict(dtype=self.dtype, param_dtype=jnp.float32)
        cram = dict(
            reduction=self.cram_reduction,
            mid=self.cram_mid,
            out=self.cram_out,
            omega=self.omega,
            delta=self.delta,
            suppress_at_eval=self.suppress_at_eval,
            suppress_form=self.suppress_form,
            channel_block=self.channel_block,
            convlayer_bn_momentum=self.convlayer_bn_momentum,
        )
        bb = self.backbone
        x = bb.stage(1, bb.stem(images, train), train)
        enhanced, logits = [], {}
        for s in STAGES:
            x = bb.stage(s - 1, x, train)
            e, x = CRAM(**cram, name=f"cram{s}", **kw)(x, train)
            enhanced.append(e)
        pooled = [head_pool(e, self.head_pool) for e in enhanced]
        for s, v in zip(STAGES, pooled):
            logits[f"stage{s}"] = PMGHead(
                self.head_hidden, self.num_classes, self.dtype, name=f"head{s}"
            )(v, train)
        logits["concat"] = PMGHead(
            self.head_hidden, self.num_classes, self.dtype, name="head_concat"
        )(jnp.concatenate(pooled, axis=-1), train)
        aux = {}
        if train or self.is_initializing() or explain:  # SMRAM: training only
            probs = SMRAM(self.smram_down, name="smram", **kw)(enhanced, train)
            if not explain:
                aux["smram"] = probs
        if explain:
            b, h, w = probs.shape[0], enhanced[-1].shape[1], enhanced[-1].shape[2]
            aux["maps"] = {f"CRAM X_e conv{s}_x": channel_mean(e) for s, e in zip(STAGES, enhanced)}
            aux["maps"].update(
                {f"SMRAM P conv{s}_x": probs[:, i].reshape(b, h, w) for i, s in enumerate(STAGES)}
            )
        return Outputs(logits=logits, aux=aux)


class CRASMRA(BackboneMethod):
    """Config fields: cram_reduction (r), cram_mid, cram_out (C_a), head_hidden, head_pool,
    omega (ω), delta (δ), suppress_at_eval, suppress_form, channel_block ('cram' | 'cbam',
    Table 3), smram_down, convlayer_bn_momentum (the ConvLayers' BN momentum, PyTorch's
    convention: 0.01, FBSD's `BasicConv`), alpha (α, on each stage CE), beta (β, on CE_concat), gamma (γ, on
    L_div; 0 = CRAM only), combine ('softmax_mean': the paper's mean of the four softmaxes |
    'logit_sum': FBSD's code, the softmax of the summed logits)."""

    twin = "fgvc_jax.reference.cra_smra:CRASMRA"

    Net = CRASMRANet

    @classmethod
    def defaults(cls, size):
        full = size == "full"
        return dict(
            **backbone_lib.resnet_fields(size),
            cram_reduction=16,
            cram_mid=512 if full else 64,
            cram_out=1024 if full else 128,
            head_hidden=512 if full else 64,
            head_pool="max",
            omega=0.5,
            delta=0.9,
            suppress_at_eval=True,
            suppress_form="scale",
            channel_block="cram",
            smram_down="avgpool",
            convlayer_bn_momentum=0.01,
            alpha=2.0,
            beta=1.0,
            gamma=1.0,
            combine="softmax_mean",
        )

    def loss(self, outputs, labels, targets=None):
        c = self.config
        terms = {
            f"ce_stage{s}": self.ce(outputs.logits[f"stage{s}"], labels, targets) for s in STAGES
        }
        terms["ce_concat"] = self.ce(outputs.logits["concat"], labels, targets)
        total = c.alpha * sum(terms[f"ce_stage{s}"] for s in STAGES) + c.beta * terms["ce_concat"]
        if "smram" in outputs.aux:
            terms["div"] = losses.diversity_loss(outputs.aux["smram"])
            total = total + c.gamma * terms["div"]
        return total, terms

    def predict(self, outputs):
        heads = [f"stage{s}" for s in STAGES] + ["concat"]
        return combine(outputs.logits, heads, self.config.combine)

    def param_groups(self):
        """Backbone and SMRAM at the backbone lr (2e-4); CRAM, ConvLayers, heads 'new' (6e-3,
        choice: the paper gives 6e-3 for CRAM only)."""
        return {"backbone": r"^(backbone|smram)/", "new": r".*"}


registry.register("cra_smra", CRASMRA)
