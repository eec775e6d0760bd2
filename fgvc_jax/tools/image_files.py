"""The tools' images: files named on the command line (folders expanded), read and
preprocessed as in evaluation, and run through a jitted function in fixed-size batches."""

from __future__ import annotations

import os
from collections.abc import Callable

import jax
import numpy as np

from fgvc_jax.data import preprocess
from fgvc_jax.data.errors import DataError
from fgvc_jax.data.images import IMAGE_EXTENSIONS, reason
from fgvc_jax.run.trained import ToolError


def expand_paths(paths: list[str]) -> list[str]:
    """Files as given; folders → their image files (sorted; hidden files skipped). Missing
    paths are an error; a symbolic link that does not resolve (dangling, a loop) is kept, so
    that reading it names why (and --skip_unreadable skips it)."""
    out, missing = [], []
    for p in paths:
        if os.path.isdir(p):
            found = sorted(
                os.path.join(p, f)
                for f in os.listdir(p)
                if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith(".")
            )
            if not found:
                raise ToolError(
                    f"folder {os.path.abspath(p)} has no image files: expected "
                    f"{os.path.join(p, '*.jpg')} (or {', '.join(IMAGE_EXTENSIONS[1:])}); "
                    "sub-folders are not searched."
                )
            out += found
        elif os.path.isfile(p) or os.path.islink(p):  # a broken link or loop: named on read
            out.append(p)
        else:
            missing.append(p)
    if missing:
        raise ToolError("no such file: " + ", ".join(missing))
    if not out:
        raise ToolError("no images given (pass image files or folders of images).")
    return out


def load_images(
    paths: list[str], config, skip_unreadable: bool = False
) -> tuple[np.ndarray, list[str], list[str]]:
    """(uint8 (N, C, C, 3) eval-preprocessed images, their paths, unreadable paths).
    Raises one ToolError naming every unreadable file unless `skip_unreadable`."""
    aug = preprocess.Augment.eval(config.data)
    images, ok, bad = [], [], []
    for p in paths:
        try:
            with open(p, "rb") as f:
                images.append(preprocess.eval_image(f.read(), aug))
            ok.append(p)
        except DataError as e:  # "Cannot read image <image bytes>: why"
            bad.append(f"{p} ({str(e).split(': ', 1)[-1]})")
        except Exception as e:  # OSError, truncated files, ...
            bad.append(f"{p} ({reason(e)})")
    if bad and not skip_unreadable:
        raise ToolError("cannot read image(s): " + "; ".join(bad))
    if not ok:
        raise ToolError("none of the images could be read: " + "; ".join(bad))
    return np.stack(images), ok, bad


def in_batches(fn: Callable, images: np.ndarray, batch_size: int):
    """`fn(images)` over fixed-size batches (the last one zero-padded, so that one
    compilation serves any number of images), outputs concatenated as numpy."""
    bs = max(1, min(batch_size, len(images)))
    chunks = []
    for start in range(0, len(images), bs):
        chunk = images[start : start + bs]
        pad = bs - len(chunk)
        if pad:
            chunk = np.concatenate([chunk, np.zeros((pad,) + chunk.shape[1:], chunk.dtype)])
        out = jax.device_get(fn(chunk))
        chunks.append(jax.tree.map(lambda a: np.asarray(a)[: bs - pad], out))
    return jax.tree.map(lambda *a: np.concatenate(a), *chunks)
