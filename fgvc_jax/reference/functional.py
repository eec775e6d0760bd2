"""The methods' losses and poolings in PyTorch, written from the papers' equations."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cross_entropy(logits, labels, label_smoothing: float = 0.0):
    """Mean softmax cross-entropy (torch's, with label smoothing ε: target (1−ε)·onehot + ε/K)."""
    return F.cross_entropy(logits, labels, label_smoothing=label_smoothing)


def combine(logits, keys, how: str):
    """The named heads as class probabilities: 'softmax_mean', the mean of their softmaxes;
    'logit_sum', the softmax of the sum of their logits (FBSD's code)."""
    if how == "logit_sum":
        return torch.softmax(sum(logits[k] for k in keys), -1)
    return sum(torch.softmax(logits[k], -1) for k in keys) / len(keys)


def diversity_loss(probs):
    """CRA-SMRA's L_div (the MC-Loss form): P (B, S, HW) spatial softmaxes; CCMP
    g_k = max_s P_{s,k}; L_div = 1 − (1/S)·Σ_k g_k, batch mean."""
    g = probs.max(dim=1).values
    return (1.0 - g.sum(dim=-1) / probs.shape[1]).mean()


def contrastive_loss(z, labels, margin: float = 0.4):
    """SwinFC Eq. 15 (TransFG form): cos = normalised Z Zᵀ; mean over all B² pairs (diagonal
    included) of 1 − cos (same label) or max(cos − α, 0) (different label)."""
    z = F.normalize(z, dim=-1)
    cos = z @ z.t()
    same = (labels[:, None] == labels[None, :]).float()
    loss = (1.0 - cos) * same + torch.clamp(cos - margin, min=0.0) * (1.0 - same)
    return loss.sum() / z.shape[0] ** 2


def gap(x):
    """Global average pooling (B, C, H, W) → (B, C)."""
    return x.mean(dim=(2, 3))


def gmp(x):
    """Global max pooling (B, C, H, W) → (B, C)."""
    return x.amax(dim=(2, 3))


def top5_pool(x):
    """FBSD's pooling: mean of the 5 largest values per channel (B, C, H, W) → (B, C)."""
    flat = x.flatten(2)
    return flat.topk(min(5, flat.shape[-1]), dim=-1).values.mean(dim=-1)


def nhwc(x):
    """(B, C, H, W) → (B, H, W, C), for comparison with the flax side."""
    return x.permute(0, 2, 3, 1)
