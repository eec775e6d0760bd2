"""Evaluate a trained workdir: `python -m fgvc_jax.evaluate --workdir DIR [--config C]`.

Reports top-1/top-5 of every head and of the method's combined prediction, single view and
(separately, never mixed in) horizontal-flip test-time augmentation; per-class accuracy; the
most confused class pairs; a confusion-matrix PNG and a JSON report in the workdir.
Scores are the method's own (`Method.scores`), as in the trainer's evaluation.

Flip TTA averages the two views' softmaxes per head, and the two views' combined prediction
(`Method.predict`) for 'combined'. Single-view numbers are computed exactly as the trainer's
evaluation (`step.eval_step`: top-k of each head's logits and of the combined prediction).
`--crops 5|10` adds multi-crop TTA, reported apart as well: torchvision's FiveCrop/TenCrop of
the eval crop C from the S×S eval resize (the four corners and the center, whose offset
(S − C) // 2 is the single view's; 10 adds their flips), averaged as flip TTA averages.
`--scales S1,S2,...` adds multi-scale TTA, reported apart too: the center crop C of the image
resized to each S (the eval resize of the run replaced; other sizes than the run's decoded
from the images, no cache written), averaged likewise.
"""

from __future__ import annotations

import json
import os
import textwrap

import jax
import numpy as np
from absl import flags

from fgvc_jax import data
from fgvc_jax import recipe as recipe_lib
from fgvc_jax.run import curves
from fgvc_jax.run.trained import ToolError, Trained
from fgvc_jax.runtime import parallel
from fgvc_jax.tools import cli_common, image_files

REPORT_FILE = "eval_report.json"
CONFUSION_FILE = "confusion.png"


CROPS = (0, 5, 10)  # --crops: off, FiveCrop, TenCrop


def check_crops(n: int) -> None:
    if n not in CROPS:
        raise ValueError(f"crops={n}; valid: {', '.join(map(str, CROPS))} (0: off).")


