"""MA-EA (Lu, Yang, Yang, Front. Neurorobot. 18:1391791, 2024) on a torchvision ResNet.

Only the abstract survives: F' = F ⊗ M and M_erase = 1 − M are the paper's; the rest are the
labelled choices of the method's config. MA on a stage output F: M_c = SE channel map
(GAP → Dense C/r → ReLU → Dense C → σ, with bias), M_s = CBAM spatial map
σ(Conv7x7([mean_c F, max_c F])) (no bias), M = M_c ⊙ M_s; F' = F ⊗ M (or F + F ⊙ M with
`ma_residual`). EA: M_erase = 1 − M ('soft') or 𝟙[mean_c M < θ·max] ('hard'), detached;
F_erased = F ⊗ M_erase (the original F); F'' = MA_2(F_erased); `erase_rounds` repeats.
Placement conv4_x and conv5_x; pool(x) = [GAP x, GMP x]; narrower features projected by a
1x1 conv to the last width; main head concat → BN → Dense K, one Dense K per pooled feature.
Loss CE(main) + λ Σ CE(branch); prediction softmax(main) (`combine`: every head's softmaxes
averaged or logits summed)."""

from __future__ import annotations

import torch
from torch import nn

from fgvc_jax.reference import backbones
from fgvc_jax.reference.blocks import SE, CBAMSpatial
from fgvc_jax.reference.functional import combine, gap, gmp
from fgvc_jax.reference.twin import Twin

STAGE_NAMES = ("conv2_x", "conv3_x", "conv4_x", "conv5_x")


class MA(nn.Module):
    def __init__(self, c, r, residual):
        super().__init__()
        self.channel = SE(c, r, return_map=True)
        self.spatial = CBAMSpatial(return_map=True)
        self.residual = residual

    def forward(self, f):
        m = self.channel(f) * self.spatial(f)
        return (f + f * m if self.residual else f * m), m


def erase_mask(m, mode, theta):
    if mode == "soft":
        return (1.0 - m).detach()
    s = m.mean(1, keepdim=True)
    return (s < theta * s.amax(dim=(2, 3), keepdim=True)).to(m.dtype).detach()


class MAEABlock(nn.Module):
    def __init__(self, c, cfg):
        super().__init__()
        self.cfg = cfg
        self.ma = MA(c, cfg.ma_reduction, cfg.ma_residual)
        for r in range(cfg.erase_rounds):
            setattr(self, f"ma_erased{r + 1}", MA(c, cfg.ma_reduction, cfg.ma_residual))

    def forward(self, f):
        out, m = self.ma(f)
        outs, maps, base = [out], [m], f
        for r in range(self.cfg.erase_rounds):
            base = base * erase_mask(m, self.cfg.erase, self.cfg.erase_theta)
            out, m = getattr(self, f"ma_erased{r + 1}")(base)
            outs.append(out)
            maps.append(m)
        return outs, maps


class MAEA(Twin):
    def __init__(self, config, num_classes):
        super().__init__(config, num_classes)
        widths = backbones.widths(self.backbone)
        last = widths[-1]
        self.heads = []
        for i, name in enumerate(STAGE_NAMES):
            if name not in config.ma_stages:
                continue
            stage = name.split("_")[0]
            setattr(self, f"maea_{stage}", MAEABlock(widths[i], config))
            if widths[i] != last:
                setattr(self, f"proj_{stage}", nn.Conv2d(widths[i], last, 1))
            self.heads += [f"{stage}_ma"] + [
                f"{stage}_erased{r + 1}" for r in range(config.erase_rounds)
            ]
        self.heads.append("conv5_raw")
        self.head_bn = nn.BatchNorm1d(2 * last * len(self.heads))
        self.head = nn.Linear(2 * last * len(self.heads), num_classes)
        for k in self.heads:
            setattr(self, f"head_{k}", nn.Linear(2 * last, num_classes))

    def forward(self, x):
        self.stages = {}
        cfg = self.config
        x = self.run_stem(x)
        branches = {}
        for i, name in enumerate(STAGE_NAMES, start=1):
            x = self.run_stage(i, x)
            if name not in cfg.ma_stages:
                continue
            stage = name.split("_")[0]
            outs, maps = getattr(self, f"maea_{stage}")(x)
            if cfg.erase_into_trunk and i < len(STAGE_NAMES):
                x = x * erase_mask(maps[0], cfg.erase, cfg.erase_theta)
            proj = getattr(self, f"proj_{stage}", None)
            if proj is not None:
                outs = [proj(o) for o in outs]
            branches[f"{stage}_ma"] = outs[0]
            for r, o in enumerate(outs[1:], start=1):
                branches[f"{stage}_erased{r}"] = o
        branches["conv5_raw"] = x
        pooled = {k: torch.cat([gap(branches[k]), gmp(branches[k])], dim=1) for k in self.heads}
        logits = {"main": self.head(self.head_bn(torch.cat(list(pooled.values()), dim=1)))}
        for k, v in pooled.items():
            logits[k] = getattr(self, f"head_{k}")(v)
        return logits, {}

    def loss(self, logits, aux, labels):
        terms = {f"ce_{k}": self.ce(v, labels) for k, v in logits.items()}
        branches = sum(v for k, v in terms.items() if k != "ce_main")
        return terms["ce_main"] + self.config.branch_weight * branches, terms

    def predict(self, logits):
        if self.config.combine == "main":
            return super().predict(logits)
        return combine(logits, list(logits), self.config.combine)
