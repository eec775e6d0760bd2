"""Classify image files: `python -m fgvc_jax.predict --workdir DIR [--config C] IMAGE...`.

Prints the top-k class names with the method's combined probabilities for each image (a
folder argument means the image files in it). Images are preprocessed as in evaluation
(resize, center crop) and run in fixed-size batches (the last one padded, so one compilation
serves any number of files), on whatever device JAX uses (`--platform cpu|gpu`).
Unreadable images are named in one error before anything runs (or skipped with
`--skip_unreadable`).
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np

from fgvc_jax.trained import ToolError, Trained

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def expand_paths(paths: list[str]) -> list[str]:
    """Files as given; folders → their image files (sorted). Missing paths are an error."""
    out, missing = [], []
    for p in paths:
        if os.path.isdir(p):
            out += sorted(os.path.join(p, f) for f in os.listdir(p)
                          if f.lower().endswith(IMAGE_EXTENSIONS))
        elif os.path.isfile(p):
            out.append(p)
        else:
            missing.append(p)
    if missing:
        raise ToolError("no such file: " + ", ".join(missing))
    if not out:
        raise ToolError("no images given (pass image files or folders of images).")
    return out


def load_images(paths: list[str], config, skip_unreadable: bool = False
                ) -> tuple[np.ndarray, list[str], list[str]]:
    """(uint8 (N, C, C, 3) eval-preprocessed images, their paths, unreadable paths).
    Raises one ToolError naming every unreadable file unless `skip_unreadable`."""
    from fgvc_jax.data import preprocess

    aug = preprocess.Augment.eval(config.data)
    images, ok, bad = [], [], []
    for p in paths:
        try:
            with open(p, "rb") as f:
                images.append(preprocess.eval_image(f.read(), aug))
            ok.append(p)
        except Exception as e:  # PIL.UnidentifiedImageError, OSError, truncated files, ...
            bad.append(f"{p} ({type(e).__name__}: {e})")
    if bad and not skip_unreadable:
        raise ToolError("cannot read image(s): " + "; ".join(bad))
    if not ok:
        raise ToolError("none of the images could be read: " + "; ".join(bad))
    return np.stack(images), ok, bad


def make_probs_fn(trained: Trained):
    """Jitted (variables, uint8 images) → the method's combined probabilities (B, K)."""
    import jax
    import jax.numpy as jnp

    method = trained.method

    def fn(variables, images):
        out = method.network.apply(variables, trained.normalize(images), train=False)
        return method.predict(out).astype(jnp.float32)

    return jax.jit(fn)


def predict_arrays(trained: Trained, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Combined probabilities (N, K) of uint8 images (N, C, C, 3), in padded batches."""
    import jax

    fn = make_probs_fn(trained)
    n = len(images)
    bs = max(1, min(batch_size, n))
    out = []
    for start in range(0, n, bs):
        chunk = images[start:start + bs]
        pad = bs - len(chunk)
        if pad:
            chunk = np.concatenate([chunk, np.zeros((pad,) + chunk.shape[1:], chunk.dtype)])
        out.append(np.asarray(jax.device_get(fn(trained.variables, chunk)))[:bs - pad])
    return np.concatenate(out)


def predict_files(trained: Trained, paths: list[str], top_k: int = 5, batch_size: int = 32,
                  skip_unreadable: bool = False) -> list[dict]:
    """[{'file', 'top': [{'class', 'index', 'prob'}...]}] for the image files `paths`."""
    images, ok, _ = load_images(expand_paths(paths), trained.config, skip_unreadable)
    probs = predict_arrays(trained, images, batch_size)
    k = min(top_k, probs.shape[-1])
    results = []
    for path, p in zip(ok, probs):
        idx = np.argsort(-p, kind="stable")[:k]
        results.append({"file": path, "top": [
            {"class": trained.class_names[i], "index": int(i), "prob": float(p[i])}
            for i in idx]})
    return results


def main(argv) -> None:
    from fgvc_jax import cli_common

    flags = cli_common.FLAGS
    try:
        paths = cli_common.image_paths(argv, "predict")  # fail before loading the model
        trained = cli_common.load_trained()
        results = predict_files(trained, paths, flags.top_k, flags.batch_size,
                                flags.skip_unreadable)
    except Exception as e:
        cli_common.fail(e)
    if flags.skip_unreadable and len(results) < len(paths):
        done = {r["file"] for r in results}
        print("skipped unreadable: " + ", ".join(p for p in paths if p not in done),
              file=sys.stderr)
    for r in results:
        print(r["file"] + ": " + ", ".join(f"{t['class']} {t['prob']:.3f}" for t in r["top"]))
    if flags.json:
        with open(flags.json, "w") as f:
            json.dump(results, f, indent=2)


def run() -> None:
    from absl import flags

    from fgvc_jax import cli_common

    def define_flags():
        flags.DEFINE_integer("top_k", 5, "How many classes to print per image.")
        flags.DEFINE_integer("batch_size", 32, "Images per device batch.")
        flags.DEFINE_boolean("skip_unreadable", False, "Skip unreadable images with a warning.")
        flags.DEFINE_string("json", "", "Also write the predictions to this JSON file.")

    cli_common.run(main, define_flags)


if __name__ == "__main__":
    run()
