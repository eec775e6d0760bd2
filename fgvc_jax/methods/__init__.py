"""The published methods (docs/methods.md) behind the `Method` contract; look them up by name
with `fgvc_jax.methods.registry.create(config.method, num_classes)`."""

from fgvc_jax.methods.base import Method, Outputs
from fgvc_jax.methods.registry import METHODS, create, default_config

__all__ = ["Method", "Outputs", "METHODS", "create", "default_config"]
