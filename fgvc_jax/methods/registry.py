"""Methods by name. Each method's config fields and their defaults are its own
(`Method.defaults(size)` in `methods/<name>.py`); this file only names them.

A method registers itself: its file calls `register("<name>", TheMethod)`. Every module of
this package is imported here, so its methods are registered whenever the registry is
imported; a method defined elsewhere is registered when its module is imported (its config
file imports it), and from then on the trainer, the tools and the sweeps over `METHODS` see it.

`size='full'` is the paper's model (ResNet-50 at 448, Swin-B at 384); `size='cpu'` the same
code at 64 px with a ResNet-18 or a small Swin (embed 32, depths 2-2-2-2, heads 1-2-4-8,
window 4), for the quick start and the tests."""

from __future__ import annotations

import importlib
import os
import pkgutil

import jax.numpy as jnp
import ml_collections

from fgvc_jax.methods.base import Method
from fgvc_jax.suggest import did_you_mean

METHODS: dict[str, type[Method]] = {}
SIZES = ("full", "cpu")


def register(name: str, method: type[Method]) -> type[Method]:
    """Add `method` (a `Method` subclass) under `name`; returns it. Registering the same class
    again (a re-import) is a no-op; a name taken by another class is an error."""
    if not (isinstance(method, type) and issubclass(method, Method)):
        raise TypeError(f"register({name!r}, {method!r}): not a Method subclass")
    old = METHODS.setdefault(name, method)
    key = lambda m: (m.__module__, m.__qualname__)
    if key(old) != key(method):
        raise ValueError(
            f"method {name!r} is already registered as {old.__module__}.{old.__qualname__}"
        )
    METHODS[name] = method
    return method


def has_paper_size(name: str) -> bool:
    """Whether the method's paper model differs from its CPU one (`defaults('full')` ≠
    `defaults('cpu')`); a method with one size only is its CPU model."""
    return METHODS[name].defaults("full") != METHODS[name].defaults("cpu")


def _check_name(name: str) -> None:
    if name not in METHODS:
        raise ValueError(
            f"unknown method {name!r}; valid methods: {', '.join(sorted(METHODS))}."
            + did_you_mean(name, METHODS)
        )


def default_config(name: str, size: str = "full") -> ml_collections.ConfigDict:
    """`config.method` of method `name`: every field at the method's default."""
    _check_name(name)
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r} for method {name!r}; valid: {', '.join(SIZES)}")
    return ml_collections.ConfigDict(
        dict(name=name, size=size, label_smoothing=0.0, **METHODS[name].defaults(size))
    )


def create(config: ml_collections.ConfigDict, num_classes: int, dtype=jnp.float32) -> Method:
    """The Method named by `config.name`, computing in `dtype`. Unknown fields are an error;
    missing ones (a run's config written before the field existed) take their defaults."""
    name = config.get("name", None)
    _check_name(name)
    defaults = default_config(name, config.get("size", "full"))
    extra = sorted(set(config) - set(defaults))
    if extra:
        raise ValueError(
            f"method {name!r} has no config field(s) {extra}; "
            f"valid fields: {', '.join(sorted(defaults))}"
        )
    missing = set(defaults) - set(config)
    if missing:
        config = ml_collections.ConfigDict(
            {**config.to_dict(), **{k: defaults[k] for k in sorted(missing)}}
        )
    return METHODS[name](config, num_classes, dtype)


for _module in sorted(m.name for m in pkgutil.iter_modules([os.path.dirname(__file__)])):
    importlib.import_module(f"{__package__}.{_module}")
