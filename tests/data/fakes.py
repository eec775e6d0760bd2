"""Tiny copies of the official releases: same folder layout, list files and .mat files.

Each writer returns what a correct builder must produce: class names and, per split,
{file name relative to the release root: label}.
"""

from __future__ import annotations

import tarfile
import uuid
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image


def jpeg(path: Path, seed: int, size=(40, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)


def tar(folder: Path, archive: Path, arcname: str | None = None) -> Path:
    with tarfile.open(archive, "w:gz" if archive.suffix in (".tgz", ".gz") else "w") as t:
        t.add(folder, arcname=arcname or folder.name)
    return archive


def _cells(strings) -> np.ndarray:
    """A column cell array of strings, as MATLAB writes file lists."""
    out = np.empty((len(strings), 1), dtype=object)
    for i, s in enumerate(strings):
        out[i, 0] = s
    return out


def cub(root: Path, classes=3, per_class=4):
    """CUB_200_2011/: images/<id>.<Name>/<Name>_<n>.jpg and the five list files."""
    base = root / "CUB_200_2011"
    names = [f"{c + 1:03d}.Bird_{chr(65 + c)}" for c in range(classes)]
    rows, expected = [], {"train": {}, "test": {}}
    for c, name in enumerate(names):
        for k in range(per_class):
            rel = f"{name}/{name.split('.')[1]}_{k:04d}_{c}.jpg"
            jpeg(base / "images" / rel, seed=len(rows))
            is_train = k % 2
            rows.append((len(rows) + 1, rel, c + 1, is_train))
            expected["train" if is_train else "test"][f"images/{rel}"] = c
    (base / "classes.txt").write_text("".join(f"{i + 1} {n}\n" for i, n in enumerate(names)))
    (base / "images.txt").write_text("".join(f"{i} {rel}\n" for i, rel, _, _ in rows))
    (base / "image_class_labels.txt").write_text("".join(f"{i} {c}\n" for i, _, c, _ in rows))
    (base / "train_test_split.txt").write_text("".join(f"{i} {t}\n" for i, _, _, t in rows))
    return names, expected


def stanford_dogs(root: Path, classes=3, per_class=4):
    """images.tar (Images/<wnid>-<breed>/<wnid>_<n>.jpg) and lists.tar (*_list.mat)."""
    work = root / "work"
    names = sorted(f"n0208{5620 + c}-Breed_{chr(65 + c)}" for c in range(classes))
    lists = {"train": ([], []), "test": ([], [])}
    expected = {"train": {}, "test": {}}
    for c, name in enumerate(names):
        for k in range(per_class):
            rel = f"{name}/{name.split('-')[0]}_{100 + k}.jpg"
            jpeg(work / "Images" / rel, seed=c * 100 + k)
            split = "train" if k < per_class // 2 + 1 else "test"
            lists[split][0].append(rel)
            lists[split][1].append(c + 1)
            expected[split][f"Images/{rel}"] = c
    mats = work / "lists"
    mats.mkdir()
    everything = lists["train"][0] + lists["test"][0]
    for split, (files, labels) in list(lists.items()) + [("file", ([*everything], None))]:
        content = {
            "file_list": _cells(files),
            "annotation_list": _cells([f.removesuffix(".jpg") for f in files]),
        }
        content["labels"] = np.array(
            labels if labels else lists["train"][1] + lists["test"][1], dtype=float
        ).reshape(-1, 1)
        scipy.io.savemat(mats / f"{split}_list.mat", content)
    tar(work / "Images", root / "images.tar")
    with tarfile.open(root / "lists.tar", "w") as t:
        for mat in sorted(mats.iterdir()):
            t.add(mat, arcname=mat.name)
    return names, expected


def _annotations(fnames, classes=None) -> np.ndarray:
    """A 1×N MATLAB struct array like cars_*_annos.mat's `annotations`."""
    fields = (
        ["bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2"] + (["class"] if classes else []) + ["fname"]
    )
    out = np.empty((1, len(fnames)), dtype=[(f, object) for f in fields])
    for i, fname in enumerate(fnames):
        values = [
            np.array([[1]], np.uint8),
            np.array([[2]], np.uint8),
            np.array([[30]], np.uint8),
            np.array([[20]], np.uint8),
        ]
        if classes:
            values.append(np.array([[classes[i]]], np.uint8))
        out[0, i] = tuple(values + [np.array([fname])])
    return out


def stanford_cars(root: Path, classes=3, per_class=4, archives=True):
    """cars_train/, cars_test/ (.tgz), car_devkit.tgz, cars_test_annos_withlabels.mat."""
    work = root / "work" if archives else root
    names = [f"Maker Model {c} 20{10 + c}" for c in range(classes)]
    expected = {"train": {}, "test": {}}
    for split in ("train", "test"):
        fnames, labels = [], []
        for i in range(classes * per_class):
            fname = f"{i + 1:05d}.jpg"
            jpeg(work / f"cars_{split}" / fname, seed=i + (0 if split == "train" else 1000))
            fnames.append(fname)
            labels.append((i * 7 + (split == "test")) % classes + 1)
            expected[split][f"cars_{split}/{fname}"] = labels[-1] - 1
        if split == "train":
            devkit = work / "devkit"
            devkit.mkdir(parents=True, exist_ok=True)
            scipy.io.savemat(
                devkit / "cars_meta.mat", {"class_names": np.array([names], dtype=object)}
            )
            scipy.io.savemat(
                devkit / "cars_train_annos.mat", {"annotations": _annotations(fnames, labels)}
            )
        else:
            scipy.io.savemat(
                work / "devkit" / "cars_test_annos.mat", {"annotations": _annotations(fnames)}
            )
            scipy.io.savemat(
                root / "cars_test_annos_withlabels.mat",
                {"annotations": _annotations(fnames, labels)},
            )
    if archives:
        tar(work / "cars_train", root / "cars_train.tgz")
        tar(work / "cars_test", root / "cars_test.tgz")
        tar(work / "devkit", root / "car_devkit.tgz")
    return names, expected


AIRCRAFT = [
    ("707-320", "Boeing 707", "Boeing"),
    ("727-200", "Boeing 727", "Boeing"),
    ("A300B4", "A300", "Airbus"),
    ("Cessna 172", "Cessna 172", "Cessna"),
]


def fgvc_aircraft(root: Path, per_class=4):
    """fgvc-aircraft-2013b.tar.gz: data/images/<id>.jpg, names and per-level split lists."""
    base = root / "work" / "fgvc-aircraft-2013b"
    data = base / "data"
    levels = {"variant": 0, "family": 1, "manufacturer": 2}
    plural = {"variant": "variants", "family": "families", "manufacturer": "manufacturers"}
    for level, col in levels.items():
        names = list(dict.fromkeys(row[col] for row in AIRCRAFT))
        (data / f"{plural[level]}.txt").parent.mkdir(parents=True, exist_ok=True)
        (data / f"{plural[level]}.txt").write_text("".join(n + "\n" for n in names))
    expected = {level: {"train": {}, "val": {}, "trainval": {}, "test": {}} for level in levels}
    lines = {(level, s): [] for level in levels for s in ("train", "val", "trainval", "test")}
    for c, row in enumerate(AIRCRAFT):
        for k in range(per_class):
            image_id = f"{1000000 + c * 100 + k:07d}"
            jpeg(data / "images" / f"{image_id}.jpg", seed=c * 100 + k, size=(40, 50))
            split = ("train", "val", "test", "test")[k % 4]
            for level, col in levels.items():
                names = list(dict.fromkeys(r[col] for r in AIRCRAFT))
                for s in [split, "trainval"] if split != "test" else ["test"]:
                    lines[level, s].append(f"{image_id} {row[col]}\n")
                    expected[level][s][f"data/images/{image_id}.jpg"] = names.index(row[col])
    for (level, s), rows in lines.items():
        (data / f"images_{level}_{s}.txt").write_text("".join(rows))
    (data / "images_box.txt").write_text("")
    tar(base, root / "fgvc-aircraft-2013b.tar.gz")
    return expected


def nabirds(root: Path, leaves=(817, 295, 1010), per_class=4):
    """nabirds.tar.gz: images/<0817>/<hex>.jpg and the list files, non-leaf classes too."""
    base = root / "work" / "nabirds"
    classes = {0: "Birds", 1: "Perching Birds", 2: "Owls"}
    classes.update({leaf: f"Species {leaf} (Adult)" for leaf in leaves})
    hierarchy = [(1, 0), (2, 0)] + [(leaf, 1 + i % 2) for i, leaf in enumerate(leaves)]
    rows, expected = [], {"train": {}, "test": {}}
    leaf_index = {c: k for k, c in enumerate(sorted(leaves))}
    for c in leaves:
        for k in range(per_class):
            u = uuid.UUID(int=c * 1000 + k)
            rel = f"{c:04d}/{u.hex}.jpg"
            jpeg(base / "images" / rel, seed=c + k)
            is_train = int(k % 2 == 0)
            rows.append((str(u), rel, c, is_train))
            expected["train" if is_train else "test"][f"images/{rel}"] = leaf_index[c]
    (base / "classes.txt").write_text("".join(f"{i} {n}\n" for i, n in classes.items()))
    (base / "hierarchy.txt").write_text("".join(f"{a} {b}\n" for a, b in hierarchy))
    (base / "images.txt").write_text("".join(f"{u} {rel}\n" for u, rel, _, _ in rows))
    (base / "image_class_labels.txt").write_text("".join(f"{u} {c}\n" for u, _, c, _ in rows))
    (base / "train_test_split.txt").write_text("".join(f"{u} {t}\n" for u, _, _, t in rows))
    names = [classes[c] for c in sorted(leaves)]
    tar(base, root / "nabirds.tar.gz")
    return names, expected


def class_folders(
    root: Path, splits=("train", "test"), classes=("Acer", "Betula", "Corylus"), per_class=3
):
    """root/<split>/<class>/*.jpg (the user's own data, and the WebFG-496 archives)."""
    expected = {}
    for s, split in enumerate(splits):
        expected[split] = {}
        for c, name in enumerate(classes):
            for k in range(per_class + s):
                rel = f"{split}/{name}/img_{k}.jpg"
                jpeg(root / rel, seed=s * 1000 + c * 10 + k)
                expected[split][rel] = c
    return list(classes), expected
