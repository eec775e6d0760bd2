"""bfloat16 drift of every method: our network computing in bfloat16 (float32 parameters)
against its float32 PyTorch twin (fgvc_jax.reference) with the same weights and batch.
Numerics, not timings: the relative difference (max abs diff / max |ref|) of each head's
logits, the combined prediction and the loss.

    python bench/methods_bf16_drift.py [--size cpu|full] [--train]
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import torch

from fgvc_jax.methods import registry
from fgvc_jax.reference import parity

METHODS = [
    ("baseline_resnet", {}),
    ("baseline_swin", {}),
    ("ma_ea", {}),
    ("cra_smra", {}),
    ("cra_smra", {"backbone": "densenet161"}),
    ("swinfc", {}),
    ("attention_cnn", {}),
]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--size", default="cpu", choices=registry.SIZES)
    p.add_argument("--train", action="store_true")
    args = p.parse_args()
    cpu = args.size == "cpu"
    print(
        f"jax {jax.__version__}, torch {torch.__version__}, size={args.size}, "
        f"{'train' if args.train else 'eval'} mode, batch {4 if cpu else 2}"
    )
    print("| method | backbone | logits (worst head) | combined | loss total | worst loss term |")
    print("|---|---|---|---|---|---|")
    for name, fields in METHODS:
        cfg = registry.default_config(name, args.size)
        if cpu and fields.get("backbone") == "densenet161":
            fields = {"backbone": "densenet121"}
        cfg.update(fields)
        rows, _ = parity.run(
            cfg, 10 if cpu else 200, train=args.train, dtype=jnp.bfloat16, batch=4 if cpu else 2
        )
        by = {r.name: r for r in rows}
        logit = max((r for r in rows if r.name.startswith("logits")), key=lambda r: r.rel)
        term = max(
            (r for r in rows if r.name.startswith("loss ") and r.name != "loss total"),
            key=lambda r: r.rel,
        )
        print(
            f"| {name} | {cfg.get('backbone', '-')} | {logit.rel:.2e} ({logit.name[7:]}) | "
            f"{by['combined prediction'].rel:.2e} | {by['loss total'].rel:.2e} | "
            f"{term.rel:.2e} ({term.name[5:]}) |",
            flush=True,
        )


if __name__ == "__main__":
    main()
