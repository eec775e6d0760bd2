"""Stanford Cars from the user's files (the catalog's cars196 download addresses are dead)."""

from pathlib import Path

import numpy as np

from fgvc_jax.data.builders import base
from fgvc_jax.data.builders.dogs import _strings, load_mat
from fgvc_jax.data.errors import DataError

TEST_LABELS = "cars_test_annos_withlabels.mat"


class StanfordCars(base.ManualBuilder, skip_registration=True):
    name = "stanford_cars"
    EXPECTED = (
        "cars_train/ (or cars_train.tgz), cars_test/ (or cars_test.tgz), the devkit "
        "(devkit/ or car_devkit.tgz, with cars_meta.mat and cars_train_annos.mat) and "
        f"{TEST_LABELS} (the test labels)"
    )

    @classmethod
    def locate(cls, manual_dir: Path, extract_dir: Path):
        """Gathers the four parts in `extract_dir` (links to folders, archives extracted, again
        if they changed)."""
        parts = (
            ("cars_train", "cars_train.tgz"),
            ("cars_test", "cars_test.tgz"),
            ("devkit", "car_devkit.tgz"),
        )
        if not any((manual_dir / p).exists() for pair in parts for p in pair):
            return None
        extract_dir.mkdir(parents=True, exist_ok=True)
        for folder, archive in parts:
            if (manual_dir / folder).is_dir():
                if not (extract_dir / folder).exists():
                    (extract_dir / folder).symlink_to((manual_dir / folder).resolve())
            elif (manual_dir / archive).is_file():
                base.extract(manual_dir / archive, extract_dir)
            elif not (extract_dir / folder).exists():
                raise DataError(f"Stanford Cars: missing {folder}/ or {archive} in {manual_dir}.")
        labels = next(
            (
                d / TEST_LABELS
                for d in (manual_dir, manual_dir / "devkit", extract_dir / "devkit")
                if (d / TEST_LABELS).is_file()
            ),
            None,
        )
        if labels is None:
            raise DataError(
                f"Stanford Cars: missing {TEST_LABELS} (the test labels) in {manual_dir}."
            )
        if not (extract_dir / TEST_LABELS).exists():
            (extract_dir / TEST_LABELS).symlink_to(labels.resolve())
        return extract_dir

    def read_source(self, root):
        names = _strings(load_mat(root / "devkit" / "cars_meta.mat")["class_names"])
        splits = {}
        train_annos = root / "devkit" / "cars_train_annos.mat"
        for split, folder, annos in (
            ("train", "cars_train", train_annos),
            ("test", "cars_test", root / TEST_LABELS),
        ):
            table = load_mat(annos)["annotations"]
            if "class" not in (table.dtype.names or ()):
                raise DataError(f"{annos} has no 'class' field: use the annotations with labels.")
            files = _strings(table["fname"])
            labels = [int(np.ravel(c)[0]) - 1 for c in np.ravel(table["class"])]
            base.disagreement(
                f"{annos} has classes outside 1..{len(names)}",
                [f for f, l in zip(files, labels) if not 0 <= l < len(names)],
            )
            splits[split] = [(root / folder / f, l) for f, l in zip(files, labels)]
        return names, splits
