"""MA-EA: hybrid attention + attention erasure (METHODS.md §3; Front. Neurorobot. 2024) on a
ResNet with the multi-scale stem pool (`stem_pool='multiscale'`, choice).

On each placed stage output F: F', M = MA(F); F'' = MA_2(F ⊗ M_erase) (erasure of the
original F). Head fusion: pool(x) = concat(GAP x, GMP x) of [F', F''] per placement
(projected by a 1x1 conv to the last stage's width first when narrower) and of the raw last
stage output; concat → BN → Dense K is the main head, each pooled feature also has its own
Dense K head. Loss CE(main) + λ Σ CE(branches); prediction: main head."""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from fgvc_jax.backbones.batch_norm import BatchNorm
from fgvc_jax.layers import MAEA
from fgvc_jax.methods.base import Outputs
from fgvc_jax.methods.common import BackboneMethod, avg_max_pool

STAGE_NAMES = ("conv2_x", "conv3_x", "conv4_x", "conv5_x")  # torchvision layer1..layer4


class MAEANet(nn.Module):
    backbone: nn.Module
    num_classes: int
    ma_stages: Sequence[str] = ("conv4_x", "conv5_x")
    ma_reduction: int = 16
    ma_residual: bool = True
    erase: str = "soft"
    erase_theta: float = 0.8
    erase_rounds: int = 1
    ma_in_trunk: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, images, train: bool = False):
        kw = dict(dtype=self.dtype, param_dtype=jnp.float32)
        unknown = set(self.ma_stages) - set(STAGE_NAMES)
        if unknown:
            raise ValueError(f"method.ma_stages has {sorted(unknown)}; valid: {STAGE_NAMES}")
        bb = self.backbone
        width = bb.stage_channels[-1]
        x = bb.stem(images, train)
        branches = {}
        for i, name in enumerate(STAGE_NAMES, start=1):
            x = bb.stage(i, x, train)
            if name not in self.ma_stages:
                continue
            stage = name.split("_")[0]  # 'conv4'
            outs = MAEA(self.ma_reduction, self.ma_residual, self.erase, self.erase_theta,
                        self.erase_rounds, name=f"maea_{stage}", **kw)(x)
            if self.ma_in_trunk and i < len(STAGE_NAMES):
                x = outs[0]
            if outs[0].shape[-1] != width:  # choice: one projection shared by F' and F''
                proj = nn.Conv(width, (1, 1), name=f"proj_{stage}", **kw)
                outs = [proj(o) for o in outs]
            branches[f"{stage}_ma"] = outs[0]
            for r, o in enumerate(outs[1:], start=1):
                branches[f"{stage}_erased{r}"] = o
        branches["conv5_raw"] = x
        pooled = {k: avg_max_pool(v) for k, v in branches.items()}
        logits = {"main": nn.Dense(self.num_classes, name="head", **kw)(
            BatchNorm(name="head_bn", **kw)(jnp.concatenate(list(pooled.values()), -1), train))}
        for k, v in pooled.items():
            logits[k] = nn.Dense(self.num_classes, name=f"head_{k}", **kw)(v)
        return Outputs(logits=logits, aux={})


class MAEAMethod(BackboneMethod):
    """Config fields: stem_pool, ma_stages, ma_reduction, ma_residual, erase ('soft'|'hard'),
    erase_theta (θ), erase_rounds, ma_in_trunk, branch_weight (λ)."""

    def build_network(self, backbone):
        c = self.config
        return MAEANet(backbone, self.num_classes, tuple(c.ma_stages), c.ma_reduction,
                       c.ma_residual, c.erase, c.erase_theta, c.erase_rounds, c.ma_in_trunk,
                       self.dtype)

    def loss(self, outputs, labels):
        terms = {f"ce_{k}": self.ce(v, labels) for k, v in outputs.logits.items()}
        branches = sum(v for k, v in terms.items() if k != "ce_main")
        return terms["ce_main"] + self.config.branch_weight * branches, terms
