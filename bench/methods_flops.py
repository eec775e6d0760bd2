"""Parameters and XLA's FLOP estimate of every method at its paper size (forward, eval mode,
batch 1), against the papers' figures. Nothing is computed: shapes only (jax.eval_shape) and
`jax.jit(...).lower(...).cost_analysis()`.

XLA counts a multiply-add as 2 FLOPs; the papers (fvcore/ptflops convention) count it as 1,
so the comparable column is GMACs = XLA GFLOPs / 2.

    python bench/methods_flops.py [--size full|cpu] [--classes 200]
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp

from fgvc_jax.methods import registry

# The papers' figures (METHODS.md §4: SwinFC 59.0 vs Swin-B 47.0 GFLOPs at 384).
PAPER_GFLOPS = {"baseline_swin": 47.0, "swinfc": 59.0}


# Every method at its default, plus CRA-SMRA on the paper's DenseNet-161.
RUNS = [(name, {}) for name in registry.METHODS] + [("cra_smra", {"backbone": "densenet161"})]


def count(name: str, size: str, classes: int, fields: dict | None = None) -> dict:
    cfg = registry.default_config(name, size)
    cfg.update(fields or {})
    method = registry.create(cfg, classes)
    x = jax.ShapeDtypeStruct((1, cfg.image_size, cfg.image_size, 3), jnp.float32)
    rngs = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
    variables = jax.eval_shape(lambda x: method.network.init(rngs, x, train=True), x)
    params = sum(a.size for a in jax.tree.leaves(variables["params"]))
    backbone = sum(a.size for a in jax.tree.leaves(variables["params"].get("backbone", {})))
    # Eval-mode forward: SMRAM and FSM are training-only and not counted (as in the papers).
    cost = jax.jit(lambda v, x: method.network.apply(v, x, train=False)).lower(variables, x)
    cost = cost.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return dict(
        name=name,
        res=cfg.image_size,
        backbone=cfg.get("backbone", "-"),
        params=params,
        new=params - backbone,
        gflops=cost["flops"] / 1e9,
    )


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--size", default="full", choices=registry.SIZES)
    p.add_argument("--classes", type=int, default=200)
    args = p.parse_args()
    print(
        f"jax {jax.__version__}, {jax.devices()[0].platform}, {args.classes} classes, batch 1, "
        f"size={args.size}"
    )
    print(
        "| method | backbone | input | params (M) | new params (M) | XLA GFLOPs | GMACs "
        "(= XLA/2) | paper GFLOPs |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, fields in RUNS:
        t = time.time()
        if args.size == "cpu" and fields:
            continue
        r = count(name, args.size, args.classes, fields)
        paper = PAPER_GFLOPS.get(name, "") if args.size == "full" else ""
        print(
            f"| {name} | {r['backbone']} | {r['res']}² | {r['params'] / 1e6:.2f} | "
            f"{r['new'] / 1e6:.2f} | {r['gflops']:.1f} | {r['gflops'] / 2:.1f} | {paper} |",
            flush=True,
        )
        del t


if __name__ == "__main__":
    main()
