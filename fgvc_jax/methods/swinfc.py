"""SwinFC (Xiang, Chen, Yang, "结合Swin及多尺度特征融合的细粒度图像分类", Computer Engineering and
Applications 2023, 59(20):147-157) on Swin.

The trunk is the unchanged Swin with its own head ('trunk'); branches on stage2..4 outputs:
Project (Dense C_s→D + LayerNorm, choice: FFM needs equal widths) → EACA (Eq. 1-6) → FFM
across the three branches (Eq. 7-12) → GAP → LayerNorm + Dense K (choice). FSM (Eq. 13-14)
selects stage-4 tokens for the contrastive loss (Eq. 15).
Loss (Eq. 16) = CE_trunk + Σ β_i CE_stage_i + L_con; prediction (choice) = the four heads'
softmaxes summed (returned divided by 4: a distribution with the same ranking).

Explanation maps (`explain=True`, `aux['maps']`): 'stage-4 attention' (mean over blocks,
heads and queries: the FSM column score a_j) and 'FSM patches' (how many of the blocks x
heads argmaxes fall on each patch)."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from fgvc_jax.layers import EACA, FFM, select_tokens
from fgvc_jax.methods import backbone as backbone_lib
from fgvc_jax.methods import losses, registry
from fgvc_jax.methods.base import Outputs
from fgvc_jax.methods.common import BackboneMethod, combine, swin_trunk

BRANCH_STAGES = (2, 3, 4)


def _layer_norm(name, dtype):
    return nn.LayerNorm(epsilon=1e-5, dtype=dtype, param_dtype=jnp.float32, name=name)


def attention_maps(attns, idx) -> dict:
    """'stage-4 attention' (B, h, w): a_j averaged over blocks and heads; 'FSM patches'
    (B, h, w): the count of FSM's selections per patch."""
    b, _, n, _ = attns[0].shape
    side = int(round(n**0.5))
    a = jnp.mean(jnp.stack([x.astype(jnp.float32) for x in attns]), axis=(0, 2, 3))
    counts = jnp.sum(jnp.eye(n, dtype=jnp.float32)[idx], axis=1)
    return {
        "stage-4 attention": a.reshape(b, side, side),
        "FSM patches": counts.reshape(b, side, side),
    }


class SwinFCNet(nn.Module):
    backbone: nn.Module
    num_classes: int
    proj_dim: int
    ea_memory: int
    use_ea: bool
    use_ca: bool
    use_ffm: bool
    ffm_similarity: str
    ffm_scale: float
    use_fsm: bool
    dtype: Any

    @nn.compact
    def __call__(self, images, train: bool = False, explain: bool = False):
        kw = dict(dtype=self.dtype, param_dtype=jnp.float32)
        feats, normed, attn = swin_trunk(self.backbone, images, train, attn_stage=4)
        logits = {
            "trunk": nn.Dense(self.num_classes, name="head", **kw)(jnp.mean(normed, axis=(1, 2)))
        }
        xs = []
        for s in BRANCH_STAGES:
            x = nn.Dense(self.proj_dim, name=f"proj{s}", **kw)(feats[s - 1])
            x = _layer_norm(f"proj{s}_norm", self.dtype)(x)
            xs.append(EACA(self.ea_memory, self.use_ea, self.use_ca, name=f"eaca{s}", **kw)(x))
        if self.use_ffm:
            xs = FFM(self.ffm_similarity, self.ffm_scale, name="ffm")(xs)
        for s, x in zip(BRANCH_STAGES, xs):
            v = _layer_norm(f"head{s}_norm", self.dtype)(jnp.mean(x, axis=(1, 2)))
            logits[f"stage{s}"] = nn.Dense(self.num_classes, name=f"head{s}", **kw)(v)
        aux = {}
        b, h, w, c = normed.shape
        selected, idx = select_tokens(attn, normed.reshape(b, h * w, c))
        if self.use_fsm and (train or self.is_initializing()):
            aux["fsm"], aux["fsm_index"] = selected, idx
        if explain:
            aux["maps"] = attention_maps(attn, idx)
        return Outputs(logits=logits, aux=aux)


class SwinFC(BackboneMethod):
    """Config fields: proj_dim (D, choice), ea_memory (M, choice: 64), use_ea, use_ca,
    use_ffm (the paper's ablations), ffm_similarity ('dot', Eq. 7 | 'cosine', FBSD),
    ffm_scale (1.0, Eq. 12 | 0.001, FBSD), use_fsm, stage_weights (β2..β4, Eq. 16),
    con_margin (α, Eq. 15), con_weight, combine ('softmax_mean', choice | 'logit_sum', the
    softmax of the summed logits as FBSD's code predicts)."""

    twin = "fgvc_jax.reference.swinfc:SwinFC"

    Net = SwinFCNet

    @classmethod
    def defaults(cls, size):
        full = size == "full"
        return dict(
            **backbone_lib.swin_fields(size),
            proj_dim=1024 if full else 64,
            ea_memory=64 if full else 16,
            use_ea=True,
            use_ca=True,
            use_ffm=True,
            ffm_similarity="dot",
            ffm_scale=1.0,
            use_fsm=True,
            stage_weights=(0.4, 0.6, 0.8),
            con_margin=0.4,
            con_weight=1.0,
            combine="softmax_mean",
        )

    def loss(self, outputs, labels, targets=None):
        c = self.config
        terms = {"ce_trunk": self.ce(outputs.logits["trunk"], labels, targets)}
        total = terms["ce_trunk"]
        for s, beta in zip(BRANCH_STAGES, c.stage_weights):
            terms[f"ce_stage{s}"] = self.ce(outputs.logits[f"stage{s}"], labels, targets)
            total = total + beta * terms[f"ce_stage{s}"]
        if "fsm" in outputs.aux:
            terms["con"] = losses.contrastive_loss(outputs.aux["fsm"], labels, c.con_margin)
            total = total + c.con_weight * terms["con"]
        return total, terms

    def predict(self, outputs):
        heads = ["trunk"] + [f"stage{s}" for s in BRANCH_STAGES]
        return combine(outputs.logits, heads, self.config.combine)


registry.register("swinfc", SwinFC)
