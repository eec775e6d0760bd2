"""ResNet-18/34/50/101/152 with torchvision's layout and numerics (docs/methods.md §0).

v1.5 layout (stride on the 3x3 conv of a bottleneck), explicit symmetric padding exactly as
torchvision (not 'SAME'), torch-semantics BatchNorm (eps 1e-5, momentum 0.1). Parameter names
mirror torchvision's state-dict keys (`layer1/0/conv1/kernel` ⇔ `layer1.0.conv1.weight`), so
the converter is a rename.

Stage-wise access, because methods act between stages: `stem`, `stage(i)` for i = 1..4
(torchvision `layer{i}` = docs/methods.md `conv{i+1}_x`), `head`. Options: `stem_pool`
('max' | 'multiscale', the MA-EA improved pooling, docs/methods.md §3) and `dilate_conv5`
(stride → dilation in conv5_x, torchvision's `replace_stride_with_dilation[2]`).
"""

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from fgvc_jax.backbones.batch_norm import BatchNorm
from fgvc_jax.backbones.conv import conv_general_dilated

# torchvision's kaiming_normal_(mode='fan_out', nonlinearity='relu').
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


class Conv(nn.Module):
    """torchvision's conv: no bias, symmetric padding dilation * (kernel // 2), HWIO kernel.

    A stride-1 1x1 conv is computed as a matmul over channels: the same numbers, and XLA:CPU
    runs its backward pass far faster than its convolution (BENCHMARKS.md, "ResNet-50 on CPU:
    where the time goes"). A strided 1x1 conv stays a convolution: as a matmul over
    `x[:, ::s, ::s]`, XLA:GPU's Triton GEMM fusion aborts the process (jax 0.10.2,
    `triton_tiling_propagation.cc` "subdim_size_accumulator == dim_size"). A kernel that
    reaches past the input (3x3 on a 2x2 map) runs as matmuls over its taps (`conv.py`)."""

    features: int
    kernel: int
    stride: int = 1
    dilation: int = 1
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        k, s, d = self.kernel, self.stride, self.dilation
        w = self.param("kernel", conv_init, (k, k, x.shape[-1], self.features), self.param_dtype)
        x, w = x.astype(self.dtype), w.astype(self.dtype)
        if k == 1 and s == 1:
            return jnp.einsum("nhwc,cd->nhwd", x, w[0, 0])
        p = d * (k // 2)
        return conv_general_dilated(
            x,
            w,
            (s, s),
            ((p, p), (p, p)),
            rhs_dilation=(d, d),
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )


def conv(
    features, kernel, stride=1, dilation=1, dtype=jnp.float32, param_dtype=jnp.float32, name=None
):
    return Conv(features, kernel, stride, dilation, dtype, param_dtype, name=name)


def max_pool(x, kernel, stride):
    """torch MaxPool2d(kernel, stride, padding=kernel // 2): pads with -inf."""
    p = kernel // 2
    return nn.max_pool(x, (kernel, kernel), (stride, stride), padding=((p, p), (p, p)))


def multiscale_pool(x):
    """MA-EA improved stem pooling (docs/methods.md §3, choice): mean of stride-2 max-pools with
    kernels 3, 5, 7 (padding k // 2); no parameters, scale-preserving."""
    return (max_pool(x, 3, 2) + max_pool(x, 5, 2) + max_pool(x, 7, 2)) / 3


class BasicBlock(nn.Module):
    planes: int
    stride: int = 1
    dilation: int = 1
    downsample: bool = False
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    expansion = 1

    @nn.compact
    def __call__(self, x, train: bool):
        c = functools.partial(conv, dtype=self.dtype, param_dtype=self.param_dtype)
        bn = functools.partial(BatchNorm, dtype=self.dtype, param_dtype=self.param_dtype)
        y = nn.relu(
            bn(name="bn1")(c(self.planes, 3, self.stride, self.dilation, name="conv1")(x), train)
        )
        y = bn(name="bn2")(c(self.planes, 3, 1, self.dilation, name="conv2")(y), train)
        if self.downsample:
            x = bn(name="downsample_1")(
                c(self.planes, 1, self.stride, name="downsample_0")(x), train
            )
        return nn.relu(y + x)


class Bottleneck(nn.Module):
    planes: int
    stride: int = 1
    dilation: int = 1
    downsample: bool = False
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    expansion = 4

    @nn.compact
    def __call__(self, x, train: bool):
        c = functools.partial(conv, dtype=self.dtype, param_dtype=self.param_dtype)
        bn = functools.partial(BatchNorm, dtype=self.dtype, param_dtype=self.param_dtype)
        y = nn.relu(bn(name="bn1")(c(self.planes, 1, name="conv1")(x), train))
        y = nn.relu(
            bn(name="bn2")(c(self.planes, 3, self.stride, self.dilation, name="conv2")(y), train)
        )
        y = bn(name="bn3")(c(self.planes * 4, 1, name="conv3")(y), train)
        if self.downsample:
            x = bn(name="downsample_1")(
                c(self.planes * 4, 1, self.stride, name="downsample_0")(x), train
            )
        return nn.relu(y + x)


BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


class ResNetStage(nn.Module):
    """torchvision `_make_layer`: blocks named '0', '1', ...; the first may downsample."""

    block: Any
    planes: int
    num_blocks: int
    in_channels: int
    stride: int
    dilate: bool
    previous_dilation: int
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        dilation = self.previous_dilation * (self.stride if self.dilate else 1)
        stride = 1 if self.dilate else self.stride
        downsample = stride != 1 or self.in_channels != self.planes * self.block.expansion
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = self.block(self.planes, stride, self.previous_dilation, downsample, name="0", **kw)(
            x, train
        )
        for j in range(1, self.num_blocks):
            x = self.block(self.planes, 1, dilation, name=str(j), **kw)(x, train)
        return x


class ResNet(nn.Module):
    stage_sizes: Sequence[int]
    block_cls_name: str = "bottleneck"
    num_classes: int = 0
    stem_pool: str = "max"
    dilate_conv5: bool = False
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @property
    def stage_channels(self) -> tuple[int, ...]:
        e = BLOCKS[self.block_cls_name].expansion
        return tuple(64 * 2**i * e for i in range(4))

    def setup(self):
        if self.block_cls_name not in BLOCKS:
            raise ValueError(
                f"block_cls_name={self.block_cls_name!r}; expected one of {sorted(BLOCKS)}"
            )
        if self.stem_pool not in ("max", "multiscale"):
            raise ValueError(f"stem_pool={self.stem_pool!r}; expected 'max' or 'multiscale'")
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        block = BLOCKS[self.block_cls_name]
        self.conv1 = conv(64, 7, 2, **kw)
        self.bn1 = BatchNorm(**kw)
        in_ch, dilation = 64, 1
        for i, n in enumerate(self.stage_sizes):
            dilate = self.dilate_conv5 and i == 3
            setattr(
                self,
                f"layer{i + 1}",
                ResNetStage(block, 64 * 2**i, n, in_ch, 1 if i == 0 else 2, dilate, dilation, **kw),
            )
            in_ch = 64 * 2**i * block.expansion
            dilation *= 2 if dilate else 1
        if self.num_classes:
            self.fc = nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=self.param_dtype)

    def stem(self, x, train: bool = False):
        """conv1 → bn1 → ReLU → pool: (B, H, W, 3) → (B, H/4, W/4, 64)."""
        x = nn.relu(self.bn1(self.conv1(x.astype(self.dtype)), train))
        return multiscale_pool(x) if self.stem_pool == "multiscale" else max_pool(x, 3, 2)

    def stage(self, i: int, x, train: bool = False):
        """torchvision `layer{i}` (i = 1..4), docs/methods.md `conv{i+1}_x`."""
        return getattr(self, f"layer{i}")(x, train)

    def head(self, x):
        """Global average pooling, then the classifier when num_classes > 0."""
        x = jnp.mean(x, axis=(1, 2))
        return self.fc(x) if self.num_classes else x

    def __call__(self, x, train: bool = False):
        x = self.stem(x, train)
        for i in range(1, len(self.stage_sizes) + 1):
            x = self.stage(i, x, train)
        return self.head(x)


ARCHS = {
    "resnet18": ((2, 2, 2, 2), "basic"),
    "resnet34": ((3, 4, 6, 3), "basic"),
    "resnet50": ((3, 4, 6, 3), "bottleneck"),
    "resnet101": ((3, 4, 23, 3), "bottleneck"),
    "resnet152": ((3, 8, 36, 3), "bottleneck"),
}


def resnet(arch: str, **kwargs) -> ResNet:
    if arch not in ARCHS:
        raise ValueError(f"unknown ResNet arch {arch!r}; expected one of {sorted(ARCHS)}")
    sizes, block = ARCHS[arch]
    return ResNet(stage_sizes=sizes, block_cls_name=block, **kwargs)


resnet18 = functools.partial(resnet, "resnet18")
resnet34 = functools.partial(resnet, "resnet34")
resnet50 = functools.partial(resnet, "resnet50")
resnet101 = functools.partial(resnet, "resnet101")
resnet152 = functools.partial(resnet, "resnet152")
