"""The quick start's task through timm's own Swin: the same CPU size, data and recipe, trained
from scratch in PyTorch, on synthetic_fgvc as generated (patterns on the 4-px patch grid) and
with every image shifted by a random 0-3 px (patterns at a random phase to the patch grid).

Measured (2-core CPU, synthetic_fgvc 2.0.0, AdamW lr 1e-3, test top-1 every 100 steps):
  timm Swin, patterns on the patch grid   31.2  64.3  92.5  95.8  97.1  97.8   (our SwinFC: 98.2)
  timm Swin, images shifted 0-3 px        11.5  15.5  19.2  21.3  22.0  24.6
On the grid a mark's pattern is one fixed patch content, a first-order feature; at a random
phase its sign flips with the phase, a second-order feature that a small Swin from scratch
learns far more slowly (issue 5's notes).

  python bench/quickstart_learnability.py --steps 600
Prints test top-1 every 100 steps for both variants (torch, CPU; needs the torch extra).
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fgvc_jax.convert.torch_reference import torch  # noqa: E402  (torchvision op workaround)
from fgvc_jax.data.builders import synthetic_fgvc as syn  # noqa: E402

MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
CPU_SWIN = dict(
    img_size=64,
    patch_size=4,
    window_size=4,
    embed_dim=32,
    depths=(2, 2, 2, 2),
    num_heads=(1, 2, 4, 8),
    drop_path_rate=0.0,
    num_classes=10,
)  # registry._CPU_SWIN


def split(params, name, n):
    """The builder's examples, through the same JPEG round trip as the prepared dataset."""
    parts = syn.class_parts(params.num_classes, params.seed)
    xs, ys = [], []
    for i in range(n):
        image, label, _ = syn.example(params, name, i, parts)
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="JPEG", quality=95, subsampling=0)
        xs.append(np.asarray(Image.open(buf).convert("RGB")))
        ys.append(label)
    return np.stack(xs), np.array(ys)


def to_tensor(x):
    return torch.tensor(((x / 255.0 - MEAN) / STD).transpose(0, 3, 1, 2), dtype=torch.float32)


def shifted(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each image rolled by a random 0-3 px along both axes."""
    return np.stack([np.roll(im, tuple(rng.integers(0, 4, 2)), axis=(0, 1)) for im in x])


def train(data, steps: int, lr: float, seed: int = 0) -> list[str]:
    import timm

    torch.manual_seed(seed)
    xtr, ytr, xte, yte = data
    model = timm.models.swin_transformer.SwinTransformer(**CPU_SWIN)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    warm = 50  # the quick start's recipe: AdamW, warmup 50, cosine, clip 1, batch 32
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + np.cos(np.pi * min(s, steps) / steps))
    )
    rng, row = np.random.default_rng(seed), []
    for s in range(1, steps + 1):
        i = rng.integers(0, len(xtr), 32)
        x = np.where(rng.random(32)[:, None, None, None] < 0.5, xtr[i][:, :, ::-1], xtr[i])
        loss = torch.nn.functional.cross_entropy(model(to_tensor(x)), torch.tensor(ytr[i]))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if s % 100 == 0:
            model.eval()
            with torch.no_grad():
                pred = np.concatenate(
                    [
                        model(to_tensor(xte[j : j + 250])).argmax(1).numpy()
                        for j in range(0, len(xte), 250)
                    ]
                )
            model.train()
            row.append(f"{100 * np.mean(pred == yte):.1f}")
    return row


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--lr", type=float, default=1e-3)
    args = p.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    params = syn.Params()
    data = (
        *split(params, "train", params.num_classes * params.train_per_class),
        *split(params, "test", params.num_classes * params.test_per_class),
    )
    print(f"# synthetic_fgvc {syn.SyntheticFGVC.VERSION}, timm Swin {CPU_SWIN}, AdamW lr {args.lr}")
    print(
        "| variant | "
        + " | ".join(f"top-1 @{s}" for s in range(100, args.steps + 1, 100))
        + " | s |"
    )
    print("|---" * (args.steps // 100 + 2) + "|")
    rng = np.random.default_rng(1)
    variants = (
        ("timm Swin, patterns on the patch grid", data),
        (
            "timm Swin, images shifted 0-3 px",
            (shifted(data[0], rng), data[1], shifted(data[2], rng), data[3]),
        ),
    )
    for name, variant in variants:
        t0 = time.perf_counter()
        row = train(variant, args.steps, args.lr)
        print(f"| {name} | " + " | ".join(row) + f" | {time.perf_counter() - t0:.0f} |", flush=True)


if __name__ == "__main__":
    main()
