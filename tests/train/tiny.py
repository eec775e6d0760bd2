"""A tiny test-local Method (conv + BatchNorm + dropout + two heads) for trainer tests that
must not depend on any real method."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from fgvc_jax.backbones.batch_norm import BatchNorm
from fgvc_jax.methods.base import Method, Outputs


class _Backbone(nn.Module):
    width: int = 8
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.Conv(self.width, (3, 3), strides=2, dtype=self.dtype, name="conv")(x)
        x = BatchNorm(dtype=self.dtype, name="bn")(x, train)
        return nn.relu(x)


class _Net(nn.Module):
    num_classes: int
    dropout: float = 0.1
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, images, train: bool):
        f = _Backbone(dtype=self.dtype, name="backbone")(images, train)
        v = f.mean(axis=(1, 2))
        v = nn.Dropout(self.dropout, deterministic=not train)(v)
        main = nn.Dense(self.num_classes, dtype=self.dtype, name="head")(v)
        aux = nn.Dense(self.num_classes, dtype=self.dtype, name="aux_head")(f.max(axis=(1, 2)))
        return Outputs(logits={"main": main, "aux": aux})


class TinyMethod(Method):
    """Two heads; loss = CE(main) + 0.5 CE(aux); prediction = mean of the two softmaxes."""

    def __init__(self, config: ml_collections.ConfigDict, num_classes: int):
        super().__init__(config, num_classes)
        self._net = _Net(
            num_classes,
            dropout=config.get("dropout", 0.1),
            dtype=jnp.dtype(config.get("dtype", "float32")),
        )

    @property
    def network(self):
        return self._net

    def loss(self, outputs, labels):
        ce = lambda z: optax.softmax_cross_entropy_with_integer_labels(
            z.astype(jnp.float32), labels
        ).mean()
        terms = {"ce_main": ce(outputs.logits["main"]), "ce_aux": ce(outputs.logits["aux"])}
        return terms["ce_main"] + 0.5 * terms["ce_aux"], terms

    def predict(self, outputs):
        p = [jax.nn.softmax(z.astype(jnp.float32), -1) for z in outputs.logits.values()]
        return sum(p) / len(p)

    def param_groups(self):
        return {"backbone": r"^backbone/", "heads": r"head/", "new": r".*"}


def method_config(**kw) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict({"name": "tiny", "dropout": 0.1, "dtype": "float32", **kw})
