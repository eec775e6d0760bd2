"""Class-folder datasets: the user's `root/<split>/<class>/*.jpg`, and WebFG-496.

A user's folder is fingerprinted when prepared (`fingerprint`: the list of its image files
with their sizes and modification times), so that a folder changed since can be rebuilt.
Hidden folders and files (names starting with '.') are neither splits, classes nor images.
"""

import hashlib
import re
from pathlib import Path

from fgvc_jax.data.builders import base
from fgvc_jax.data.errors import DataError


def read_class_folders(root: Path, splits: dict[str, str]):
    """Class names (sorted folder names) and items of each `root/<folder>/<class>/` split."""
    found = {}
    for split, folder in splits.items():
        if not re.fullmatch(r"[\w-]+", split):
            raise DataError(
                f"Split folder {root / folder}/: a split name may hold only letters, "
                "digits, '_' and '-'; rename the folder."
            )
        if not (root / folder).is_dir():
            raise DataError(
                f"Missing split folder {root / folder}/ (expected {root}/<split>/<class>/*.jpg)."
            )
        found[split] = base.class_folders(root / folder)
    names = sorted({c for classes in found.values() for c in classes})
    if not names:
        raise DataError(f"No class folders under {root}: expected {root}/<split>/<class>/*.jpg.")
    index = {n: i for i, n in enumerate(names)}
    items = {
        split: [(p, index[c]) for c, paths in classes.items() for p in paths]
        for split, classes in found.items()
    }
    empty = [
        f"{split}/{c}" for split, classes in found.items() for c, p in classes.items() if not p
    ]
    base.disagreement(f"Class folders under {root} without images", empty)
    return names, items


class ImageFolder(base.ManualBuilder, skip_registration=True):
    """Every sub-folder of `source` is a split, each of its sub-folders a class."""

    name = "image_folder"

    def read_source(self, root):
        if not root.is_dir():
            raise DataError(
                f"config.folder_root={root} is not a folder (expected root/<split>/<class>/*.jpg)."
            )
        self.info.metadata["fingerprint"] = fingerprint(root)
        splits = [d.name for d in base.visible(root) if d.is_dir()]
        return read_class_folders(root, {s: s for s in splits})


def fingerprint(root: Path) -> dict:
    """{'digest', 'images'}: a SHA-256 of every image path of `root/<split>/<class>/` (hidden
    ones left out) with its size and modification time in ns, and how many there are."""
    h, n = hashlib.sha256(), 0
    for split in (d for d in base.visible(root) if d.is_dir()):
        for c, paths in base.class_folders(split).items():
            for p in paths:
                st = p.stat()
                h.update(f"{split.name}/{c}/{p.name}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
                n += 1
    return {"digest": h.hexdigest(), "images": n}


class _WebFG(base.ManualBuilder, skip_registration=True):
    """WebFG-496: noisy web images in train/, clean test images in val/ (split 'test')."""

    KIND = ""

    @classmethod
    def locate(cls, manual_dir: Path, extract_dir: Path):
        return base.find(manual_dir, extract_dir, f"web-{cls.KIND}", (f"web-{cls.KIND}.tar.gz",))

    def read_source(self, root):
        return read_class_folders(root, {"train": "train", "test": "val"})


def _webfg(kind: str) -> type:
    expected = (
        f"web-{kind}.tar.gz, or its extracted folder web-{kind}/ (train/<class>/*.jpg "
        "web training images, val/<class>/*.jpg test images)"
    )
    return type(
        f"Web{kind.title()}",
        (_WebFG,),
        {"name": f"webfg_{kind}", "KIND": kind, "EXPECTED": expected},
        skip_registration=True,
    )


WebBird, WebAircraft, WebCar = _webfg("bird"), _webfg("aircraft"), _webfg("car")
