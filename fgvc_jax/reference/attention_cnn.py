"""The tutorial's `AttentionClassifier`: 3 x [conv3x3 (pad 1) → ReLU → maxpool 2] with widths
64/128/256 → scaled self-attention (q, k = 1x1 conv C→C/8, v = 1x1 conv C→C,
out_i = Σ_j softmax_j(q_iᵀk_j / √(C/8)) v_j, no residual) → flatten (NCHW, as the tutorial)
→ Dense 512 → ReLU → dropout 0.5 → Dense K."""

from __future__ import annotations

import torch
from torch import nn

from fgvc_jax.reference.blocks import SelfAttention
from fgvc_jax.reference.functional import nhwc
from fgvc_jax.reference.twin import Twin


class AttentionCNN(Twin):
    uses_backbone = False

    def __init__(self, config, num_classes):
        super().__init__(config, num_classes)
        widths = tuple(config.widths)
        c_in = 3
        for i, w in enumerate(widths):
            setattr(self, f"conv{i + 1}", nn.Conv2d(c_in, w, 3, padding=1))
            c_in = w
        self.depth = len(widths)
        self.attention = SelfAttention(c_in, scaled=True)
        side = config.image_size // 2 ** len(widths)
        self.fc1 = nn.Linear(c_in * side * side, config.hidden)
        self.dropout = nn.Dropout(config.dropout)
        self.fc2 = nn.Linear(config.hidden, num_classes)
        self.flatten_inputs = {"fc1.weight": (c_in, side, side)}

    def forward(self, x):
        self.stages = {}
        for i in range(1, self.depth + 1):
            x = nn.functional.max_pool2d(torch.relu(getattr(self, f"conv{i}")(x)), 2)
        x = self.attention(x)
        self.stages["attention"] = nhwc(x)
        x = self.dropout(torch.relu(self.fc1(x.flatten(1))))
        return {"main": self.fc2(x)}, {}

    def loss(self, logits, aux, labels):
        ce = self.ce(logits["main"], labels)
        return ce, {"ce_main": ce}