def crop_views(images, crop: int, n: int) -> list:
    """The `n` (5 or 10) C×C views of (B, S, S, 3) images: top-left, top-right, bottom-left,
    bottom-right, center (offset (S − C) // 2, the single view's), then their flips."""
    check_crops(n)
    d = images.shape[1] - crop
    offsets = [(0, 0), (0, d), (d, 0), (d, d), (d // 2, d // 2)]
    views = [images[:, y : y + crop, x : x + crop] for y, x in offsets]
    return views + [v[:, :, ::-1] for v in views] if n == 10 else views


def parse_scales(text: str, crop: int) -> tuple[int, ...]:
    """'512,576' → (512, 576): the eval resizes S of multi-scale TTA, each ≥ the crop C."""
    try:
        scales = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise ToolError(
            f"--scales {text!r}: expected sizes in pixels, e.g. --scales 512,576."
        ) from None
    small = [s for s in scales if s < crop]
    if small:
        raise ToolError(
            f"--scales {text!r}: {small[0]} is smaller than the crop {crop} (each scale is an "
            f"eval resize S that the {crop}x{crop} center crop is cut from)."
        )
    return scales


def scale_batches(data_config, split: str, batch_size: int, scales: tuple[int, ...]):
    """The split once per eval resize S in `scales`, in step: {'image': (B, V, C, C, 3) with
    view v the center crop of the image resized to scales[v], 'label', 'mask'}. A size other
    than the run's own is decoded from the images (data.cache 'none': nothing written)."""
    iterators = []
    for size in scales:
        c = data_config.copy_and_resolve_references()
        if size != c.eval_resize:
            c.eval_resize, c.cache = size, "none"
        iterators.append(data.eval_iterator(c, split=split, global_batch_size=batch_size))
    for views in zip(*iterators):
        first = views[0]
        yield {
            "image": np.stack([v["image"] for v in views], 1),
            "label": first["label"],
            "mask": first["mask"],
        }


def _scores_fn(trained: Trained):
    method = trained.method

    def scores(variables, images):
        out = method.network.apply(variables, trained.normalize(images), train=False)
        return method.scores(out)

    return scores


def _probs(s: dict) -> dict:
    """Per head its softmax; 'combined' is already the method's prediction."""
    return {n: v if n == "combined" else jax.nn.softmax(v, -1) for n, v in s.items()}


def _top(views_probs: list[dict], k: int, prefix: str) -> dict:
    mean = {n: sum(p[n] for p in views_probs) / len(views_probs) for n in views_probs[0]}
    kk = min(k, mean["combined"].shape[-1])
    return {f"{prefix}/{n}": jax.lax.top_k(v, kk)[1] for n, v in mean.items()}


def _jit(fn, mesh):
    rep, dat = parallel.replicated(mesh), parallel.data_sharded(mesh)
    return jax.jit(fn, in_shardings=(rep, dat), out_shardings=rep)


def make_topk_fn(trained: Trained, mesh, flip: bool, k: int = 5):
    """Jitted (variables, uint8 images) → {'single/<name>': top-k indices (B, k), and with
    `flip` 'flip/<name>'} for every head and 'combined'."""
    scores = _scores_fn(trained)

    def fn(variables, images):
        single = scores(variables, images)
        kk = min(k, single["combined"].shape[-1])
        out = {f"single/{n}": jax.lax.top_k(v, kk)[1] for n, v in single.items()}
        if flip:
            flipped = _probs(scores(variables, images[:, :, ::-1, :]))
            out.update(_top([_probs(single), flipped], k, "flip"))
        return out

    return _jit(fn, mesh)


def make_crops_topk_fn(trained: Trained, mesh, crops: int, k: int = 5):
    """Jitted (variables, uint8 S×S images) → {'crops/<name>': top-k indices (B, k)}: the
    mean over the `crop_views` of each head's softmax and of the combined prediction."""
    scores, crop = _scores_fn(trained), int(trained.config.data.eval_crop)

    def fn(variables, images):
        views = crop_views(images, crop, crops)
        return _top([_probs(scores(variables, v)) for v in views], k, "crops")

    return _jit(fn, mesh)


def make_scales_topk_fn(trained: Trained, mesh, k: int = 5):
    """Jitted (variables, uint8 (B, V, C, C, 3) views) → {'scales/<name>': top-k indices}: the
    mean over the V scales of each head's softmax and of the combined prediction."""
    scores = _scores_fn(trained)

    def fn(variables, views):
        return _top(
            [_probs(scores(variables, views[:, v])) for v in range(views.shape[1])], k, "scales"
        )

    return _jit(fn, mesh)


def collect(trained: Trained, batches, flip: bool = True, fn=None) -> dict[str, np.ndarray]:
    """Labels and top-5 predictions of every view and head over the valid examples of
    `batches` (padded batches with a 'mask', as `data.eval_iterator` yields); `fn` (default
    `make_topk_fn`'s) maps (variables, images) to them."""
    mesh = parallel.make_mesh()
    fn = fn or make_topk_fn(trained, mesh, flip)
    variables = jax.device_put(trained.variables, parallel.replicated(mesh))
    parts: dict[str, list] = {"label": []}
    for batch in batches:
        images = parallel.host_to_global({"image": batch["image"]}, mesh)["image"]
        tops = jax.device_get(fn(variables, images))
        mask = np.asarray(batch["mask"], bool)
        parts["label"].append(np.asarray(batch["label"])[mask])
        for name, top in tops.items():
            parts.setdefault(name, []).append(np.asarray(top)[mask])
    if not parts["label"] or not sum(len(x) for x in parts["label"]):
        raise ToolError("the evaluation split is empty.")
    return {k: np.concatenate(v) for k, v in parts.items()}


def topk_metrics(tops: dict[str, np.ndarray], view: str) -> dict[str, float]:
    """{'top1/<name>', 'top5/<name>', 'mean_class/<name>': %} of one view ('single' or
    'flip'); mean_class is the mean over the classes present of their top-1 accuracy."""
    labels, out = tops["label"], {}
    present = np.unique(labels)
    for key, top in sorted(tops.items()):
        if not key.startswith(view + "/"):
            continue
        name = key.split("/", 1)[1]
        hit = top == labels[:, None]
        out[f"top1/{name}"] = 100.0 * float(hit[:, 0].mean())
        out[f"top5/{name}"] = 100.0 * float(hit.any(-1).mean())
        out[f"mean_class/{name}"] = 100.0 * float(
            np.mean([hit[labels == c, 0].mean() for c in present])
        )
    return out


def macro_f1(cm: np.ndarray) -> float:
    """Mean over the classes (true or predicted at least once) of 2PR / (P + R), percent."""
    tp = np.diag(cm).astype(np.float64)
    predicted, true = cm.sum(0), cm.sum(1)
    present = (predicted + true) > 0
    f1 = np.where(predicted + true > 0, 2 * tp / np.maximum(predicted + true, 1), 0.0)
    return 100.0 * float(f1[present].mean())


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """counts[true, predicted]."""
    cm = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(cm, (labels, preds), 1)
    return cm


def per_class(cm: np.ndarray, names: list[str]) -> list[dict]:
    counts = cm.sum(1)
    return [
        {
            "class": names[i],
            "count": int(counts[i]),
            "top1": (100.0 * float(cm[i, i]) / counts[i]) if counts[i] else None,
        }
        for i in range(len(names))
    ]


def most_confused(cm: np.ndarray, names: list[str], n: int = 10) -> list[dict]:
    """The `n` largest off-diagonal entries: true class mistaken for predicted class."""
    off = cm.copy()
    np.fill_diagonal(off, 0)
    flat = np.argsort(-off, axis=None, kind="stable")[:n]
    out = []
    for t, p in zip(*np.unravel_index(flat, off.shape)):
        if off[t, p] == 0:
            break
        out.append(
            {
                "true": names[t],
                "predicted": names[p],
                "count": int(off[t, p]),
                "fraction_of_true": float(off[t, p]) / max(int(cm[t].sum()), 1),
            }
        )
    return out


def plot_confusion(cm: np.ndarray, names: list[str], path: str, title: str) -> None:
    """Row-normalised confusion matrix as a PNG (class names on the axes up to 40 classes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(names)
    rows = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    size = min(4 + 0.25 * k, 24)
    fig, ax = plt.subplots(figsize=(size, size))
    im = ax.imshow(rows, cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    if k <= 40:
        ax.set_xticks(range(k), names, rotation=90, fontsize=7)
        ax.set_yticks(range(k), names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    # wrapped to the figure's width (a long --images path would be cut off)
    ax.set_title("\n".join(textwrap.wrap(title, width=int(size * 9))), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def folder_batches(trained: Trained, root: str, batch_size: int):
    """Padded eval batches of `root/<class name>/*.jpg` (the model's class names; no dataset
    needed), labelled by folder."""
    if not os.path.isdir(root):
        raise ToolError(f"--images {root}: no such folder (expected <class name>/*.jpg in it).")
    index = {n: i for i, n in enumerate(trained.class_names)}
    folders = sorted(
        d
        for d in os.listdir(root)
        if os.path.isdir(os.path.join(root, d)) and not d.startswith(".")
    )
    unknown = [d for d in folders if d not in index]
    if unknown or not folders:
        raise ToolError(
            f"--images {root}: sub-folders must be class names of the model; "
            f"{'unknown: ' + ', '.join(unknown) if unknown else 'none found'} "
            f"(classes: {', '.join(trained.class_names[:10])}"
            f"{', ...' if len(index) > 10 else ''})."
        )
    paths, labels = [], []
    for d in folders:
        files = image_files.expand_paths([os.path.join(root, d)])
        paths += files
        labels += [index[d]] * len(files)
    images, ok, _ = image_files.load_images(paths, trained.config)
    labels = np.asarray(labels, np.int32)
    for start in range(0, len(images), batch_size):
        n = min(batch_size, len(images) - start)
        image = np.zeros((batch_size,) + images.shape[1:], np.uint8)
        label = np.zeros((batch_size,), np.int32)
        image[:n], label[:n] = images[start : start + n], labels[start : start + n]
        yield {"image": image, "label": label, "mask": np.arange(batch_size) < n}


def evaluate(
    trained: Trained,
    *,
    split: str | None = None,
    batch_size: int | None = None,
    flip: bool = True,
    out_dir: str | None = None,
    top_confused: int = 10,
    images: str | None = None,
    crops: int = 0,
    scales: str = "",
) -> dict:
    """Evaluate `trained` on `split` (default: the config's test split) or on the folder
    `images` (`<class name>/*.jpg`, no dataset needed); write the JSON report and the
    confusion PNG into `out_dir` (default: the workdir). `crops` 5 or 10: multi-crop TTA
    too (a second pass over the split at the S×S eval resize). `scales` 'S1,S2,...':
    multi-scale TTA too (a pass per scale). Returns the report."""
    config = trained.config
    check_crops(crops)
    sizes = parse_scales(scales, int(config.data.eval_crop)) if scales else ()
    if sizes and images:
        raise ToolError("--scales needs a dataset split (--images are read at one size).")
    if crops:
        if images:
            raise ToolError("--crops needs a dataset split (--images are read at the crop).")
        if config.data.resize_mode != "square":
            raise ToolError(
                f"--crops needs config.data.resize_mode='square' (the S×S image the crops "
                f"are cut from); this run has {config.data.resize_mode!r}."
            )
    split = images or split or config.data.test_split
    bs = batch_size or recipe_lib.eval_batch_size(config)
    batches = (
        folder_batches(trained, images, bs)
        if images
        else data.eval_iterator(config.data, split=split, global_batch_size=bs)
    )
    tops = collect(trained, batches, flip)
    crops_tta = None
    if crops:
        full = data.eval_iterator(config.data, split=split, global_batch_size=bs, uncropped=True)
        crop_tops = collect(
            trained, full, fn=make_crops_topk_fn(trained, parallel.make_mesh(), crops)
        )
        crops_tta = {"views": crops, **topk_metrics(crop_tops, "crops")}
    scales_tta = None
    if sizes:
        views = scale_batches(config.data, split, bs, sizes)
        scale_tops = collect(trained, views, fn=make_scales_topk_fn(trained, parallel.make_mesh()))
        scales_tta = {"scales": list(sizes), **topk_metrics(scale_tops, "scales")}
    names = trained.class_names
    cm = confusion_matrix(tops["label"], tops["single/combined"][:, 0], len(names))
    out_dir = out_dir or trained.workdir
    os.makedirs(out_dir, exist_ok=True)
    png = os.path.join(out_dir, CONFUSION_FILE)
    single = topk_metrics(tops, "single")
    plot_confusion(
        cm,
        names,
        png,
        f"{config.method.name}, step {trained.step}, {split}: "
        f"top-1 {single['top1/combined']:.2f}% (single view)",
    )
    report = {
        "workdir": os.path.abspath(trained.workdir),
        "step": trained.step,
        "method": config.method.name,
        "dataset": config.data.name,
        "split": split,
        "images": os.path.abspath(images) if images else None,
        "count": int(len(tops["label"])),
        "single_view": single,
        "macro_f1": macro_f1(cm),
        "flip_tta": topk_metrics(tops, "flip") if flip else None,
        "crops_tta": crops_tta,
        "scales_tta": scales_tta,
        "per_class": per_class(cm, names),
        "most_confused": most_confused(cm, names, top_confused),
        "confusion_matrix": cm.tolist(),
        "confusion_png": os.path.abspath(png),
        "note": "per-class accuracy, confusions and the PNG use the combined prediction of a "
        "single view; flip_tta, crops_tta and scales_tta are reported separately and never mixed "
        "into single_view.",
    }
    with open(os.path.join(out_dir, REPORT_FILE), "w") as f:
        json.dump(report, f, indent=2)
    return report


def format_report(report: dict) -> str:
    """The console summary: a head x (top-1, top-5) table for both views, the worst classes
    and the most confused pairs."""
    single, flip, crops = report["single_view"], report["flip_tta"], report.get("crops_tta")
    scales = report.get("scales_tta")
    heads = sorted({k.split("/", 1)[1] for k in single}, key=lambda n: (n != "combined", n))
    source = report.get("images") or f"{report['dataset']}/{report['split']}"
    lines = [
        f"{report['method']} on {source} "
        f"({report['count']} images), checkpoint step {report['step']}",
        f"{'head':<16}{'top-1':>8}{'top-5':>8}{'class':>8}"
        + (f"{'flip top-1':>12}{'flip top-5':>12}" if flip else "")
        + (f"{str(crops['views']) + '-crop top-1':>15}{'top-5':>8}" if crops else "")
        + (f"{str(len(scales['scales'])) + '-scale top-1':>16}{'top-5':>8}" if scales else ""),
    ]
    for h in heads:
        row = (
            f"{h:<16}{single['top1/' + h]:>8.2f}{single['top5/' + h]:>8.2f}"
            f"{single['mean_class/' + h]:>8.2f}"
        )
        if flip:
            row += f"{flip['top1/' + h]:>12.2f}{flip['top5/' + h]:>12.2f}"
        if crops:
            row += f"{crops['top1/' + h]:>15.2f}{crops['top5/' + h]:>8.2f}"
        if scales:
            row += f"{scales['top1/' + h]:>16.2f}{scales['top5/' + h]:>8.2f}"
        lines.append(row)
    lines.append(
        f"(class: mean per-class top-1); macro-F1 of the combined prediction "
        f"{report['macro_f1']:.2f}"
    )
    worst = sorted((c for c in report["per_class"] if c["count"]), key=lambda c: c["top1"])[:5]
    lines.append(
        "lowest per-class top-1: " + ", ".join(f"{c['class']} {c['top1']:.1f}%" for c in worst)
    )
    if report["most_confused"]:
        lines.append("most confused (true → predicted: count):")
        lines += [
            f"  {c['true']} → {c['predicted']}: {c['count']}" for c in report["most_confused"]
        ]
    return "\n".join(lines)


def main(argv) -> None:
    del argv
    flags = cli_common.FLAGS
    try:
        trained = cli_common.load_trained()
        report = evaluate(
            trained,
            split=flags.split or None,
            batch_size=flags.batch_size or None,
            flip=flags.flip,
            out_dir=flags.out or None,
            images=flags.images or None,
            crops=flags.crops,
            scales=flags.scales,
        )
    except Exception as e:  # user mistakes → one line
        cli_common.fail(e)
    print(format_report(report))
    out = flags.out or trained.workdir
    print(
        f"report: {os.path.join(out, REPORT_FILE)}\nconfusion matrix: "
        f"{os.path.join(out, CONFUSION_FILE)}"
    )
    drawn = curves.write(trained.workdir, out)
    if drawn:
        print(f"training curves: {drawn}")


def run() -> None:
    def define_flags():
        flags.DEFINE_string("split", "", "Split to evaluate (default: config.data.test_split).")
        flags.DEFINE_string(
            "images",
            "",
            "Evaluate a folder of <class name>/*.jpg instead of "
            "a split (works without the dataset).",
        )
        flags.DEFINE_integer("batch_size", 0, "Evaluation batch (default: the config's).")
        flags.DEFINE_boolean("flip", True, "Also report flip test-time augmentation (separately).")
        flags.DEFINE_integer(
            "crops", 0, "5 or 10: also report FiveCrop/TenCrop test-time augmentation (separately)."
        )
        flags.DEFINE_string(
            "scales",
            "",
            "Eval resizes S1,S2,...: also report multi-scale test-time augmentation (the center "
            "crop of each, separately).",
        )
        flags.DEFINE_string("out", "", "Folder for the report and PNG (default: the workdir).")

    cli_common.run(main, define_flags)


if __name__ == "__main__":
    run()
