"""NABirds from the user's archive; the 555 leaf classes remapped to labels 0..554."""

from pathlib import Path

from fgvc_jax.data.builders import base


class NABirds(base.ManualBuilder, skip_registration=True):
    name = "nabirds"
    EXPECTED = (
        "nabirds.tar.gz, or its extracted folder nabirds/ (images/, images.txt, "
        "image_class_labels.txt, train_test_split.txt, classes.txt, hierarchy.txt)"
    )

    @classmethod
    def locate(cls, manual_dir: Path, extract_dir: Path):
        return base.find(manual_dir, extract_dir, "nabirds", ("nabirds.tar.gz", "nabirds.tar"))

    def read_source(self, root):
        classes = {int(i): n for i, n in base.read_pairs(root / "classes.txt")}
        parents = {int(p) for _, p in base.read_pairs(root / "hierarchy.txt")}
        images = dict(base.read_pairs(root / "images.txt"))
        labels = {k: int(v) for k, v in base.read_pairs(root / "image_class_labels.txt")}
        is_train = dict(base.read_pairs(root / "train_test_split.txt"))
        for fname, table in (
            ("image_class_labels.txt", labels),
            ("train_test_split.txt", is_train),
        ):
            base.disagreement(
                f"{root / fname} does not list the images of images.txt",
                sorted(set(images) ^ set(table)),
            )
        leaves = sorted(set(labels.values()))
        base.disagreement(
            f"{root / 'image_class_labels.txt'} uses classes that are not leaves "
            "of hierarchy.txt or not in classes.txt",
            [str(c) for c in leaves if c in parents or c not in classes],
        )
        base.disagreement(
            f"{root / 'image_class_labels.txt'} disagrees with the class folders of images/",
            [
                f"{images[k]}: labelled {c}"
                for k, c in labels.items()
                if Path(images[k]).parent.name.lstrip("0") != str(c).lstrip("0")
            ],
        )
        index = {c: k for k, c in enumerate(leaves)}
        splits = {"train": [], "test": []}
        for k in sorted(images):
            split = "train" if is_train[k] == "1" else "test"
            splits[split].append((root / "images" / images[k], index[labels[k]]))
        base.warn_unlisted(root / "images", [p for items in splits.values() for p, _ in items])
        return [classes[c] for c in leaves], splits
