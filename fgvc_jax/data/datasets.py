"""Config name → prepared TFDS builder: catalog or project builder, offline files first."""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import time
import urllib.parse
from pathlib import Path

import tensorflow_datasets as tfds

from fgvc_jax.data import lock, splits
from fgvc_jax.data.builders import aircraft, cars, cub, dogs, folder, nabirds, synthetic_fgvc
from fgvc_jax.data.config import LABEL_LEVELS, check_name
from fgvc_jax.data.errors import DataError
from fgvc_jax.runtime.progress import Progress, eta

_PROJECT = {
    "cub": cub.Cub,
    "stanford_dogs": dogs.StanfordDogs,
    "stanford_cars": cars.StanfordCars,
    "fgvc_aircraft": aircraft.FGVCAircraft,
    "nabirds": nabirds.NABirds,
    "webfg_bird": folder.WebBird,
    "webfg_aircraft": folder.WebAircraft,
    "webfg_car": folder.WebCar,
}
_CATALOG = {"cub": "caltech_birds2011", "stanford_dogs": "stanford_dogs"}


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What a trained model needs to know of its dataset (written into the workdir)."""

    name: str
    num_classes: int
    class_names: list[str]
    num_examples: dict[str, int]
    version: str = ""
    fingerprint: str = ""  # of the name, version, classes and split sizes (and a folder's files)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _dirs(config) -> tuple[Path, Path]:
    data_dir = Path(os.path.expanduser(config.data_dir))
    manual = config.manual_dir
    manual_dir = Path(os.path.expanduser(manual)) if manual else data_dir / "downloads" / "manual"
    return data_dir, manual_dir


def _folder_builder(config, **kw):
    if not config.folder_root:
        raise DataError(
            "Dataset 'folder' needs config.folder_root: a folder laid out as "
            "root/<split>/<class>/*.jpg."
        )
    root = Path(os.path.expanduser(config.folder_root)).resolve()
    if not root.is_dir():
        raise DataError(
            f"config.folder_root={root} is not a folder (expected root/<split>/<class>/*.jpg)."
        )
    slug = re.sub(r"[^a-z0-9_]", "_", root.name.lower())[:40]
    digest = hashlib.sha1(str(root).encode()).hexdigest()[:8]
    return folder.ImageFolder(
        source=root,
        skip_corrupt=config.skip_corrupt,
        config=tfds.core.BuilderConfig(name=f"{slug}_{digest}"),
        **kw,
    )


_BUILDERS: dict[tuple, tfds.core.DatasetBuilder] = {}


def builder(config) -> tfds.core.DatasetBuilder:
    """The prepared builder of `config.name`; prepares it first if needed (idempotent)."""
    check_name(config.name)
    key = (
        config.name,
        config.data_dir,
        config.manual_dir,
        config.folder_root,
        config.label_level,
        tuple(sorted(config.synthetic.items())),
    )
    if key not in _BUILDERS:
        _BUILDERS[key] = _prepared_builder(config)
    return _BUILDERS[key]


def _prepared_builder(config) -> tfds.core.DatasetBuilder:
    """`_prepare` under a lock file in data_dir: runs started together on a new data_dir (a
    sweep) prepare the dataset once; the others wait, then reuse it."""
    data_dir = _dirs(config)[0]
    with lock.held(data_dir / f".prepare-{config.name}.lock", f"preparing {config.name}"):
        try:
            return _prepare(config)
        except Exception as e:
            if not _disk_full(e):
                raise
            free = shutil.disk_usage(data_dir).free / 2**30
            raise DataError(
                f"No space left on device to prepare dataset {config.name!r} in {data_dir} "
                f"({free:.2f} GiB free now): free space there, or set config.data.data_dir "
                "to a larger disk."
            ) from None


def _disk_full(e: BaseException) -> bool:
    """Whether `e` (or what caused it) is a full disk; TFDS's writers report it as a
    RuntimeError naming the OS error."""
    while e is not None:
        if getattr(e, "errno", None) in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(e) or "Disk quota exceeded" in str(e):
            return True
        e = e.__cause__ or e.__context__
    return False


def _prepare(config) -> tfds.core.DatasetBuilder:
    data_dir, manual = _dirs(config)
    kw = dict(data_dir=str(data_dir), file_format="array_record")
    if config.name == "synthetic_fgvc":
        b = synthetic_fgvc.SyntheticFGVC(params=synthetic_fgvc.Params(**config.synthetic), **kw)
    elif config.name == "folder":
        b = _folder_builder(config, **kw)
        if b.is_prepared() and _folder_changed(b):
            shutil.rmtree(b.data_dir)
            b = _folder_builder(config, **kw)
    else:
        cls = _PROJECT[config.name]
        if cls is aircraft.FGVCAircraft:
            if config.label_level not in LABEL_LEVELS:
                raise DataError(
                    f"config.label_level={config.label_level!r}; expected one of "
                    f"{', '.join(LABEL_LEVELS)}."
                )
            kw["config"] = config.label_level
        b = cls(**kw)
        if not b.is_prepared():
            b = _prepare_release(config, cls, b, manual, data_dir / "downloads" / "extracted", kw)
    if not b.is_prepared():
        _prepare_locally(b, config.name)
    return b


def _prepare_locally(b, name: str) -> None:
    """`b.download_and_prepare()` of a dataset made from local files or generated, with our
    own console lines (what, where, progress) instead of TFDS's download-size line and bars."""
    from tensorflow_datasets.core import utils

    t0 = time.perf_counter()
    print(f"Preparing dataset {name} in {b.data_dir} (once; later runs reuse it).", flush=True)
    b._log_download_bytes = b._log_download_done = lambda: None  # TFDS's own lines

    original, utils.tqdm = utils.tqdm, _split_progress(name)
    tfds.disable_progress_bar()
    try:
        b.download_and_prepare()
    finally:
        utils.tqdm = original
        tfds.enable_progress_bar()
    sizes = ", ".join(f"{k} {v.num_examples}" for k, v in sorted(b.info.splits.items()))
    print(f"Dataset {name} prepared in {eta(time.perf_counter() - t0)}: {sizes} images.")


