"""Host-local batches for training and evaluation, and their global jax.Arrays.

Examples are read by index from the prepared array_record files (random access). Epoch e is
the permutation `default_rng([seed, e])` of the whole split (with `data.sampling`
'class_balanced' or 'sqrt': n draws with replacement from that generator, `SAMPLINGS`);
global batch b of the epoch is
positions [b·G, (b+1)·G) of it, and process p reads only its slice [p·L, (p+1)·L) (L = G/P).
Each example's augmentation draws from `default_rng([seed, e, position])`. So a batch is a
pure function of (seed, step): starting at any step reads nothing before it, and the global
batch does not depend on the number of processes. Decoding runs in a thread pool (PIL
releases the GIL) with `prefetch` batches in flight.

With the decoded cache (`cache.applies(config)`: data.cache 'decoded', resize_mode
'square') nothing is decoded per step: training batches are the uncropped S×S uint8 images
of the same examples, cropped and augmented on the device from (seed, step)
(`augment.train_batch`); evaluation batches are the center C×C slices of the cache, the
pixels of the decode path.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import functools
import os
import sys
from collections.abc import Callable, Iterator

import jax
import numpy as np

from fgvc_jax.data import cache, datasets, preprocess, splits
from fgvc_jax.data.errors import DataError


def _processes(process_index, process_count) -> tuple[int, int]:
    if process_index is None or process_count is None:
        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index={process_index} not in [0, {process_count}).")
    return process_index, process_count


def _local_batch(global_batch_size: int, process_count: int) -> int:
    if global_batch_size <= 0 or global_batch_size % process_count:
        raise DataError(
            f"global_batch_size={global_batch_size} must be a positive multiple of "
            f"the process count {process_count}."
        )
    return global_batch_size // process_count


@functools.lru_cache(maxsize=2)
def epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)


#: `config.data.sampling` → p: an example of class c is drawn with probability ∝ n_c^-p, so
#: class c with probability ∝ n_c^(1-p). 'uniform' (None): every example once an epoch, a
#: permutation; 'class_balanced' (1): every class equally often (class-aware sampling, Shen
#: et al. ECCV 2016, the long-tail recipes for NABirds and WebFG-496); 'sqrt' (0.5): class c
#: ∝ √n_c (square-root sampling, Mahajan et al. ECCV 2018). With replacement, n draws an
#: epoch, so the epoch length and the schedule are unchanged.
SAMPLINGS = {"uniform": None, "class_balanced": 1.0, "sqrt": 0.5}


def sampling_power(config) -> float | None:
    """`SAMPLINGS[config.sampling]` (config: the data config); ValueError naming the valid
    ones otherwise."""
    name = config.get("sampling", "uniform")
    if name not in SAMPLINGS:
        raise ValueError(f"config.data.sampling={name!r}; valid: {', '.join(SAMPLINGS)}.")
    return SAMPLINGS[name]


def example_probabilities(labels: np.ndarray, power: float) -> np.ndarray:
    """P(example i) ∝ n_{y_i}^-power, n_c the number of examples of class c."""
    counts = np.bincount(labels)
    p = counts[labels].astype(np.float64) ** -power
    return p / p.sum()


def split_labels(source) -> np.ndarray:
    """Every example's label: the decoded cache's array, else read from each record once."""
    if hasattr(source, "labels"):
        return np.asarray(source.labels, np.int64)
    return splits.read_labels(source)


def _load(
    source, batches, decode: Callable, crop: int, workers: int, prefetch: int
) -> Iterator[dict]:
    """Runs `decode(record_image, key)` for each (index, key) of each batch, in order.

    `batches` yields (indices, keys, size): the examples of this process's batch and the
    batch size to pad to (padding: zero images, label 0, mask False).
    """

    def task(index, key):
        record = source[int(index)]
        return decode(record["image"], key), int(record["label"])

    pool = concurrent.futures.ThreadPoolExecutor(workers or os.cpu_count() or 1)
    pending = collections.deque()
    try:
        for indices, keys, size in batches:
            pending.append(([pool.submit(task, i, k) for i, k in zip(indices, keys)], size))
            if len(pending) > prefetch:
                yield _collect(*pending.popleft(), crop)
        while pending:
            yield _collect(*pending.popleft(), crop)
    finally:
        if not sys.is_finalizing():
            pool.shutdown(wait=False, cancel_futures=True)


def _collect(futures, size: int, crop: int) -> dict:
    results = [f.result() for f in futures]
    images = np.zeros((size, crop, crop, 3), np.uint8)
    labels = np.zeros((size,), np.int32)
    for i, (image, label) in enumerate(results):
        images[i], labels[i] = image, label
    mask = np.arange(size) < len(results)
    return {"image": images, "label": labels, "mask": mask}


def _load_cached(
    decoded: cache.Cache, batches, crop: int | None, workers: int, prefetch: int
) -> Iterator[dict]:
    """Gathers each batch of `batches` (indices, _, size) from the cache, in order; `crop`:
    the center crop C of each S×S image, None for the whole image. Each batch is copied by
    `workers` threads (numpy releases the GIL), `prefetch` batches ahead."""
    s = decoded.images.shape[1]
    c = crop or s
    o = (s - c) // 2
    workers = workers or os.cpu_count() or 1

    def copy(out, indices, rows):
        for j in rows:
            out[j] = decoded.images[indices[j], o : o + c, o : o + c]

    def submit(indices, size):
        indices = np.asarray(indices, np.int64)
        out = np.zeros((size, c, c, 3), np.uint8)
        labels = np.zeros((size,), np.int32)
        labels[: len(indices)] = decoded.labels[indices]
        parts = np.array_split(np.arange(len(indices)), min(workers, max(1, len(indices))))
        futures = [pool.submit(copy, out, indices, rows) for rows in parts]
        return futures, {"image": out, "label": labels, "mask": np.arange(size) < len(indices)}

    def collect(futures, batch):
        for f in futures:
            f.result()
        return batch

    pool = concurrent.futures.ThreadPoolExecutor(workers)
    pending = collections.deque()
    try:
        for indices, _, size in batches:
            pending.append(submit(indices, size))
            if len(pending) > prefetch:
                yield collect(*pending.popleft())
        while pending:
            yield collect(*pending.popleft())
    finally:
        if not sys.is_finalizing():
            pool.shutdown(wait=False, cancel_futures=True)


def train_iterator(
    config,
    *,
    global_batch_size: int,
    seed: int,
    start_step: int = 0,
    process_index: int | None = None,
    process_count: int | None = None,
) -> Iterator[dict]:
    """Endless host-local training batches {image uint8 (L, C, C, 3), label int32 (L,)};
    with the decoded cache the images are the uncropped (L, S, S, 3), for
    `augment.train_batch` on the device."""
    p, count = _processes(process_index, process_count)
    local = _local_batch(global_batch_size, count)
    aug = preprocess.Augment.train(config)
    decoded = (
        cache.load(config, config.train_split, config.resize, config.num_workers)
        if cache.applies(config)
        else None
    )
    source = decoded if decoded is not None else datasets.data_source(config, config.train_split)
    n = len(source)
    steps_per_epoch = n // global_batch_size
    if steps_per_epoch == 0:
        raise DataError(
            f"Split {config.train_split!r} has {n} examples, fewer than one global "
            f"batch of {global_batch_size}."
        )

    power = sampling_power(config)
    probabilities = None if power is None else example_probabilities(split_labels(source), power)

    @functools.lru_cache(maxsize=2)
    def order(epoch: int) -> np.ndarray:
        if probabilities is None:
            return epoch_permutation(seed, epoch, n)
        return np.random.default_rng([seed, epoch]).choice(n, size=n, p=probabilities)

    def batches():
        step = start_step
        while True:
            epoch, b = divmod(step, steps_per_epoch)
            positions = np.arange(
                b * global_batch_size + p * local, b * global_batch_size + (p + 1) * local
            )
            yield (
                order(epoch)[positions],
                [(seed, epoch, int(q)) for q in positions],
                local,
            )
            step += 1

    def decode(data, key):
        return preprocess.train_image(data, np.random.default_rng(key), aug)

    loaded = (
        _load_cached(decoded, batches(), None, config.num_workers, config.prefetch)
        if decoded is not None
        else _load(source, batches(), decode, aug.crop, config.num_workers, config.prefetch)
    )
    for batch in loaded:
        del batch["mask"]
        yield batch


def eval_iterator(
    config,
    *,
    split: str | None = None,
    global_batch_size: int,
    process_index: int | None = None,
    process_count: int | None = None,
    uncropped: bool = False,
) -> Iterator[dict]:
    """The whole split once, in order: {image, label, mask}; mask is False on padding.
    Images are the C×C center crops, or with `uncropped` the S×S eval resize (resize_mode
    'square': the image multi-crop TTA cuts its crops from)."""
    p, count = _processes(process_index, process_count)
    local = _local_batch(global_batch_size, count)
    split = split or config.test_split
    aug = preprocess.Augment.eval(config)
    if uncropped:
        if aug.mode != "square":
            raise DataError("uncropped evaluation images need config.resize_mode='square'.")
        aug = dataclasses.replace(aug, crop=aug.resize)
    decoded = (
        cache.load(config, split, aug.resize, config.num_workers) if cache.applies(config) else None
    )
    source = decoded if decoded is not None else datasets.data_source(config, split)
    n = len(source)

    def batches():
        for start in range(0, n, global_batch_size):
            lo = min(start + p * local, n)
            hi = min(start + (p + 1) * local, n)
            yield range(lo, hi), [None] * (hi - lo), local

    if decoded is not None:
        crop = None if uncropped else aug.crop
        yield from _load_cached(decoded, batches(), crop, config.num_workers, config.prefetch)
        return
    yield from _load(
        source,
        batches(),
        lambda data, _: preprocess.eval_image(data, aug),
        aug.crop,
        config.num_workers,
        config.prefetch,
    )
