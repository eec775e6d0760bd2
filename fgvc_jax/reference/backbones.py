"""The twins' backbones: torchvision ResNet / DenseNet and timm's SwinTransformer (built with
its constructor keyword arguments), headless, walked stage by stage like the papers'
figures: ResNet conv2_x..conv5_x (torchvision layer1..layer4); DenseNet transition{i-1} +
denseblock{i}, the last with norm5 + ReLU (torchvision's feature map); Swin stage1..stage4
(timm layers[0..3], NHWC)."""

from __future__ import annotations

import torch
from torch import nn

from fgvc_jax.backbones import registry


class MultiScaleMaxPool(nn.Module):
    """MA-EA's improved stem pooling (choice): mean of stride-2 max-pools with kernels 3, 5, 7
    (padding k//2)."""

    def forward(self, x):
        return sum(nn.functional.max_pool2d(x, k, 2, k // 2) for k in (3, 5, 7)) / 3


def is_swin(arch: str) -> bool:
    return registry.family(arch).name == "swin"


def build(config) -> nn.Module:
    """The headless backbone of `config.method`'s fields (backbone, stem_pool, dilate_conv5,
    image_size, drop_path_rate, backbone_overrides), from the backbone registry."""
    return registry.family(config.backbone).torch_backbone(config)


def stem(model, x):
    """Before the first stage: ResNet conv1-bn1-relu-maxpool, DenseNet conv0-norm0-relu0-pool0,
    Swin patch embedding (→ NHWC)."""
    if hasattr(model, "layer1"):
        return model.maxpool(model.relu(model.bn1(model.conv1(x))))
    if hasattr(model, "features"):
        f = model.features
        return f.pool0(f.relu0(f.norm0(f.conv0(x))))
    return model.patch_embed(x)


def stage(model, i: int, x):
    """Stage i = 1..4."""
    if hasattr(model, "layer1"):
        return getattr(model, f"layer{i}")(x)
    if hasattr(model, "features"):
        f = model.features
        if i > 1:
            x = getattr(f, f"transition{i - 1}")(x)
        x = getattr(f, f"denseblock{i}")(x)
        return torch.relu(f.norm5(x)) if i == 4 else x
    return model.layers[i - 1](x)


def record_attention(swin, stage_index: int) -> list:
    """Make the blocks of Swin stage `stage_index` (1-based) compute attention explicitly and
    append each block's post-softmax attention (B·windows, heads, N, N) to the returned list on
    every forward."""
    store = []
    for block in swin.layers[stage_index - 1].blocks:
        block.attn.fused_attn = False
        block.attn.softmax.register_forward_hook(lambda m, i, out: store.append(out))
    return store


def widths(model) -> tuple[int, ...]:
    """Output channels of stages 1..4."""
    if hasattr(model, "layer1"):
        return tuple(_last_out(getattr(model, f"layer{i}")) for i in range(1, 5))
    if hasattr(model, "features"):
        f = model.features
        out = [
            f.transition1.norm.num_features,
            f.transition2.norm.num_features,
            f.transition3.norm.num_features,
            f.norm5.num_features,
        ]
        return tuple(out)
    return tuple(info["num_chs"] for info in model.feature_info)


def _last_out(layer) -> int:
    block = layer[-1]
    return (block.bn3 if hasattr(block, "bn3") else block.bn2).num_features
