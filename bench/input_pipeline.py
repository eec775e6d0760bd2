"""Training input-pipeline throughput against the model's own consumption rate.

Prepares a `folder` dataset of 500x375 JPEGs (the size of a typical CUB image), then times
`fgvc_jax.data.train_iterator` (read from array_record, decode, resize → random crop, flip)
with one decoding thread per core, at 448 crops (resize 512) and 384 crops (resize 439):
per core is images per CPU-second of the whole process (so other load on a shared machine
does not lower it), total is images per wall-clock second. The model rate is one
jit-compiled SGD step of the project's ResNet-50 at the same crop (forward + backward),
images/s on this machine.

  python bench/input_pipeline.py [--images 96] [--batch 32] [--steps 6] [--model resnet50]
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def make_jpegs(root: Path, n: int) -> None:
    """n photo-like 500x375 JPEGs (smooth shapes + texture), two classes, one split."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:375, 0:500]
    for i in range(n):
        img = np.zeros((375, 500, 3))
        for _ in range(6):
            cx, cy, r = rng.uniform(0, 500), rng.uniform(0, 375), rng.uniform(40, 200)
            blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / r ** 2)
            img += blob[..., None] * rng.uniform(0, 120, 3)
        img += rng.normal(0, 4, img.shape)  # ~45 KB per file, like CUB's photos
        path = root / "train" / f"class_{i % 2}" / f"{i:04d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path, quality=90)


def pipeline_rate(config, batch: int, steps: int, repeats: int) -> tuple[float, float]:
    """Median images per wall second and per CPU second (all threads) over `steps` batches."""
    from fgvc_jax import data
    rates, cpu_rates = [], []
    for r in range(repeats):
        it = data.train_iterator(config, global_batch_size=batch, seed=r, process_index=0,
                                 process_count=1)
        next(it)
        t, c = time.perf_counter(), time.process_time()
        for _ in range(steps):
            next(it)
        rates.append(batch * steps / (time.perf_counter() - t))
        cpu_rates.append(batch * steps / (time.process_time() - c))
    return statistics.median(rates), statistics.median(cpu_rates)


def model_rate(arch: str, crop: int, batch: int, repeats: int) -> float:
    """Median images/s of one SGD training step of the project's ResNet at `crop`."""
    import jax
    import jax.numpy as jnp
    import optax
    from fgvc_jax.backbones import resnet
    model = resnet.resnet(arch, num_classes=200)
    x = jnp.zeros((batch, crop, crop, 3), jnp.float32)
    y = jnp.zeros((batch,), jnp.int32)
    variables = model.init(jax.random.PRNGKey(0), x[:1])
    tx = optax.sgd(0.01, 0.9)
    opt = tx.init(variables["params"])

    @jax.jit
    def step(variables, opt, x, y):
        def loss(params):
            logits, state = model.apply({**variables, "params": params}, x, train=True,
                                        mutable=["batch_stats"])
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), state
        (_, state), grads = jax.value_and_grad(loss, has_aux=True)(variables["params"])
        updates, opt = tx.update(grads, opt)
        return {**state, "params": optax.apply_updates(variables["params"], updates)}, opt

    variables, opt = jax.block_until_ready(step(variables, opt, x, y))  # compile
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        variables, opt = jax.block_until_ready(step(variables, opt, x, y))
        times.append(time.perf_counter() - t)
    return batch / statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default="resnet50", help="ResNet arch, or 'none'")
    parser.add_argument("--model-batch", type=int, default=2)
    args = parser.parse_args()

    from fgvc_jax import data
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        make_jpegs(Path(tmp) / "images", args.images)
        config = data.default_config("folder")
        config.folder_root = str(Path(tmp) / "images")
        config.data_dir = str(Path(tmp) / "tfds")
        data.prepare(config)
        rows = []
        for crop, resize in ((448, 512), (384, 439)):
            config.crop, config.resize = crop, resize
            config.num_workers = cores
            total, per_cpu_second = pipeline_rate(config, args.batch, args.steps, args.repeats)
            model = (model_rate(args.model, crop, args.model_batch, args.repeats)
                     if args.model != "none" else float("nan"))
            rows.append((crop, resize, per_cpu_second, total, model))

    print(f"\nInput pipeline, {args.images} JPEGs 500x375, batch {args.batch}, {cores} cores "
          f"(median of {args.repeats})")
    print(f"{'crop':>5} {'resize':>6} {'img/s per core':>15} {'img/s total':>12} "
          f"{args.model + ' train img/s':>22} {'total/model':>12}")
    for crop, resize, per_core, total, model in rows:
        print(f"{crop:>5} {resize:>6} {per_core:>15.0f} {total:>12.0f} {model:>22.2f} "
              f"{total / model:>11.0f}x")
    print("per core = images per CPU-second of the process (all threads); total = wall clock, "
          "one decoding thread per core.")


if __name__ == "__main__":
    main()
