"""The Method contract: everything that makes a paper a paper.

A method owns its settings (`defaults`: every config field with its default, defined once in
`methods/<name>.py`), its network (a flax.linen Module that drives the backbone stage by
stage), its loss (a total plus named terms so that each is logged), its prediction rule
(`predict`, and `scores`: every head plus the combined prediction, what evaluation and every
tool use), and its parameter groups (regex on the '/'-joined parameter path → learning-rate
group). The trainer knows nothing of any particular method.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import ml_collections

from fgvc_jax.runtime.precision import upcast

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@flax.struct.dataclass
class Outputs:
    """What a method's network returns.

    logits: named heads, each (B, K); aux: what the loss needs (e.g. 'smram', 'fsm') and,
    when the network is called with `explain=True`, `aux['maps']`: the method's own maps for
    display, {title: (B, h, w)} (attention, erased regions, selected patches)."""

    logits: Mapping[str, jax.Array]
    aux: Mapping[str, Any] = flax.struct.field(default_factory=dict)


class Method(abc.ABC):
    """A published method: network + loss + prediction rule + parameter groups.

    Built as `Method(config.method, num_classes, dtype)`: `config.method` holds the fields of
    `defaults(size)` (the paper's choices), `dtype` is the run's compute dtype (decided once by
    the trainer from `config.train.dtype`; parameters stay float32).
    """

    #: Per-channel mean/std (in [0, 1] units) images are normalised with on the device: the
    #: backbone's pretraining statistics, or what `config.data.normalization` names (a run's
    #: `Recipe` sets them, `fgvc_jax.recipe.normalization`).
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    #: The PyTorch twin checked against this method ("module:Class", built as
    #: `Class(config.method, num_classes)`, see `fgvc_jax.reference.twin`); None: none.
    twin: str | None = None

    def __init__(
        self, config: ml_collections.ConfigDict, num_classes: int, dtype: Any = jnp.float32
    ):
        self.config = config
        self.num_classes = num_classes
        self.dtype = dtype

    @classmethod
    def defaults(cls, size: str) -> dict:
        """Every config field of the method with its default, for `size` 'full' (the paper's
        model) or 'cpu' (the same code, CPU-sized)."""
        raise NotImplementedError(f"{cls.__name__} defines no defaults")

    @property
    @abc.abstractmethod
    def network(self) -> nn.Module:
        """Module with `__call__(images, train: bool, explain: bool = False) -> Outputs`
        (`explain=True` adds `aux['maps']`); its backbone is the
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
    def loss(
        self, outputs: Outputs, labels: jax.Array, targets: jax.Array | None = None
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Scalar training loss and its named terms (each a scalar, for logging). `labels`
        (B,) int; `targets` (B, K) soft class targets when the batch is mixed (mixup /
        CutMix: the cross-entropies use them; terms that need one class, e.g. SwinFC's
        contrastive loss, keep `labels`, the dominant class)."""

    def predict(self, outputs: Outputs) -> jax.Array:
        """The method's combined prediction as class probabilities (B, K)."""
        return jax.nn.softmax(outputs.logits["main"], axis=-1)

    def scores(self, outputs: Outputs) -> dict[str, jax.Array]:
        """Every head's logits and 'combined' (the `predict` probabilities), float32 (B, K):
        what evaluation, the tools and Grad-CAM rank classes by."""
        out = {k: upcast(v) for k, v in outputs.logits.items()}
        out["combined"] = upcast(self.predict(outputs))
        return out

    def param_groups(self) -> dict[str, str]:
        """Learning-rate group name → regex matched (re.search) against the '/'-joined
        parameter path; the first matching group wins, unmatched parameters go to 'new'."""
        return {"backbone": r"^backbone/", "new": r".*"}
