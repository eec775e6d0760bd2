"""Explain predictions: `python -m fgvc_jax.explain --workdir DIR [--config C] IMAGE...`.

Writes one PNG grid per image into `--out` (default `<workdir>/explain`): the image, the
Grad-CAM of each stage (`fgvc_jax.gradcam`) for the predicted class, and what the method
itself attends to:
- MA-EA: each placement's MA hybrid map (mean_c M), EA's erased fraction
  1 − ‖F ⊗ M_erase‖_c / ‖F‖_c, and the second MA's map on the erased features;
- CRA-SMRA: each CRAM's enhanced output X_e (channel mean) and SMRAM's per-stage spatial
  softmax maps P_s (run on X_e with the trained SMRAM weights; it is a training-only branch);
- SwinFC: stage-4 attention (mean over blocks, heads and queries: the FSM column score a_j)
  and the FSM-selected patches (how many of the blocks x heads argmaxes fall on each patch).
Every map is upsampled to the image and min-max normalised per image for display.
"""
from __future__ import annotations

import os

import numpy as np

from fgvc_jax.trained import Trained

NEAREST = ("FSM patches",)


def _channel_mean(x):
    import jax.numpy as jnp
    return jnp.mean(x.astype(jnp.float32), axis=-1)


def method_maps(trained: Trained, variables: dict, extras: dict) -> dict:
    """The method's own maps {title: (B, h, w)} from the taps of one forward pass."""
    import jax.numpy as jnp

    from fgvc_jax.layers.erasure import erase_mask
    from fgvc_jax.layers.selection import select_tokens
    from fgvc_jax.layers.smram import SMRAM

    c, maps = trained.config.method, {}
    for key in sorted(k for k in extras if k.startswith("ma/")):
        f, m = extras[key]
        parts = key.split("/")[1:]  # e.g. maea_conv4/ma or maea_conv4/ma_erased1
        where = parts[0].replace("maea_", "")
        if parts[-1] == "ma":
            maps[f"MA {where}"] = _channel_mean(m)
            kept = f.astype(jnp.float32) * erase_mask(m, c.get("erase", "soft"),
                                                      c.get("erase_theta", 0.8))
            norm = lambda t: jnp.sqrt(jnp.sum(jnp.square(t.astype(jnp.float32)), -1))
            maps[f"EA erased {where}"] = 1.0 - norm(kept) / (norm(f) + 1e-6)
        else:
            maps[f"MA on erased {where} ({parts[-1].replace('ma_erased', 'round ')})"] = \
                _channel_mean(m)
    crams = sorted(k for k in extras if k.startswith("cram/"))
    for key in crams:
        maps[f"CRAM X_e conv{key[-1]}_x"] = _channel_mean(extras[key])
    if crams and "smram" in variables["params"]:
        smram_vars = {col: variables[col]["smram"] for col in variables
                      if "smram" in variables[col]}
        enhanced = [extras[k] for k in crams]
        probs = SMRAM(dtype=trained.dtype).apply(smram_vars, enhanced, False)
        b, h, w = probs.shape[0], enhanced[-1].shape[1], enhanced[-1].shape[2]
        for i, key in enumerate(crams):
            maps[f"SMRAM P conv{key[-1]}_x"] = probs[:, i].reshape(b, h, w)
    attn_keys = [k for k in extras if k.startswith("attn/")]
    if attn_keys:
        attns = extras[attn_keys[-1]]  # [(B, heads, N, N)] per block of the last stage
        b, _, n, _ = attns[0].shape
        side = int(round(n ** 0.5))
        a = jnp.mean(jnp.stack([x.astype(jnp.float32) for x in attns]), axis=(0, 2, 3))
        maps["stage-4 attention"] = a.reshape(b, side, side)
        if "swin_norm" in extras:
            tokens = extras["swin_norm"]
            _, idx = select_tokens(attns, tokens.reshape(b, n, -1))
            counts = jnp.sum(jnp.eye(n, dtype=jnp.float32)[idx], axis=1)
            maps["FSM patches"] = counts.reshape(b, side, side)
    return maps


def _resize01(maps, size: int, method: str):
    """(B, h, w) → (B, size, size) in [0, 1] per image."""
    import jax
    import jax.numpy as jnp
    m = jax.image.resize(maps.astype(jnp.float32), (maps.shape[0], size, size), method)
    lo = jnp.min(m, axis=(1, 2), keepdims=True)
    hi = jnp.max(m, axis=(1, 2), keepdims=True)
    return (m - lo) / jnp.maximum(hi - lo, 1e-12)


def make_explain_fn(trained: Trained):
    """Jitted (variables, uint8 images) → {'probs', 'targets', 'maps': {title: (B, S, S)}},
    Grad-CAM titles first ('Grad-CAM <stage>'), then the method's maps."""
    import jax

    from fgvc_jax import gradcam

    size = trained.image_size

    def fn(variables, images):
        cams, probs, targets, extras = gradcam.grad_cam(
            trained.method, variables, trained.normalize(images))
        maps = {f"Grad-CAM {k}": _resize01(v, size, "bilinear") for k, v in cams.items()}
        for k, v in method_maps(trained, variables, extras).items():
            maps[k] = _resize01(v, size, "nearest" if k in NEAREST else "bilinear")
        return {"probs": probs, "targets": targets, "maps": maps}

    return jax.jit(fn)


def explain_arrays(trained: Trained, images: np.ndarray, batch_size: int = 8) -> dict:
    """Maps of uint8 images (N, S, S, 3): {'probs': (N, K), 'targets': (N,), 'maps':
    {title: (N, S, S)}} as numpy."""
    import jax

    fn = make_explain_fn(trained)
    bs = max(1, min(batch_size, len(images)))
    chunks = []
    for start in range(0, len(images), bs):
        chunk = images[start:start + bs]
        pad = bs - len(chunk)
        if pad:
            chunk = np.concatenate([chunk, np.zeros((pad,) + chunk.shape[1:], chunk.dtype)])
        out = jax.device_get(fn(trained.variables, chunk))
        chunks.append(jax.tree.map(lambda a: np.asarray(a)[:bs - pad], out))
    return jax.tree.map(lambda *a: np.concatenate(a), *chunks)


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


def explain_files(trained: Trained, paths: list[str], out_dir: str, batch_size: int = 8,
                  skip_unreadable: bool = False) -> list[str]:
    """Write one PNG grid per readable image into `out_dir`; returns the PNG paths."""
    from fgvc_jax import predict

    images, ok, _ = predict.load_images(predict.expand_paths(paths), trained.config,
                                        skip_unreadable)
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
        title = (f"{os.path.basename(path)}: {trained.class_names[t]} "
                 f"({result['probs'][i, t]:.3f}) — {trained.config.method.name}")
        png = os.path.join(out_dir, f"explain_{name}.png")
        plot_grid(images[i], {k: v[i] for k, v in result["maps"].items()}, title, png)
        written.append(png)
    return written


def main(argv) -> None:
    from fgvc_jax import cli_common

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
    from absl import flags

    from fgvc_jax import cli_common

    def define_flags():
        flags.DEFINE_string("out", "", "Folder for the PNGs (default: <workdir>/explain).")
        flags.DEFINE_integer("batch_size", 8, "Images per batch.")
        flags.DEFINE_boolean("skip_unreadable", False, "Skip unreadable images with a warning.")

    cli_common.run(main, define_flags)


if __name__ == "__main__":
    run()
