"""Baselines (the papers' own backbones trained the same way): ResNet + GAP + Dense K;
Swin + LayerNorm + GAP + Dense K (timm's head layout)."""

from __future__ import annotations

from torch import nn

from fgvc_jax.reference import backbones
from fgvc_jax.reference.functional import gap
from fgvc_jax.reference.twin import Twin


class Baseline(Twin):
    """Loss CE(main); prediction softmax(main)."""

    def __init__(self, config, num_classes):
        super().__init__(config, num_classes)
        width = backbones.widths(self.backbone)[-1]
        self.head = nn.Linear(width, num_classes)

    def forward(self, x):
        self.stages = {}
        x = self.run_stem(x)
        for i in range(1, 5):
            x = self.run_stage(i, x)
        if hasattr(self.backbone, "patch_embed"):  # Swin: LayerNorm → GAP (NHWC)
            v = self.backbone.norm(x).mean(dim=(1, 2))
        else:
            v = gap(x)
        return {"main": self.head(v)}, {}

    def loss(self, logits, aux, labels):
        ce = self.ce(logits["main"], labels)
        return ce, {"ce_main": ce}
