"""Host-local batches for training and evaluation, and their global jax.Arrays.

Examples are read by index from the prepared array_record files (random access). Epoch e is
the permutation `default_rng([seed, e])` of the whole split; global batch b of the epoch is
positions [b·G, (b+1)·G) of it, and process p reads only its slice [p·L, (p+1)·L) (L = G/P).
Each example's augmentation draws from `default_rng([seed, e, position])`. So a batch is a
pure function of (seed, step): starting at any step reads nothing before it, and the global
batch does not depend on the number of processes. Decoding runs in a thread pool (PIL
releases the GIL) with `prefetch` batches in flight.
"""
from __future__ import annotations

import collections
import concurrent.futures
import functools
import os
import sys
from typing import Callable, Iterator

import numpy as np

from fgvc_jax.data import datasets, preprocess
from fgvc_jax.data.errors import DataError


def _processes(process_index, process_count) -> tuple[int, int]:
    if process_index is None or process_count is None:
        import jax
        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index={process_index} not in [0, {process_count}).")
    return process_index, process_count


def _local_batch(global_batch_size: int, process_count: int) -> int:
    if global_batch_size <= 0 or global_batch_size % process_count:
        raise DataError(f"global_batch_size={global_batch_size} must be a positive multiple of "
                        f"the process count {process_count}.")
    return global_batch_size // process_count


@functools.lru_cache(maxsize=2)
def epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)


def _load(source, batches, decode: Callable, crop: int, workers: int,
          prefetch: int) -> Iterator[dict]:
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


def train_iterator(config, *, global_batch_size: int, seed: int, start_step: int = 0,
                   process_index: int | None = None,
                   process_count: int | None = None) -> Iterator[dict]:
    """Endless host-local training batches {image uint8 (L, C, C, 3), label int32 (L,)}."""
    p, count = _processes(process_index, process_count)
    local = _local_batch(global_batch_size, count)
    source = datasets.data_source(config, config.train_split)
    n = len(source)
    steps_per_epoch = n // global_batch_size
    if steps_per_epoch == 0:
        raise DataError(f"Split {config.train_split!r} has {n} examples, fewer than one global "
                        f"batch of {global_batch_size}.")
    aug = preprocess.Augment.train(config)

    def batches():
        step = start_step
        while True:
            epoch, b = divmod(step, steps_per_epoch)
            positions = np.arange(b * global_batch_size + p * local,
                                  b * global_batch_size + (p + 1) * local)
            yield (epoch_permutation(seed, epoch, n)[positions],
                   [(seed, epoch, int(q)) for q in positions], local)
            step += 1

    def decode(data, key):
        return preprocess.train_image(data, np.random.default_rng(key), aug)

    for batch in _load(source, batches(), decode, aug.crop, config.num_workers, config.prefetch):
        del batch["mask"]
        yield batch


def eval_iterator(config, *, split: str | None = None, global_batch_size: int,
                  process_index: int | None = None,
                  process_count: int | None = None) -> Iterator[dict]:
    """The whole split once, in order: {image, label, mask}; mask is False on padding."""
    p, count = _processes(process_index, process_count)
    local = _local_batch(global_batch_size, count)
    source = datasets.data_source(config, split or config.test_split)
    n = len(source)
    aug = preprocess.Augment.eval(config)

    def batches():
        for start in range(0, n, global_batch_size):
            lo = min(start + p * local, n)
            hi = min(start + (p + 1) * local, n)
            yield range(lo, hi), [None] * (hi - lo), local

    yield from _load(source, batches(), lambda data, _: preprocess.eval_image(data, aug),
                     aug.crop, config.num_workers, config.prefetch)


def to_global(batch: dict, mesh) -> dict:
    """Host-local numpy batch → global jax.Arrays sharded along mesh axis 'data'."""
    import jax
    from jax.sharding import NamedSharding, PartitionSpec as P
    sharding = NamedSharding(mesh, P("data"))
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
            for k, v in batch.items()}
