"""The decoded cache: every image of a split decoded and resized to S×S (bilinear) once.

Layout, inside the prepared dataset's folder (so it carries the dataset's name, config and
version, and goes away when the dataset is rebuilt):

    <dataset folder>/decoded/<split>_square_<S>/images.npy   (N, S, S, 3) uint8
                                               labels.npy   (N,) int32
                                               meta.json    what it was built from

A batch is one gather from a memory-mapped `.npy` (the page cache, shared by every process
of the host). Chosen over an array_record file of raw arrays: reading random batches of 32
images at S = 512 ran ~10× faster from the memory map (≈ 10–14k vs 0.8–1.4k images per core
second, uncompressed array_record, group size 1), and a fixed-shape split needs no
per-record framing. The cache is reused only when meta.json matches the dataset, version,
split, size, resize mode, filter and record count; otherwise it is rebuilt (a cache for
another S lives in another folder and is never read for this one). It is written into a
`.partial-*` folder renamed into place once complete, so an interrupted build is never
reused.

Verified: meta.json also holds each file's size and a BLAKE2b digest of every CHUNK bytes.
Every open checks the sizes and SAMPLED random chunks per file (all of them with
data.verify_cache, or when a build of this host was killed); a missing, truncated or changed
file is named in one warning and the cache rebuilt. The image file's blocks are allocated
before it is memory-mapped, so a full disk is one error line, not SIGBUS.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import errno
import hashlib
import json
import logging
import os
import random
import re
import shutil
import socket
import time
from pathlib import Path

import numpy as np

from fgvc_jax.data import datasets, lock, preprocess
from fgvc_jax.data.errors import DataError
from fgvc_jax.runtime import processes
from fgvc_jax.runtime.progress import Progress

MODES = ("decoded", "none")
FILTER = "bilinear"  # PIL's, as the host decode path
CHUNK = 1 << 24  # bytes per digest (16 MiB: a 5 GiB cache has 320 digests)
SAMPLED = 8  # chunks of each file checked at every open (128 MiB at most)


@dataclasses.dataclass(frozen=True)
class Cache:
    images: np.ndarray  # (N, S, S, 3) uint8, memory-mapped
    labels: np.ndarray  # (N,) int32
    path: Path

    def __len__(self) -> int:
        return len(self.labels)


def applies(config) -> bool:
    """Whether `config` reads the decoded cache: data.cache 'decoded' and resize_mode
    'square' (the 'shorter' mode keeps decoding every step)."""
    if config.cache not in MODES:
        raise DataError(
            f"config.data.cache={config.cache!r}; expected one of {', '.join(map(repr, MODES))}."
        )
    return config.cache == "decoded" and config.resize_mode == "square"


def folder(config, split: str, size: int) -> Path:
    b = datasets.builder(config)
    slug = re.sub(r"[^A-Za-z0-9_.-]", "_", split)
    return Path(b.data_dir) / "decoded" / f"{slug}_square_{size}"


def _meta(config, split: str, size: int, count: int) -> dict:
    b = datasets.builder(config)
    return {
        "dataset": config.name,
        "builder": b.name,
        "version": str(b.info.version),
        "builder_config": b.builder_config.name if b.builder_config else None,
        "split": split,
        "size": size,
        "resize_mode": "square",
        "filter": FILTER,
        "count": count,
    }


def _digests(file: Path) -> dict:
    """The size of `file` and a BLAKE2b digest of each CHUNK bytes of it."""
    sums = []
    with open(file, "rb") as f:
        while chunk := f.read(CHUNK):
            sums.append(hashlib.blake2b(chunk, digest_size=16).hexdigest())
    return {"size": file.stat().st_size, "chunk": CHUNK, "blake2b": sums}


def _damage(path: Path, files: dict, full: bool) -> str | None:
    """Why the cache at `path` cannot be used, naming the file (None if it can): every file's
    size, then the digests of SAMPLED random chunks of each file (of all of them if `full`)."""
    for name, want in files.items():
        try:
            size = (path / name).stat().st_size
        except FileNotFoundError:
            return f"{path / name} is missing"
        if size != want["size"]:
            return f"{path / name} is {size} bytes, {want['size']} were written"
    pick = random.SystemRandom()
    for name, want in files.items():
        sums, chunk = want["blake2b"], want["chunk"]
        chunks = range(len(sums))
        if not full and len(sums) > SAMPLED:
            chunks = sorted(pick.sample(chunks, SAMPLED))
        with open(path / name, "rb") as f:
            for i in chunks:
                f.seek(i * chunk)
                if hashlib.blake2b(f.read(chunk), digest_size=16).hexdigest() != sums[i]:
                    return (
                        f"{path / name} bytes {i * chunk}-{min((i + 1) * chunk, want['size'])} "
                        "differ from those written (digest mismatch)"
                    )
    return None


def _usable(path: Path, meta: dict, full: bool, warn: bool = True) -> bool:
    """Whether the cache at `path` was built for `meta` and verifies (`_damage`); a damaged
    cache is named in one warning (`warn`)."""
    try:
        written = json.loads((path / "meta.json").read_text())
    except (OSError, ValueError):
        return False
    files = written.pop("files", None)
    if written != meta:
        return False
    if not files:
        if warn:
            logging.warning(
                "Decoded cache %s has no digests (an older version's): rebuilding.", path
            )
        return False
    why = _damage(path, files, full)
    if why and warn:
        logging.warning("Decoded cache damaged: %s; rebuilding it.", why)
    return why is None


def _load(path: Path) -> Cache:
    images = np.load(path / "images.npy", mmap_mode="r")
    return Cache(images, np.load(path / "labels.npy"), path)


def _crashed_builds(path: Path) -> list[Path]:
    """`.partial-*` folders of `path` left by a build of this host that no longer runs."""
    host = socket.gethostname()
    return [
        old
        for old in path.parent.glob(f"{path.name}.partial-{host}-*")
        if not _alive(int(old.name.rsplit("-", 1)[1]))
    ]


def load(config, split: str, size: int, workers: int = 0) -> Cache:
    """The decoded cache of `split` at S = `size`, verified (`_usable`: sizes and sampled
    digests; every digest with data.verify_cache or after a build of this host crashed);
    built first, under the data folder's lock (`lock.held`), when missing, stale or
    damaged."""
    source = datasets.data_source(config, split)
    meta = _meta(config, split, size, len(source))
    path = folder(config, split, size)
    crashed = _crashed_builds(path)
    full = bool(config.get("verify_cache", False)) or bool(crashed)
    if _usable(path, meta, full):
        for old in crashed:  # checked in full once: not again at every open
            shutil.rmtree(old, ignore_errors=True)
        return _load(path)
    try:
        with lock.held(path.parent / ".lock", f"building the decoded cache {path}"):
            if not _usable(path, meta, full, warn=False):  # else: another process built it
                if path.exists():
                    shutil.rmtree(path)
                _build(source, path, meta, workers or os.cpu_count() or 1)
    except OSError as e:
        if e.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise
        raise DataError(
            f"The decoded cache {path} cannot be built: {e.filename or path.parent} "
            f"cannot be written ({e.strerror}). Make data.data_dir writable, or train with "
            "--config.data.cache=none (every image decoded at every step)."
        ) from None
    if not _usable(path, meta, full=True):
        raise DataError(f"The decoded cache {path} just built does not verify; delete the folder.")
    return _load(path)


def _alive(pid: int) -> bool:
    """Whether another process of this host that may be building a cache still runs."""
    return pid != os.getpid() and processes.alive(pid)


def _allocate(file: Path, shape: tuple) -> np.ndarray:
    """`file`, an .npy of uint8 `shape`, memory-mapped with all its blocks allocated first: a
    disk too small is a DataError naming the folder and the space needed, where writing into
    a sparse memory map would end the process with SIGBUS."""
    need = int(np.prod(shape)) + 4096  # the array and its header
    try:
        images = np.lib.format.open_memmap(file, "w+", np.uint8, shape)
        with open(file, "r+b") as f:
            os.posix_fallocate(f.fileno(), 0, os.path.getsize(file))
        return images
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        free = shutil.disk_usage(file.parent).free
        raise DataError(
            f"No space for the decoded cache in {file.parent.parent}: {need / 2**30:.2f} GiB "
            f"needed, {free / 2**30:.2f} GiB free ({e.strerror}). Free space there, or train "
            "with --config.data.cache=none (every image decoded at every step)."
        ) from None


def _build(source, path: Path, meta: dict, workers: int) -> None:
    n, s = meta["count"], meta["size"]
    for old in _crashed_builds(path):
        shutil.rmtree(old, ignore_errors=True)
    tmp = path.with_name(f"{path.name}.partial-{socket.gethostname()}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    t0 = time.perf_counter()
    try:
        images = _allocate(tmp / "images.npy", (n, s, s, 3))
        labels = np.zeros((n,), np.int32)

        def task(i):
            record = source[i]
            images[i] = preprocess.square_image(record["image"], s)  # noqa: F821 (deleted after)
            labels[i] = int(record["label"])

        bar = Progress(f"Building the decoded cache {path.name}", n)
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            for i, f in enumerate([pool.submit(task, i) for i in range(n)], 1):
                f.result()
                bar.update(i)
        bar.close()
        images.flush()  # msync: on disk before the rename
        del images
        np.save(tmp / "labels.npy", labels)
        files = {name: _digests(tmp / name) for name in ("images.npy", "labels.npy")}
        (tmp / "meta.json").write_text(json.dumps({**meta, "files": files}))
        os.rename(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    gib = (n * s * s * 3) / 2**30
    print(
        f"Decoded cache {path}: {n} images {s}x{s}x3 uint8, {gib:.2f} GiB, built in "
        f"{time.perf_counter() - t0:.0f} s.",
        flush=True,
    )
