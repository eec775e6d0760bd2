"""Training input pipeline: the decoded cache against per-step decoding, and the device
augmentation against the train step.

Prepares a `folder` dataset of 500x375 JPEGs (the size of a typical CUB image), then times
`fgvc_jax.data.train_iterator` on both paths, at 448 crops (resize 512) and 384 crops
(resize 439), with 1 and 2 reading/decoding threads, interleaved repeats:
- 'decode': read from array_record, decode, resize, random crop, flip on the host (C×C out);
- 'cached': gather the S×S uint8 images from the decoded cache (built once, not timed).
Per core is images per CPU-second of the whole process (host CPU-seconds per image = its
inverse; other load on a shared machine does not lower it), wall is images per second.
Then the jitted device augmentation (`augment.train_batch`: crop + flip, and with
--augment-all rotation, jitter, RandAugment, erasing, mixup/CutMix) is timed against one
jitted train step of the CPU-size SwinFC (configs/swinfc.py:synthetic) and of ResNet-50 at
448, same batch. The load average is printed before and after: take figures only from a
quiet machine.

  python bench/input_pipeline.py [--images 96] [--batch 32] [--steps 6] [--json]
  python bench/input_pipeline.py --images 16 --batch 4 --steps 1 --repeats 1 --crops 64 \
      --models none                                    # a quick check that it runs
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def make_jpegs(root: Path, n: int) -> None:
    """n photo-like 500x375 JPEGs (smooth shapes + texture), two classes, one split."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:375, 0:500]
    for i in range(n):
        img = np.zeros((375, 500, 3))
        for _ in range(6):
            cx, cy, r = rng.uniform(0, 500), rng.uniform(0, 375), rng.uniform(40, 200)
            blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / r**2)
            img += blob[..., None] * rng.uniform(0, 120, 3)
        img += rng.normal(0, 4, img.shape)  # ~45 KB per file, like CUB's photos
        path = root / "train" / f"class_{i % 2}" / f"{i:04d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path, quality=90)


def pipeline_once(config, batch: int, steps: int, seed: int) -> tuple[float, float]:
    """Images per wall second and per CPU second (all threads) over `steps` batches."""
    from fgvc_jax import data

    it = data.train_iterator(
        config, global_batch_size=batch, seed=seed, process_index=0, process_count=1
    )
    next(it)
    t, c = time.perf_counter(), time.process_time()
    for _ in range(steps):
        next(it)
    return batch * steps / (time.perf_counter() - t), batch * steps / (time.process_time() - c)


def _timed(fn, args, repeats: int) -> float:
    """Median seconds of a jitted call (compiled first)."""
    import jax

    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def augment_seconds(config, batch: int, repeats: int) -> float:
    """Median seconds of `augment.train_batch` on a (batch, S, S, 3) uint8 batch."""
    import functools

    import jax

    from fgvc_jax.data import augment

    s = config.resize
    x = np.random.default_rng(0).integers(0, 256, (batch, s, s, 3), dtype=np.uint8)
    y = np.arange(batch, dtype=np.int32) % 200
    fn = jax.jit(functools.partial(augment.train_batch, config=config, num_classes=200))
    return _timed(lambda x, y: fn(x, y, augment.step_key(0, 1)), (x, y), repeats)


def swinfc_step_seconds(batch: int, repeats: int) -> tuple[float, int]:
    """Median seconds of the CPU-size SwinFC train step (configs/swinfc.py:synthetic) at
    `batch`, and its image size."""
    from bench import train_step as tsb
    from fgvc_jax.runtime import parallel

    config = tsb._config("swinfc", "synthetic")
    config.train.batch_size = batch
    mesh = parallel.make_mesh()
    s = config.method.image_size
    recipe, tx = tsb._setup(config, 200)
    state = recipe.create_state(tx, recipe.init_variables(), mesh)
    step = recipe.train_step(tx, mesh)
    r = np.random.default_rng(0)
    data_ = parallel.host_to_global(
        {
            "image": r.integers(0, 256, (batch, s, s, 3), dtype=np.uint8),
            "label": r.integers(0, 200, (batch,), dtype=np.int32),
        },
        mesh,
    )
    state, _ = step(state, data_)
    import jax

    jax.block_until_ready(state)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        state, _ = step(state, data_)
        jax.block_until_ready(state)
        times.append(time.perf_counter() - t)
    return statistics.median(times), s


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
            logits, state = model.apply(
                {**variables, "params": params}, x, train=True, mutable=["batch_stats"]
            )
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


