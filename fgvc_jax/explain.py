"""Explain predictions: `python -m fgvc_jax.explain --workdir DIR [--config C] IMAGE...`.

Writes one PNG grid per image into `--out` (default `<workdir>/explain`): the image, the
Grad-CAM of each stage (`fgvc_jax.tools.gradcam`) for the predicted class, and what the method
itself attends to: the maps its network returns with `explain=True` (`Outputs.aux['maps']`,
documented in each method's module: MA-EA's MA maps and erased regions, CRA-SMRA's CRAM
outputs and SMRAM maps, SwinFC's stage-4 attention and FSM-selected patches).
Every map is upsampled to the image and min-max normalised per image for display.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from fgvc_jax.run.trained import Trained
from fgvc_jax.tools import cli_common, gradcam, image_files

NEAREST = ("FSM patches",)  # counts per patch: drawn as blocks, not interpolated


def _resize01(maps, size: int, method: str):
    """(B, h, w) → (B, size, size) in [0, 1] per image."""
    m = jax.image.resize(maps.astype(jnp.float32), (maps.shape[0], size, size), method)
    lo = jnp.min(m, axis=(1, 2), keepdims=True)
    hi = jnp.max(m, axis=(1, 2), keepdims=True)
    return (m - lo) / jnp.maximum(hi - lo, 1e-12)


def make_explain_fn(trained: Trained):
    """Jitted (variables, uint8 images) → {'probs', 'targets', 'maps': {title: (B, S, S)}},
    Grad-CAM titles first ('Grad-CAM <stage>'), then the method's maps."""
    size = trained.image_size

    def fn(variables, images):
        cams, scores, targets, method_maps = gradcam.grad_cam(
            trained.method, variables, trained.normalize(images)
        )
        maps = {f"Grad-CAM {k}": _resize01(v, size, "bilinear") for k, v in cams.items()}
        for k, v in method_maps.items():
            maps[k] = _resize01(v, size, "nearest" if k in NEAREST else "bilinear")
        return {"probs": scores["combined"], "targets": targets, "maps": maps}

    return jax.jit(fn)


def explain_arrays(trained: Trained, images: np.ndarray, batch_size: int = 8) -> dict:
    """Maps of uint8 images (N, S, S, 3): {'probs': (N, K), 'targets': (N,), 'maps':
    {title: (N, S, S)}} as numpy."""
    fn = make_explain_fn(trained)
    return image_files.in_batches(lambda x: fn(trained.variables, x), images, batch_size)


def plot_grid(image: np.ndarray, maps: dict[str, np.ndarray], title: str, path: str) -> None:
    """The image, then each map overlaid on it (jet, alpha 0.5), 4 panels per row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("input", None)] + list(maps.items())
    cols = min(4, len(panels))
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3 * rows + 0.4), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (name, m) in zip(axes.ravel(), panels):
        ax.imshow(image)
        if m is not None:
            ax.imshow(m, cmap="jet", alpha=0.5, vmin=0, vmax=1)
        ax.set_title(name, fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def explain_files(
    trained: Trained,
    paths: list[str],
    out_dir: str,
    batch_size: int = 8,
    skip_unreadable: bool = False,
) -> list[str]:
    """Write one PNG grid per readable image into `out_dir`; returns the PNG paths."""
    images, ok, _ = image_files.load_images(
        image_files.expand_paths(paths), trained.config, skip_unreadable
    )
    result = explain_arrays(trained, images, batch_size)
    os.makedirs(out_dir, exist_ok=True)
    written, seen = [], set()
    for i, path in enumerate(ok):
        stem = os.path.splitext(os.path.basename(path))[0]
        name, n = stem, 1
        while name in seen:
            n += 1
            name = f"{stem}_{n}"
        seen.add(name)
        t = int(result["targets"][i])
        title = (
            f"{os.path.basename(path)}: {trained.class_names[t]} "
            f"({result['probs'][i, t]:.3f}) — {trained.config.method.name}"
        )
        png = os.path.join(out_dir, f"explain_{name}.png")
        plot_grid(images[i], {k: v[i] for k, v in result["maps"].items()}, title, png)
        written.append(png)
    return written


def main(argv) -> None:
    flags = cli_common.FLAGS
    try:
        paths = cli_common.image_paths(argv, "explain")
        trained = cli_common.load_trained()
        out = flags.out or os.path.join(trained.workdir, "explain")
        written = explain_files(trained, paths, out, flags.batch_size, flags.skip_unreadable)
    except Exception as e:
        cli_common.fail(e)
    print("\n".join(written))


def run() -> None:
    def define_flags():
        flags.DEFINE_string("out", "", "Folder for the PNGs (default: <workdir>/explain).")
        flags.DEFINE_integer("batch_size", 8, "Images per batch.")
        flags.DEFINE_boolean("skip_unreadable", False, "Skip unreadable images with a warning.")

    cli_common.run(main, define_flags)


if __name__ == "__main__":
    run()
