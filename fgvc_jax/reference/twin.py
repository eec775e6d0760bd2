"""What every twin provides: `forward(images NCHW) → (logits {head: (B, K)}, aux)` in the
module's train/eval mode, with `self.stages` the backbone's stem and stage outputs (NHWC)
of the last call; `loss(logits, aux, labels) → (total, {term: scalar})`; `predict(logits)`
the combined prediction as class probabilities."""

from __future__ import annotations

import torch
from torch import nn

from fgvc_jax.reference import backbones
from fgvc_jax.reference.functional import cross_entropy, nhwc


class Twin(nn.Module):
    """Base: holds `config` (the method's fields), `num_classes` and, when the method has
    one, the headless `backbone`."""

    uses_backbone = True

    def __init__(self, config, num_classes: int):
        super().__init__()
        self.config = config
        self.num_classes = num_classes
        if self.uses_backbone:
            self.backbone = backbones.build(config)
        self.stages = {}

    def ce(self, logits, labels):
        return cross_entropy(logits, labels, self.config.get("label_smoothing", 0.0))

    def run_stem(self, x):
        x = backbones.stem(self.backbone, x)
        self._record("stem", x)
        return x

    def run_stage(self, i: int, x):
        x = backbones.stage(self.backbone, i, x)
        self._record(f"stage{i}", x)
        return x

    def _record(self, name, x):
        self.stages[name] = x if backbones.is_swin(self.config.backbone) else nhwc(x)

    def predict(self, logits):
        return torch.softmax(logits["main"], dim=-1)

    #: Parameter names (state-dict keys) whose flax kernel takes inputs in another order,
    #: {key: (C, H, W)}: a flatten of an NCHW map here, of the NHWC map in flax.
    flatten_inputs: dict = {}
