"""Is the quick start's plateau ours? timm's own Swin at the quick start's CPU size and recipe,
trained from scratch on synthetic_fgvc, with and without its LayerNorms (issue 5 diagnosis).

Measured (2-core CPU, 600 steps): both variants stay at chance (10-12%), as our SwinFC does,
so the plateau comes from the task and recipe, not from fgvc_jax's Swin. The marks are
two-tone (a colour and its complement, so that linear probes are blind); after the input
normalisation the halves embed as about ±v and a network near its initialisation averages them
away. Variants of the generator tried in the issue-5 note learn only once linear probes see the
class (solid marks), or, without LayerNorm, once the nuisance colours are muted.

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
CPU_SWIN = dict(img_size=64, patch_size=4, window_size=4, embed_dim=32, depths=(2, 2, 2, 2),
                num_heads=(1, 2, 4, 8), num_classes=10)  # registry._CPU_SWIN


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


class NoNorm(torch.nn.LayerNorm):
    def forward(self, x):
        return x


def train(data, layer_norm: bool, steps: int, lr: float, seed: int = 0) -> list[str]:
    import timm

    torch.manual_seed(seed)
    xtr, ytr, xte, yte = data
    kw = dict(CPU_SWIN) if layer_norm else dict(CPU_SWIN, norm_layer=NoNorm)
    model = timm.models.swin_transformer.SwinTransformer(**kw)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    warm = 50  # the quick start's recipe: AdamW, warmup 50, cosine, clip 1, batch 32
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + np.cos(np.pi * min(s, steps) / steps)))
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
                pred = np.concatenate([model(to_tensor(xte[j:j + 250])).argmax(1).numpy()
                                       for j in range(0, len(xte), 250)])
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
    data = (*split(params, "train", params.num_classes * params.train_per_class),
            *split(params, "test", params.num_classes * params.test_per_class))
    print(f"# synthetic_fgvc {syn.SyntheticFGVC.VERSION}, timm Swin {CPU_SWIN}, AdamW lr {args.lr}")
    print("| variant | " + " | ".join(f"top-1 @{s}" for s in range(100, args.steps + 1, 100))
          + " | s |")
    print("|---" * (args.steps // 100 + 2) + "|")
    for name, ln in (("Swin (LayerNorm, as timm)", True), ("Swin without LayerNorm", False)):
        t0 = time.perf_counter()
        row = train(data, ln, args.steps, args.lr)
        print(f"| {name} | " + " | ".join(row) + f" | {time.perf_counter() - t0:.0f} |",
              flush=True)


if __name__ == "__main__":
    main()