def _split_progress(name: str):
    """A stand-in for TFDS's progress bars while `name` is prepared: our progress line for
    each split's examples (with an ETA when the builder gives their count), nothing else."""
    from tensorflow_datasets.core import utils

    def tqdm(iterable=None, *args, desc="", total=None, **kw):
        split = re.fullmatch(r"Generating (\S+) examples\.\.\.", desc or "")
        if split is None:
            return utils.EmptyTqdm(iterable)
        total = total or (len(iterable) if hasattr(iterable, "__len__") else None)
        return _counted(iterable, Progress(f"Preparing {name} {split.group(1)}", total))

    return tqdm


def _counted(iterable, bar):
    """`iterable`, reporting each item to the progress `bar`."""
    for i, item in enumerate(iterable, 1):
        bar.update(i)
        yield item
    bar.close()


def _folder_changed(b) -> bool:
    """Whether the user's folder differs from the one `b` was prepared from (says so)."""
    then = (b.info.metadata or {}).get("fingerprint")
    now = folder.fingerprint(b._source)
    if then == now:
        return False
    counts = f"{then['images']} images then, {now['images']} now" if then else "no fingerprint"
    logging.warning(
        "The folder %s changed since its dataset was prepared (images added, "
        "removed or modified; %s): rebuilding the dataset in %s.",
        b._source,
        counts,
        b.data_dir,
    )
    return True


