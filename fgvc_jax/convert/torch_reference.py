"""The PyTorch reference models (torchvision ResNet and DenseNet, timm Swin) and per-stage
outputs of both sides, for `python -m fgvc_jax.convert --check`, the parity tests and the
benchmarks.

The registry's torchvision 0.28.0 is a CUDA build: with the CPU torch 2.13.0 its import fails
with "operator torchvision::nms does not exist". Defining the two missing op schemas first lets
the pure-Python models import; compiled ops stay unavailable, model numerics are unaffected
(ENVIRONMENT.md). This is the only place that works around it.
"""

import flax.linen as nn
import jax
import numpy as np
import torch

_LIB = None


def _define_missing_torchvision_ops():
    global _LIB
    try:
        torch.ops.torchvision.nms  # noqa: B018
        return
    except (AttributeError, RuntimeError):
        pass
    _LIB = torch.library.Library("torchvision", "DEF")
    _LIB.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _LIB.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")


_define_missing_torchvision_ops()

import timm  # noqa: E402, F401  (re-exported: torch_import.modules)
import torchvision  # noqa: E402, F401

from fgvc_jax.backbones import registry  # noqa: E402

STAGES = ("stem", "stage1", "stage2", "stage3", "stage4", "logits")


def torch_model(arch: str, num_classes: int = 1000, **kwargs) -> torch.nn.Module:
    """The published PyTorch model of `arch` (torchvision or timm), randomly initialised."""
    return registry.family(arch).torch_model(arch, num_classes, **kwargs)


@torch.no_grad()
def torch_stages(model: torch.nn.Module, x_nhwc: np.ndarray) -> dict[str, np.ndarray]:
    """Per-stage outputs (NHWC) and logits of a torchvision ResNet or DenseNet, or timm Swin
    (DenseNet stages as fgvc_jax's: transition{i-1} + denseblock{i}, norm5 + ReLU in stage 4)."""
    x = torch.from_numpy(np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2)))
    out = {}
    if hasattr(model, "layer1"):
        x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
        out["stem"] = x
        for i in range(1, 5):
            x = getattr(model, f"layer{i}")(x)
            out[f"stage{i}"] = x
        out = {k: v.permute(0, 2, 3, 1) for k, v in out.items()}
        out["logits"] = model.fc(torch.flatten(model.avgpool(x), 1))
    elif hasattr(model, "features") and hasattr(model.features, "denseblock1"):
        f = model.features
        x = f.pool0(f.relu0(f.norm0(f.conv0(x))))
        out["stem"] = x
        for i in range(1, 5):
            x = getattr(f, f"transition{i - 1}")(x) if i > 1 else x
            x = getattr(f, f"denseblock{i}")(x)
            x = torch.relu(f.norm5(x)) if i == 4 else x
            out[f"stage{i}"] = x
        out = {k: v.permute(0, 2, 3, 1) for k, v in out.items()}
        out["logits"] = model.classifier(torch.mean(x, dim=(2, 3)))
    else:
        x = model.patch_embed(x)  # timm Swin is NHWC after the patch embedding
        out["stem"] = x
        for i in range(4):
            x = model.layers[i](x)
            out[f"stage{i + 1}"] = x
        out["logits"] = model.forward_head(model.norm(x))
    return {k: v.numpy() for k, v in out.items()}


def jax_stages(model: nn.Module, variables: dict, x_nhwc, train: bool = False) -> dict:
    """The same outputs from our flax backbone (eval mode unless train), as one jitted program
    (op-by-op dispatch of a DenseNet's hundreds of differently-shaped layers is slower)."""

    def f(m, x):
        out = {}
        x = m.stem(x, train) if hasattr(m, "stem") else m.embed(x)
        out["stem"] = x
        for i in range(1, 5):
            x = m.stage(i, x, train)
            out[f"stage{i}"] = x
        out["logits"] = m.head(x) if hasattr(m, "stem") else m.head(m.norm(x))
        return out

    return jax.jit(nn.apply(f, model))(variables, x_nhwc)


def max_relative_errors(ours: dict, ref: dict) -> dict[str, float]:
    """max |ours - ref| / max |ref| per output."""
    return {
        k: float(np.max(np.abs(np.asarray(ours[k]) - ref[k])) / np.max(np.abs(ref[k]))) for k in ref
    }
