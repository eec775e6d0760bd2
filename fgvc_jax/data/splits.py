"""Which splits a run fits, validates and tests on (honest model selection).

- `data.val_fraction` > 0 (default 0.1): periodic evaluation and the best checkpoint use a
  validation split — the dataset's official one (`data.val_split`, e.g. FGVC-Aircraft's
  'val' while training on 'train'), else one carved from the training split: stratified
  (per class, the first round(fraction · n_c) of a permutation seeded by `data.val_seed`),
  deterministic, written `<train>~val@<fraction>` (its complement `<train>~fit@<fraction>`).
  The test split is read only at the end.
- `data.val_fraction` = 0: the papers' protocol — fit on everything (train + the official
  val split, e.g. FGVC-Aircraft's 'trainval'), evaluate on the test split.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np

from fgvc_jax.data.errors import DataError

_CARVED = re.compile(r"^(?P<base>[^~]+)~(?P<part>fit|val)@(?P<fraction>[0-9.]+)$")


@dataclasses.dataclass(frozen=True)
class Splits:
    fit: str  # what the run trains on
    val: str | None  # periodic evaluation and best checkpoint; None: the test split
    test: str


def resolve(config) -> Splits:
    """The run's splits from the data config (see the module docstring)."""
    fraction = float(config.get("val_fraction", 0.0) or 0.0)
    official = config.get("val_split", "") or ""
    if not 0.0 <= fraction < 1.0:
        raise DataError(f"config.data.val_fraction={fraction}; expected 0 <= fraction < 1.")
    if fraction == 0.0:
        fit = f"{config.train_split}+{official}" if official else config.train_split
        return Splits(fit=fit, val=None, test=config.test_split)
    if official:
        return Splits(fit=config.train_split, val=official, test=config.test_split)
    base = config.train_split
    return Splits(
        fit=f"{base}~fit@{fraction:g}", val=f"{base}~val@{fraction:g}", test=config.test_split
    )


def size(split: str, num_examples: dict[str, int], source) -> int:
    """Examples in `split`: from the dataset's split sizes for 'a' or 'a+b', else
    `len(source())` (carved or sliced splits)."""
    parts = [p.strip() for p in split.split("+")]
    if all(p in num_examples for p in parts):
        return sum(num_examples[p] for p in parts)
    return len(source())


def is_carved(split: str) -> bool:
    return _CARVED.match(split) is not None


def carve(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit indices, val indices), sorted: per class, round(fraction · n_c) examples (at least
    one when the class has two or more) of a permutation seeded by (seed, class) go to val."""
    fit, val = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[np.random.default_rng([seed, int(c)]).permutation(len(idx))]
        k = int(round(fraction * len(idx)))
        k = max(k, 1) if len(idx) >= 2 else 0
        val.append(idx[:k])
        fit.append(idx[k:])
    return np.sort(np.concatenate(fit)), np.sort(np.concatenate(val))


class Subset:
    """Random access to the records `indices` of `source` (a carved split)."""

    def __init__(self, source, indices: np.ndarray):
        self.source, self.indices = source, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i):
        return self.source[int(self.indices[i])]


def read_labels(source) -> np.ndarray:
    """Every record's label, read from each record."""
    return np.asarray([int(source[i]["label"]) for i in range(len(source))], np.int64)


def labels_of(source, cache_file: Path) -> np.ndarray:
    """Every record's label, read once and kept in `cache_file` (keyed by the record count)."""
    try:
        saved = json.loads(cache_file.read_text())
        if saved["count"] == len(source):
            return np.asarray(saved["labels"], np.int64)
    except (OSError, ValueError, KeyError):
        pass
    labels = read_labels(source)
    tmp = cache_file.with_suffix(".tmp")
    tmp.write_text(json.dumps({"count": len(source), "labels": labels.tolist()}))
    tmp.replace(cache_file)
    return labels


def carved_source(split: str, base_source, data_dir: Path, seed: int):
    """The `Subset` of `base_source` that a carved split name (`train~val@0.1`) denotes."""
    m = _CARVED.match(split)
    labels = labels_of(base_source, data_dir / f"labels_{m['base']}.json")
    fit, val = carve(labels, float(m["fraction"]), seed)
    return Subset(base_source, fit if m["part"] == "fit" else val)
