"""The Method contract: everything that makes a paper a paper (DESIGN.md, "The Method contract").

A method owns its network (a flax.linen Module that drives the backbone stage by stage), its
loss (a total plus named terms so that each is logged), its prediction rule, and its parameter
groups (regex on the '/'-joined parameter path → learning-rate group). The trainer knows
nothing of any particular method.
"""
from __future__ import annotations

import abc
from typing import Any, Mapping

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import ml_collections

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@flax.struct.dataclass
class Outputs:
    """What a method's network returns.

    logits: named heads, each (B, K); aux: anything the loss or the explainer needs
    (attention maps, selected features, ...)."""

    logits: Mapping[str, jax.Array]
    aux: Mapping[str, Any] = flax.struct.field(default_factory=dict)


class Method(abc.ABC):
    """A published method: network + loss + prediction rule + parameter groups.

    Subclasses are built from `config.method` (an ml_collections.ConfigDict whose fields are
    the METHODS.md choices) and the number of classes.
    """

    #: Per-channel mean/std (in [0, 1] units) of the backbone's pretraining; images are
    #: normalised on the device with these.
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __init__(self, config: ml_collections.ConfigDict, num_classes: int):
        self.config = config
        self.num_classes = num_classes

    @property
    @abc.abstractmethod
    def network(self) -> nn.Module:
        """Module with `__call__(images, train: bool) -> Outputs`; its backbone is the
        submodule named 'backbone' (so converted PyTorch weights go under
        `params['backbone']` and `batch_stats['backbone']`)."""

    @property
    def backbone_arch(self) -> str | None:
        """Name of the pretrained architecture (`fgvc_jax.convert` arch) the backbone loads."""
        return None

    @property
    def backbone_kwargs(self) -> dict:
        """Backbone constructor overrides beyond the arch (e.g. img_size, stem_pool) that the
        converter needs to build the same backbone: `load_pretrained(arch, path, 0, **kw)`."""
        return {}

    @abc.abstractmethod
    def loss(self, outputs: Outputs, labels: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Scalar training loss and its named terms (each a scalar, for logging)."""

    def predict(self, outputs: Outputs) -> jax.Array:
        """The method's combined prediction as class probabilities (B, K)."""
        return jax.nn.softmax(outputs.logits["main"], axis=-1)

    def param_groups(self) -> dict[str, str]:
        """Learning-rate group name → regex matched (re.search) against the '/'-joined
        parameter path; the first matching group wins, unmatched parameters go to 'new'."""
        return {"backbone": r"^backbone/", "new": r".*"}