def _prepare_release(config, cls, b, manual, extract_root, kw):
    """Catalog data already there, else the user's files, else a catalog download."""
    catalog = _CATALOG.get(config.name)
    cb = (
        tfds.builder(catalog, data_dir=kw["data_dir"], file_format="array_record")
        if catalog
        else None
    )
    if cb is not None and cb.is_prepared():
        return cb
    source = cls.locate(manual, extract_root / config.name)
    if source is not None:
        return cls(source=source, skip_corrupt=config.skip_corrupt, **kw)
    missing = (
        f"Dataset {config.name!r} not found. Put {cls.EXPECTED} in {manual} "
        "(or set config.data.manual_dir to the folder that holds them)."
    )
    if cb is not None and config.download and not _reachable(cb.info.homepage):
        raise DataError(
            f"{missing} The TFDS catalog download of {catalog!r} is not possible: "
            f"{urllib.parse.urlparse(cb.info.homepage).hostname} cannot be reached "
            "(no network?)."
        )
    if cb is not None and config.download:
        try:
            cb.download_and_prepare()
            return cb
        except Exception as e:  # no network on compute nodes, dead links, ...
            raise DataError(
                f"{missing} The TFDS catalog download of {catalog!r} failed too: "
                f"{type(e).__name__}: {e}"
            ) from e
    raise DataError(missing)


def _reachable(url: str, timeout: float = 5.0) -> bool:
    """Whether the host of `url` accepts a connection within `timeout` seconds (so that a
    machine without network fails in seconds, not after minutes of download retries)."""
    parts = urllib.parse.urlparse(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def info(b: tfds.core.DatasetBuilder, name: str) -> DatasetInfo:
    names = list(b.info.features["label"].names)
    sizes = {k: v.num_examples for k, v in b.info.splits.items()}
    identity = json.dumps(
        [
            name,
            str(b.info.version),
            names,
            sorted(sizes.items()),
            (b.info.metadata or {}).get("fingerprint"),
        ],
        sort_keys=True,
        default=str,
    )
    return DatasetInfo(
        name=name,
        num_classes=len(names),
        class_names=names,
        num_examples=sizes,
        version=str(b.info.version),
        fingerprint=hashlib.sha256(identity.encode()).hexdigest()[:16],
    )


def prepare(config) -> DatasetInfo:
    """Builds the dataset of `config` if needed, checks its configured splits
    (`check_splits`) and describes it."""
    check_splits(config)
    return info(builder(config), config.name)


def _split_names(split: str) -> list[str]:
    """The split names in a TFDS split expression: 'train[:80%]+val' → ['train', 'val']."""
    return [re.split(r"\[", part)[0].strip() for part in re.split(r"\s*\+\s*", split)]


def check_splits(config) -> None:
    """Raises a DataError unless config.train_split, config.val_split (when set) and
    config.test_split name splits of the prepared dataset (the message names the missing
    split and the splits there are)."""
    have = sorted(builder(config).info.splits)
    where = (
        f" (the splits of a 'folder' dataset are the sub-folders of {config.folder_root})"
        if config.name == "folder"
        else ""
    )
    for key in ("train_split", "val_split", "test_split"):
        if not config.get(key):
            continue
        missing = [s for s in _split_names(config[key]) if s not in have]
        if missing:
            raise DataError(
                f"config.{key}={config[key]!r}: dataset {config.name!r} has no split "
                f"{missing[0]!r}; it has {', '.join(have)}{where}."
            )


def data_source(config, split: str):
    """Random-access records {'image': JPEG bytes, 'label': int, ...} of `split` (a split
    name, a TFDS split expression, or a validation split carved from a training split,
    `splits.resolve`)."""
    b = builder(config)
    if splits.is_carved(split):
        base = data_source(config, split.split("~")[0])
        return splits.carved_source(split, base, Path(b.data_dir), config.get("val_seed", 0))
    base_split = re.split(r"[\[+]", split)[0]
    if base_split not in b.info.splits:
        raise DataError(
            f"Dataset {config.name!r} has no split {split!r}; it has "
            f"{', '.join(sorted(b.info.splits))}."
        )
    skip = {
        k: tfds.decode.SkipDecoding()
        for k, f in b.info.features.items()
        if isinstance(f, tfds.features.Image)
    }
    return b.as_data_source(split, decoders=skip)