def _load() -> str:
    return "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", default="1,2", help="decoding threads, comma separated")
    parser.add_argument(
        "--crops", default="448,384", help="448 → resize 512, 384 → 439; others resize to crop·8/7"
    )
    parser.add_argument("--models", default="swinfc,resnet50", help="'none' to skip")
    parser.add_argument("--model-batch", type=int, default=2)
    parser.add_argument(
        "--augment-all",
        action="store_true",
        help="time every device augmentation on, not only crop + flip",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per row")
    args = parser.parse_args()

    from fgvc_jax import data
    from fgvc_jax.data import cache

    resizes = {448: 512, 384: 439}
    crops = [int(c) for c in args.crops.split(",")]
    threads = [int(t) for t in args.threads.split(",")]
    print(f"# before: {_load()}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        make_jpegs(Path(tmp) / "images", args.images)
        config = data.default_config("folder")
        config.folder_root = str(Path(tmp) / "images")
        config.data_dir = str(Path(tmp) / "tfds")
        config.test_split = "train"  # one split only; prepare checks both configured splits
        data.prepare(config)
        cells = [
            (crop, path, n) for crop in crops for path in ("decode", "cached") for n in threads
        ]
        rates = {cell: ([], []) for cell in cells}
        for crop in crops:  # build the caches first (printed, not timed)
            config.crop, config.resize = crop, resizes.get(crop, round(crop * 8 / 7))
            cache.load(config, config.train_split, config.resize)
        for r in range(args.repeats):  # interleaved: every cell once per repeat
            for cell in cells:
                crop, path, n = cell
                config.crop, config.resize = crop, resizes.get(crop, round(crop * 8 / 7))
                config.cache, config.num_workers = ("decoded" if path == "cached" else "none"), n
                wall, per_cpu = pipeline_once(config, args.batch, args.steps, seed=r)
                rates[cell][0].append(wall)
                rates[cell][1].append(per_cpu)
        for cell in cells:
            crop, path, n = cell
            wall, per_cpu = (statistics.median(v) for v in rates[cell])
            rows.append(
                {
                    "path": path,
                    "crop": crop,
                    "resize": resizes.get(crop, round(crop * 8 / 7)),
                    "threads": n,
                    "images_per_core_second": per_cpu,
                    "cpu_seconds_per_image": 1.0 / per_cpu,
                    "images_per_second": wall,
                }
            )

    device_rows = []
    models = [] if args.models == "none" else args.models.split(",")
    for crop in crops:
        config = data.default_config("folder")
        config.crop, config.resize = crop, resizes.get(crop, round(crop * 8 / 7))
        if args.augment_all:
            config.update(
                dict(
                    rotation=10.0,
                    color_jitter=0.4,
                    randaugment_ops=2,
                    erase_prob=0.25,
                    mixup_alpha=0.8,
                    cutmix_alpha=1.0,
                )
            )
        aug = augment_seconds(config, args.model_batch, args.repeats)
        for model in models:
            if model == "swinfc":
                step, size = swinfc_step_seconds(args.model_batch, args.repeats)
            else:
                step, size = (
                    args.model_batch / model_rate(model, crop, args.model_batch, args.repeats),
                    crop,
                )
            device_rows.append(
                {
                    "path": "device_augment",
                    "crop": crop,
                    "model": model,
                    "model_image": size,
                    "batch": args.model_batch,
                    "augment_s": aug,
                    "step_s": step,
                    "fraction": aug / step,
                }
            )
        if not models:
            device_rows.append(
                {
                    "path": "device_augment",
                    "crop": crop,
                    "model": None,
                    "batch": args.model_batch,
                    "augment_s": aug,
                }
            )
    print(f"# after: {_load()}", flush=True)

    if args.json:
        for row in rows + device_rows:
            print(json.dumps(row))
        return
    print(
        f"\nInput pipeline, {args.images} JPEGs 500x375, batch {args.batch}, "
        f"median of {args.repeats} interleaved repeats"
    )
    print(
        f"{'path':>7} {'crop':>5} {'resize':>6} {'threads':>7} {'img/s per core':>15} "
        f"{'CPU ms/img':>10} {'img/s wall':>11}"
    )
    for r in rows:
        print(
            f"{r['path']:>7} {r['crop']:>5} {r['resize']:>6} {r['threads']:>7} "
            f"{r['images_per_core_second']:>15.0f} {1e3 * r['cpu_seconds_per_image']:>10.2f} "
            f"{r['images_per_second']:>11.0f}"
        )
    print(f"\nDevice augmentation vs train step, batch {args.model_batch}")
    for r in device_rows:
        if r["model"] is None:
            print(f"crop {r['crop']}: augment {1e3 * r['augment_s']:.2f} ms")
        else:
            print(
                f"crop {r['crop']}: augment {1e3 * r['augment_s']:.2f} ms, {r['model']} "
                f"({r['model_image']} px) step {1e3 * r['step_s']:.1f} ms: "
                f"{100 * r['fraction']:.2f}%"
            )


if __name__ == "__main__":
    main()
