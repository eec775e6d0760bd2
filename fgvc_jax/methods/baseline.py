"""Baselines: ResNet + GAP + Dense K; Swin + LayerNorm + GAP + Dense K (timm head layout) —
every method's gain is measured against its own backbone with the same recipe."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from fgvc_jax.methods import backbone as backbone_lib
from fgvc_jax.methods import registry
from fgvc_jax.methods.base import Outputs
from fgvc_jax.methods.common import BackboneMethod


class Classifier(nn.Module):
    """backbone (headless: ResNet → GAP; Swin → norm → GAP) → Dense K named 'head'."""

    backbone: nn.Module
    num_classes: int
    dtype: Any

    @nn.compact
    def __call__(self, images, train: bool = False, explain: bool = False):
        features = self.backbone(images, train)
        logits = nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=jnp.float32, name="head")(
            features
        )
        return Outputs(logits={"main": logits}, aux={"maps": {}} if explain else {})


class Baseline(BackboneMethod):
    """Plain fine-tuning: loss CE(main) (optional label smoothing); prediction softmax(main)."""

    Net = Classifier
    twin = "fgvc_jax.reference.baseline:Baseline"

    def loss(self, outputs, labels, targets=None):
        ce = self.ce(outputs.logits["main"], labels, targets)
        return ce, {"ce_main": ce}


class BaselineResNet(Baseline):
    @classmethod
    def defaults(cls, size):
        return backbone_lib.resnet_fields(size)


class BaselineSwin(Baseline):
    @classmethod
    def defaults(cls, size):
        return backbone_lib.swin_fields(size)


registry.register("baseline_resnet", BaselineResNet)
registry.register("baseline_swin", BaselineSwin)
