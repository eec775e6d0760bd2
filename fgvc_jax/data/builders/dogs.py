"""Stanford Dogs from the user's images.tar + lists.tar (offline path beside the catalog)."""

from pathlib import Path

import numpy as np
import scipy.io

from fgvc_jax.data.builders import base
from fgvc_jax.data.errors import DataError


def _strings(cell) -> list[str]:
    """A MATLAB cell array of strings, as scipy.io.loadmat returns it, as a Python list."""
    return [str(np.ravel(x)[0]) for x in np.ravel(cell)]


def load_mat(path: Path) -> dict:
    if not path.is_file():
        raise DataError(f"Missing {path.name} in {path.parent} (part of the official release).")
    try:
        return scipy.io.loadmat(path)
    except Exception as e:
        raise DataError(f"Cannot read {path}: {e}") from e


class StanfordDogs(base.ManualBuilder, skip_registration=True):
    name = "stanford_dogs_manual"
    EXPECTED = (
        "images.tar and lists.tar (or their contents: the Images/ folder and "
        "train_list.mat, test_list.mat)"
    )

    @classmethod
    def locate(cls, manual_dir: Path, extract_dir: Path):
        """The user's extracted files, else the archives (extracted again if they changed),
        else what an earlier extraction left."""

        def complete(root):
            return (root / "Images").is_dir() and (root / "train_list.mat").is_file()

        if complete(manual_dir):
            return manual_dir
        if (manual_dir / "images.tar").is_file() and (manual_dir / "lists.tar").is_file():
            base.extract(manual_dir / "images.tar", extract_dir)
            base.extract(manual_dir / "lists.tar", extract_dir)
            return extract_dir
        return extract_dir if complete(extract_dir) else None

    def read_source(self, root):
        names = [d.name for d in base.visible(root / "Images") if d.is_dir()]
        splits = {}
        for split in ("train", "test"):
            mat = load_mat(root / f"{split}_list.mat")
            files = _strings(mat["file_list"])
            labels = np.ravel(mat["labels"]).astype(int) - 1
            base.disagreement(
                f"{root / f'{split}_list.mat'} has labels outside 1..{len(names)}",
                [f for f, l in zip(files, labels) if not 0 <= l < len(names)],
            )
            base.disagreement(
                f"{root / f'{split}_list.mat'} disagrees with the class folders of Images/",
                [
                    f"{f}: labelled {names[l]}"
                    for f, l in zip(files, labels)
                    if Path(f).parent.name != names[l]
                ],
            )
            splits[split] = [(root / "Images" / f, int(l)) for f, l in zip(files, labels)]
        return names, splits
