"""SwinFC (Xiang, Chen, Yang, Computer Engineering and Applications 2023, 59(20):147-157) on
timm's SwinTransformer; the paper's equation numbers.

Trunk: the unchanged Swin, its head LayerNorm → GAP → Dense K ('trunk'). Branches on the
stage2..4 outputs: Project (Dense C_s→D + LayerNorm, choice) → EACA → FFM → GAP → LayerNorm
+ Dense K (choice).
EACA: X' = EA(X) + CA(X). EA (Eq. 1-3): A = Norm(X W1), W1 a Conv1d C→M, kernel 3, no bias,
along the raster token axis; Norm = softmax over the N tokens, then divide by the sum over M
(+1e-9) (EANet's double normalisation, choice); X̌ = A W2 (Conv1d M→C, kernel 1);
EA(X) = X + X̌. CA (Eq. 4-6): X_H = mean over W, X_W = mean over H; A_H = softmax over H of
Conv2d(3x1)(X_H), A_W = softmax over W of Conv2d(1x3)(X_W); CA(X) = X ⊗ (A_H + A_W).
FFM (Eq. 7-12): M_ij = X_iᵀ X_j (dot, Eq. 7; or of L2-normalised channels, 'cosine'),
X̃_i[:, p] = X_i[:, p] + s Σ_{j≠i} Σ_q softmax_q(−M_ij[p, q]) X_j[:, q].
FSM (Eq. 13-14): per block and head of stage 4, a_j = mean_i A(i, j), argmax_j (detached);
those tokens of the final normed stage-4 output, averaged: Z̃. L_con (Eq. 15) on Z̃.
Loss (Eq. 16): CE_trunk + Σ β_i CE_stage_i + L_con. Prediction (choice): the sum of the
four heads' softmaxes."""

from __future__ import annotations

import torch
from torch import nn

from fgvc_jax.reference import backbones
from fgvc_jax.reference.blocks import EACA, ffm
from fgvc_jax.reference.functional import combine, contrastive_loss
from fgvc_jax.reference.twin import Twin

BRANCH_STAGES = (2, 3, 4)


class SwinFC(Twin):
    def __init__(self, config, num_classes):
        super().__init__(config, num_classes)
        widths = backbones.widths(self.backbone)
        d = config.proj_dim
        self.head = nn.Linear(widths[-1], num_classes)
        for s in BRANCH_STAGES:
            setattr(self, f"proj{s}", nn.Linear(widths[s - 1], d))
            setattr(self, f"proj{s}_norm", nn.LayerNorm(d, eps=1e-5))
            setattr(self, f"eaca{s}", EACA(d, config.ea_memory, config.use_ea, config.use_ca))
            setattr(self, f"head{s}_norm", nn.LayerNorm(d, eps=1e-5))
            setattr(self, f"head{s}", nn.Linear(d, num_classes))
        self._attn = backbones.record_attention(self.backbone, 4)

    def forward(self, x):
        self.stages = {}
        self._attn.clear()
        cfg = self.config
        x = self.run_stem(x)
        feats = []
        for i in range(1, 5):
            x = self.run_stage(i, x)
            feats.append(x)
        normed = self.backbone.norm(x)  # (B, H, W, C)
        logits = {"trunk": self.head(normed.mean(dim=(1, 2)))}
        xs, shapes = [], []
        for s in BRANCH_STAGES:
            t = getattr(self, f"proj{s}_norm")(getattr(self, f"proj{s}")(feats[s - 1]))
            t = getattr(self, f"eaca{s}")(t.permute(0, 3, 1, 2))  # (B, D, H, W)
            shapes.append(t.shape)
            xs.append(t.flatten(2))
        if cfg.use_ffm:
            xs = ffm(xs, similarity=cfg.ffm_similarity, scale=cfg.ffm_scale)
        for s, t in zip(BRANCH_STAGES, xs):
            v = getattr(self, f"head{s}_norm")(t.mean(dim=2))
            logits[f"stage{s}"] = getattr(self, f"head{s}")(v)
        aux = {}
        if cfg.use_fsm and self.training:
            b, h, w, c = normed.shape
            cols = [a.mean(dim=2).argmax(dim=-1) for a in self._attn]  # (B, heads) each
            idx = torch.cat(cols, dim=-1).detach()
            tokens = normed.reshape(b, h * w, c)
            picked = torch.gather(tokens, 1, idx[:, :, None].expand(-1, -1, c))
            aux["fsm"], aux["fsm_index"] = picked.mean(dim=1), idx
        return logits, aux

    def loss(self, logits, aux, labels):
        c = self.config
        terms = {"ce_trunk": self.ce(logits["trunk"], labels)}
        total = terms["ce_trunk"]
        for s, beta in zip(BRANCH_STAGES, c.stage_weights):
            terms[f"ce_stage{s}"] = self.ce(logits[f"stage{s}"], labels)
            total = total + beta * terms[f"ce_stage{s}"]
        if "fsm" in aux:
            terms["con"] = contrastive_loss(aux["fsm"], labels, c.con_margin)
            total = total + c.con_weight * terms["con"]
        return total, terms

    def predict(self, logits):
        """The sum of the four softmaxes (choice), normalised to class probabilities (their
        mean); `combine='logit_sum'`: the softmax of the summed logits."""
        heads = ["trunk"] + [f"stage{s}" for s in BRANCH_STAGES]
        return combine(logits, heads, self.config.combine)
