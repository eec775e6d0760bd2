"""SwinFC (METHODS.md §4; Computer Engineering and Applications 2023, 59(20):147-157) on Swin.

The trunk is the unchanged Swin with its own head ('trunk'); branches on stage2..4 outputs:
Project (Dense C_s→D + LayerNorm, choice) → EACA → FFM across the three branches → GAP →
LayerNorm + Dense K (choice). FSM selects stage-4 tokens for the contrastive loss.
Loss = CE_trunk + Σ β_i CE_stage_i + L_con; prediction = the four heads' softmaxes summed
(returned divided by 4, so that it is a distribution with the same ranking)."""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from fgvc_jax import losses
from fgvc_jax.layers import FFM, CrossSpaceAttention, ExternalAttention, select_tokens
from fgvc_jax.methods.base import Outputs
from fgvc_jax.methods.common import BackboneMethod, mean_softmax, swin_trunk

BRANCH_STAGES = (2, 3, 4)


def _layer_norm(name, dtype):
    return nn.LayerNorm(epsilon=1e-5, dtype=dtype, param_dtype=jnp.float32, name=name)


class SwinFCNet(nn.Module):
    backbone: nn.Module
    num_classes: int
    proj_dim: int = 1024
    ea_memory: int = 64
    use_ea: bool = True
    use_ca: bool = True
    use_ffm: bool = True
    use_fsm: bool = True
    dtype: Any = jnp.float32

    def branch_attention(self, x, s):
        """EACA (X' = EA(X) + CA(X)); with one of use_ea/use_ca off, that term alone (the
        paper's +EA / +CA ablations); both off: identity."""
        kw = dict(dtype=self.dtype, param_dtype=jnp.float32)
        terms = []
        if self.use_ea:
            terms.append(ExternalAttention(self.ea_memory, name=f"ea{s}", **kw)(x))
        if self.use_ca:
            terms.append(CrossSpaceAttention(name=f"ca{s}", **kw)(x))
        return sum(terms) if terms else x

    @nn.compact
    def __call__(self, images, train: bool = False):
        kw = dict(dtype=self.dtype, param_dtype=jnp.float32)
        feats, normed, attn = swin_trunk(self.backbone, images, train, attn_stage=4)
        logits = {"trunk": nn.Dense(self.num_classes, name="head", **kw)(
            jnp.mean(normed, axis=(1, 2)))}
        xs = []
        for s in BRANCH_STAGES:
            x = nn.Dense(self.proj_dim, name=f"proj{s}", **kw)(feats[s - 1])
            x = _layer_norm(f"proj{s}_norm", self.dtype)(x)
            xs.append(self.branch_attention(x, s))
        if self.use_ffm:
            xs = FFM(name="ffm")(xs)
        for s, x in zip(BRANCH_STAGES, xs):
            v = _layer_norm(f"head{s}_norm", self.dtype)(jnp.mean(x, axis=(1, 2)))
            logits[f"stage{s}"] = nn.Dense(self.num_classes, name=f"head{s}", **kw)(v)
        aux = {}
        if self.use_fsm and (train or self.is_initializing()):
            b, h, w, c = normed.shape
            aux["fsm"], aux["fsm_index"] = select_tokens(attn, normed.reshape(b, h * w, c))
        return Outputs(logits=logits, aux=aux)


class SwinFC(BackboneMethod):
    """Config fields: proj_dim, ea_memory, use_ea, use_ca, use_ffm, use_fsm, stage_weights
    (β2..β4), con_margin (α), con_weight."""

    def build_network(self, backbone):
        c = self.config
        return SwinFCNet(backbone, self.num_classes, c.proj_dim, c.ea_memory, c.use_ea,
                         c.use_ca, c.use_ffm, c.use_fsm, self.dtype)

    def loss(self, outputs, labels):
        c = self.config
        terms = {"ce_trunk": self.ce(outputs.logits["trunk"], labels)}
        total = terms["ce_trunk"]
        for s, beta in zip(BRANCH_STAGES, c.stage_weights):
            terms[f"ce_stage{s}"] = self.ce(outputs.logits[f"stage{s}"], labels)
            total = total + beta * terms[f"ce_stage{s}"]
        if "fsm" in outputs.aux:
            terms["con"] = losses.contrastive_loss(outputs.aux["fsm"], labels, c.con_margin)
            total = total + c.con_weight * terms["con"]
        return total, terms

    def predict(self, outputs):
        return mean_softmax(outputs.logits, ["trunk"] + [f"stage{s}" for s in BRANCH_STAGES])
