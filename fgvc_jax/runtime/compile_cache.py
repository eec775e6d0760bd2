"""JAX's persistent compilation cache: a resume, or a tool run on the same program, loads the
compiled executable from disk instead of compiling again.

`enable(workdir)` puts the cache in `<workdir>/jax_cache`; `enable(None)` (what the trainer
and the tools use: a mistyped workdir is never created) in `$FGVC_JAX_CACHE` or else
`~/.cache/fgvc_jax/jax_cache` (shared by every run of the user).
Every program is cached, however fast it compiled (JAX's default keeps only those over 1 s):
the train step, the eval step and the small jitted helpers of a start-up alike.
"""

from __future__ import annotations

import os

import jax

ENV_VAR = "FGVC_JAX_CACHE"
DEFAULT_DIR = os.path.join("~", ".cache", "fgvc_jax", "jax_cache")
SUBDIR = "jax_cache"


def cache_dir(workdir: str | None = None) -> str:
    """The cache folder `enable(workdir)` uses (absolute, user expanded)."""
    if workdir:
        path = os.path.join(workdir, SUBDIR)
    else:
        path = os.environ.get(ENV_VAR) or DEFAULT_DIR
    return os.path.abspath(os.path.expanduser(path))


def enable(workdir: str | None = None) -> str:
    """Turn the persistent compilation cache on (before the first compile); returns its
    folder."""
    path = cache_dir(workdir)
    os.makedirs(path, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path
