"""MA-EA: hybrid attention + attention erasure (Lu, Yang, Yang, Front. Neurorobot. 18:1391791,
2024) on a ResNet with the multi-scale stem pool (`stem_pool='multiscale'`, choice: the
abstract ties the improved pooling to the shallow layers).

Only the abstract and the seed's summary survive: everything but F' = F ⊗ M and
M_erase = 1 − M is a labelled choice, each a config field. On each placed stage output F
(choice: conv4_x and conv5_x): F', M = MA(F) with F' = F ⊗ M (the seed's formula;
`ma_residual=True` gives F + F ⊙ M); F'' = MA_2(F ⊗ M_erase) (erasure of the ORIGINAL F, not
F'), on a parallel branch (the seed: "back into the network (or a parallel branch)";
`erase_into_trunk=True` feeds F ⊗ M_erase to the next stage instead of F). Head fusion: pool(x) = concat(GAP x,
GMP x) of [F', F''] per placement (projected by a 1x1 conv to the last stage's width first
when narrower) and of the raw last stage output; concat → BN → Dense K is the main head,
each pooled feature also has its own Dense K head. Loss CE(main) + λ Σ CE(branches);
prediction: main head (`combine`: or every head's softmaxes averaged / logits summed).

Explanation maps (`explain=True`, `aux['maps']`): 'MA <stage>' (mean_c M), 'EA erased
<stage>' (the erased fraction 1 − ‖F ⊗ M_erase‖_c / ‖F‖_c) and 'MA on erased <stage> (round
r)' (mean_c of the r-th erased branch's map)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from fgvc_jax.backbones.batch_norm import BatchNorm
from fgvc_jax.layers import MAEA, erase_mask
from fgvc_jax.methods import backbone as backbone_lib
from fgvc_jax.methods import registry
from fgvc_jax.methods.base import Outputs
from fgvc_jax.methods.common import COMBINES, BackboneMethod, avg_max_pool, channel_mean, combine
from fgvc_jax.runtime.precision import upcast

STAGE_NAMES = ("conv2_x", "conv3_x", "conv4_x", "conv5_x")  # torchvision layer1..layer4


def erased_fraction(f, m, erase: str, theta: float):
    """1 − ‖F ⊗ M_erase‖_c / ‖F‖_c per position (B, H, W): how much EA removed there."""
    norm = lambda t: jnp.sqrt(jnp.sum(jnp.square(upcast(t)), -1))
    return 1.0 - norm(upcast(f) * erase_mask(m, erase, theta)) / (norm(f) + 1e-6)


class MAEANet(nn.Module):
    backbone: nn.Module
    num_classes: int
    ma_stages: Sequence[str]
    ma_reduction: int
    ma_residual: bool
    erase: str
    erase_theta: float
    erase_rounds: int
    erase_into_trunk: bool
    dtype: Any

    @nn.compact
    def __call__(self, images, train: bool = False, explain: bool = False):
        kw = dict(dtype=self.dtype, param_dtype=jnp.float32)
        unknown = set(self.ma_stages) - set(STAGE_NAMES)
        if unknown:
            raise ValueError(f"method.ma_stages has {sorted(unknown)}; valid: {STAGE_NAMES}")
        bb = self.backbone
        width = bb.stage_channels[-1]
        x = bb.stem(images, train)
        branches, maps = {}, {}
        for i, name in enumerate(STAGE_NAMES, start=1):
            x = bb.stage(i, x, train)
            if name not in self.ma_stages:
                continue
            stage = name.split("_")[0]  # 'conv4'
            outs, ms = MAEA(
                self.ma_reduction,
                self.ma_residual,
                self.erase,
                self.erase_theta,
                self.erase_rounds,
                return_maps=True,
                name=f"maea_{stage}",
                **kw,
            )(x)
            if explain:
                maps[f"MA {stage}"] = channel_mean(ms[0])
                maps[f"EA erased {stage}"] = erased_fraction(x, ms[0], self.erase, self.erase_theta)
                for r, m in enumerate(ms[1:], start=1):
                    maps[f"MA on erased {stage} (round {r})"] = channel_mean(m)
            if self.erase_into_trunk and i < len(STAGE_NAMES):
                x = x * erase_mask(ms[0], self.erase, self.erase_theta)
            if outs[0].shape[-1] != width:  # choice: one projection shared by F' and F''
                proj = nn.Conv(width, (1, 1), name=f"proj_{stage}", **kw)
                outs = [proj(o) for o in outs]
            branches[f"{stage}_ma"] = outs[0]
            for r, o in enumerate(outs[1:], start=1):
                branches[f"{stage}_erased{r}"] = o
        branches["conv5_raw"] = x
        pooled = {k: avg_max_pool(v) for k, v in branches.items()}
        logits = {
            "main": nn.Dense(self.num_classes, name="head", **kw)(
                BatchNorm(name="head_bn", **kw)(jnp.concatenate(list(pooled.values()), -1), train)
            )
        }
        for k, v in pooled.items():
            logits[k] = nn.Dense(self.num_classes, name=f"head_{k}", **kw)(v)
        return Outputs(logits=logits, aux={"maps": maps} if explain else {})


class MAEAMethod(BackboneMethod):
    """Config fields (all choices): stem_pool, ma_stages, ma_reduction (r), ma_residual,
    erase ('soft' | 'hard'), erase_theta (θ), erase_rounds, erase_into_trunk, branch_weight
    (λ), combine ('main': the main head alone | 'softmax_mean' | 'logit_sum' over every head,
    `fgvc_jax.methods.common.combine`)."""

    twin = "fgvc_jax.reference.ma_ea:MAEA"

    Net = MAEANet

    @classmethod
    def defaults(cls, size):
        return dict(
            **backbone_lib.resnet_fields(size, stem_pool="multiscale"),
            ma_stages=("conv4_x", "conv5_x"),
            ma_reduction=16,
            ma_residual=False,
            erase="soft",
            erase_theta=0.8,
            erase_rounds=1,
            erase_into_trunk=False,
            branch_weight=1.0,
            combine="main",
        )

    def loss(self, outputs, labels, targets=None):
        terms = {f"ce_{k}": self.ce(v, labels, targets) for k, v in outputs.logits.items()}
        branches = sum(v for k, v in terms.items() if k != "ce_main")
        return terms["ce_main"] + self.config.branch_weight * branches, terms

    def predict(self, outputs):
        if self.config.combine == "main":
            return super().predict(outputs)
        if self.config.combine not in COMBINES:
            raise ValueError(
                f"method.combine={self.config.combine!r}; valid: main, {', '.join(COMBINES)}"
            )
        return combine(outputs.logits, list(outputs.logits), self.config.combine)


registry.register("ma_ea", MAEAMethod)
