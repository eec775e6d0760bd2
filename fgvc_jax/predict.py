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
import sys

import jax
import numpy as np
from absl import flags

from fgvc_jax.run.trained import Trained
from fgvc_jax.tools import cli_common, image_files


def printable(name: str) -> str:
    """`name` with control characters escaped (a newline in a file name is `\\n`), so that
    each file is one line of the text output (the JSON output keeps names as they are)."""
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in name)


def make_probs_fn(trained: Trained):
    """Jitted (variables, uint8 images) → the method's combined probabilities (B, K)."""
    method = trained.method

    def fn(variables, images):
        out = method.network.apply(variables, trained.normalize(images), train=False)
        return method.scores(out)["combined"]

    return jax.jit(fn)


def predict_arrays(trained: Trained, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Combined probabilities (N, K) of uint8 images (N, C, C, 3), in padded batches."""
    fn = make_probs_fn(trained)
    return image_files.in_batches(lambda x: fn(trained.variables, x), images, batch_size)


def predict_files(
    trained: Trained,
    paths: list[str],
    top_k: int = 5,
    batch_size: int = 32,
    skip_unreadable: bool = False,
) -> list[dict]:
    """[{'file', 'top': [{'class', 'index', 'prob'}...]}] for the image files `paths`."""
    images, ok, _ = image_files.load_images(
        image_files.expand_paths(paths), trained.config, skip_unreadable
    )
    probs = predict_arrays(trained, images, batch_size)
    k = min(top_k, probs.shape[-1])
    results = []
    for path, p in zip(ok, probs):
        idx = np.argsort(-p, kind="stable")[:k]
        results.append(
            {
                "file": path,
                "top": [
                    {"class": trained.class_names[i], "index": int(i), "prob": float(p[i])}
                    for i in idx
                ],
            }
        )
    return results


def main(argv) -> None:
    flags = cli_common.FLAGS
    try:
        paths = cli_common.image_paths(argv, "predict")  # fail before loading the model
        trained = cli_common.load_trained()
        results = predict_files(
            trained, paths, flags.top_k, flags.batch_size, flags.skip_unreadable
        )
    except Exception as e:
        cli_common.fail(e)
    if flags.skip_unreadable and len(results) < len(paths):
        done = {r["file"] for r in results}
        print(
            "skipped unreadable: " + ", ".join(printable(p) for p in paths if p not in done),
            file=sys.stderr,
        )
    for r in results:
        print(
            printable(r["file"])
            + ": "
            + ", ".join(f"{t['class']} {t['prob']:.3f}" for t in r["top"])
        )
    if flags.json:
        with open(flags.json, "w") as f:
            json.dump(results, f, indent=2)


def run() -> None:
    def define_flags():
        flags.DEFINE_integer("top_k", 5, "How many classes to print per image.")
        flags.DEFINE_integer("batch_size", 32, "Images per device batch.")
        flags.DEFINE_boolean("skip_unreadable", False, "Skip unreadable images with a warning.")
        flags.DEFINE_string("json", "", "Also write the predictions to this JSON file.")

    cli_common.run(main, define_flags)


if __name__ == "__main__":
    run()
