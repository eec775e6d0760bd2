"""DenseNet-121/161/169/201 (DenseNet-BC, Huang et al. 2017) with torchvision's layout and
numerics.

Parameter names mirror torchvision's state-dict keys (`features/denseblock1/denselayer1/conv1/
kernel` ⇔ `features.denseblock1.denselayer1.conv1.weight`, `classifier` ⇔ `classifier`), so
the converter is a rename. Dense layer: BN → ReLU → 1x1 conv (bn_size·k) → BN → ReLU → 3x3
conv (k), its output concatenated to its input; transition: BN → ReLU → 1x1 conv (halves the
channels) → 2x2 average pooling, stride 2. torch-semantics BatchNorm (eps 1e-5, momentum 0.1);
no dropout (torchvision's default drop_rate 0).

Stage-wise access, like the ResNet: `stem` (conv0, norm0, relu0, pool0), `stage(i)` for
i = 1..4, `head`. Choices:
- stage i = transition{i-1} (i > 1) then denseblock{i}, so that stage outputs are the dense
  blocks' outputs (where CRA-SMRA puts its channel re-attention: denseblock2, 3, 4);
- stage 4 also applies norm5 and ReLU: torchvision's `features` ends in norm5 and its forward
  applies F.relu before pooling, so `head(stage(4, ...))` gives torchvision's logits;
- conv kernels initialise as the ResNet's (He normal, fan-out) where torchvision's DenseNet
  uses fan-in; the classifier as flax's Dense. Only training from scratch sees the difference.
"""

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from fgvc_jax.backbones.batch_norm import BatchNorm
from fgvc_jax.backbones.resnet import conv, max_pool


class DenseLayer(nn.Module):
    """torchvision `_DenseLayer` on the concatenated features: → (B, H, W, growth_rate)."""

    growth_rate: int
    bn_size: int
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        y = nn.relu(BatchNorm(name="norm1", **kw)(x, train))
        y = conv(self.bn_size * self.growth_rate, 1, name="conv1", **kw)(y)
        y = nn.relu(BatchNorm(name="norm2", **kw)(y, train))
        return conv(self.growth_rate, 3, name="conv2", **kw)(y)


class DenseBlock(nn.Module):
    """torchvision `_DenseBlock`: layers 'denselayer1', ...; each sees every earlier output."""

    num_layers: int
    growth_rate: int
    bn_size: int
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        for j in range(self.num_layers):
            layer = DenseLayer(self.growth_rate, self.bn_size, name=f"denselayer{j + 1}", **kw)
            x = jnp.concatenate([x, layer(x, train)], axis=-1)
        return x


class Transition(nn.Module):
    """torchvision `_Transition`: BN → ReLU → 1x1 conv → AvgPool2d(2, 2) (floors odd sizes)."""

    features: int
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = nn.relu(BatchNorm(name="norm", **kw)(x, train))
        x = conv(self.features, 1, name="conv", **kw)(x)
        return nn.avg_pool(x, (2, 2), (2, 2), padding="VALID")


class DenseNetFeatures(nn.Module):
    """torchvision `DenseNet.features`: conv0, norm0, denseblock{i}, transition{i}, norm5."""

    growth_rate: int
    block_config: Sequence[int]
    num_init_features: int
    bn_size: int
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def setup(self):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        self.conv0 = conv(self.num_init_features, 7, 2, **kw)
        self.norm0 = BatchNorm(**kw)
        width = self.num_init_features
        for i, n in enumerate(self.block_config):
            if i:
                width //= 2
                setattr(self, f"transition{i}", Transition(width, **kw))
            setattr(self, f"denseblock{i + 1}", DenseBlock(n, self.growth_rate, self.bn_size, **kw))
            width += n * self.growth_rate
        self.norm5 = BatchNorm(**kw)

    def stem(self, x, train: bool):
        return max_pool(nn.relu(self.norm0(self.conv0(x), train)), 3, 2)

    def stage(self, i: int, x, train: bool):
        if i > 1:
            x = getattr(self, f"transition{i - 1}")(x, train)
        x = getattr(self, f"denseblock{i}")(x, train)
        if i == len(self.block_config):
            x = nn.relu(self.norm5(x, train))
        return x


class DenseNet(nn.Module):
    growth_rate: int = 32
    block_config: Sequence[int] = (6, 12, 24, 16)
    num_init_features: int = 64
    bn_size: int = 4
    num_classes: int = 0
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @property
    def stage_channels(self) -> tuple[int, ...]:
        """Output width of each stage (the dense blocks'; transitions halve the width)."""
        out, width = [], self.num_init_features
        for i, n in enumerate(self.block_config):
            width = (width // 2 if i else width) + n * self.growth_rate
            out.append(width)
        return tuple(out)

    def setup(self):
        if len(self.block_config) != 4:
            raise ValueError(f"block_config={tuple(self.block_config)}; expected 4 dense blocks")
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        self.features = DenseNetFeatures(
            self.growth_rate, tuple(self.block_config), self.num_init_features, self.bn_size, **kw
        )
        if self.num_classes:
            self.classifier = nn.Dense(self.num_classes, **kw)

    def stem(self, x, train: bool = False):
        """conv0 → norm0 → ReLU → max-pool: (B, H, W, 3) → (B, H/4, W/4, num_init_features)."""
        return self.features.stem(x.astype(self.dtype), train)

    def stage(self, i: int, x, train: bool = False):
        """i = 1..4: transition{i-1} (i > 1), denseblock{i}; stage 4 then norm5 → ReLU."""
        return self.features.stage(i, x, train)

    def head(self, x):
        """Global average pooling, then the classifier when num_classes > 0."""
        x = jnp.mean(x, axis=(1, 2))
        return self.classifier(x) if self.num_classes else x

    def __call__(self, x, train: bool = False):
        x = self.stem(x, train)
        for i in range(1, len(self.block_config) + 1):
            x = self.stage(i, x, train)
        return self.head(x)


ARCHS = {
    # name: (growth_rate, block_config, num_init_features), bn_size 4 (torchvision)
    "densenet121": (32, (6, 12, 24, 16), 64),
    "densenet161": (48, (6, 12, 36, 24), 96),
    "densenet169": (32, (6, 12, 32, 32), 64),
    "densenet201": (32, (6, 12, 48, 32), 64),
}


def densenet(arch: str, **kwargs) -> DenseNet:
    if arch not in ARCHS:
        raise ValueError(f"unknown DenseNet arch {arch!r}; expected one of {sorted(ARCHS)}")
    k, blocks, init = ARCHS[arch]
    return DenseNet(growth_rate=k, block_config=blocks, num_init_features=init, **kwargs)


densenet121 = functools.partial(densenet, "densenet121")
densenet161 = functools.partial(densenet, "densenet161")
densenet169 = functools.partial(densenet, "densenet169")
densenet201 = functools.partial(densenet, "densenet201")
