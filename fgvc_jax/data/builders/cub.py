"""CUB-200-2011 from the user's CUB_200_2011.tgz or its extracted folder (offline path)."""

from pathlib import Path

from fgvc_jax.data.builders import base


class Cub(base.ManualBuilder, skip_registration=True):
    name = "cub_manual"
    EXPECTED = (
        "CUB_200_2011.tgz, or its extracted folder CUB_200_2011/ (images/, images.txt, "
        "image_class_labels.txt, train_test_split.txt, classes.txt)"
    )

    @classmethod
    def locate(cls, manual_dir: Path, extract_dir: Path):
        return base.find(manual_dir, extract_dir, "CUB_200_2011", ("CUB_200_2011.tgz",))

    def read_source(self, root):
        classes = {int(i): n for i, n in base.read_pairs(root / "classes.txt")}
        order = sorted(classes)
        names = [classes[i] for i in order]
        index = {cid: k for k, cid in enumerate(order)}
        images = dict(base.read_pairs(root / "images.txt"))
        labels = dict(base.read_pairs(root / "image_class_labels.txt"))
        is_train = dict(base.read_pairs(root / "train_test_split.txt"))
        for fname, table in (
            ("image_class_labels.txt", labels),
            ("train_test_split.txt", is_train),
        ):
            base.disagreement(
                f"{root / fname} does not list the images of images.txt",
                sorted(set(images) ^ set(table)),
            )
        base.disagreement(
            f"{root / 'image_class_labels.txt'} names unknown class ids",
            sorted(f"image {i}: class {c}" for i, c in labels.items() if int(c) not in classes),
        )
        base.disagreement(
            f"{root / 'image_class_labels.txt'} disagrees with the class folders of images/",
            [
                f"{images[i]}: labelled {classes[int(c)]}"
                for i, c in labels.items()
                if Path(images[i]).parent.name != classes[int(c)]
            ],
        )
        splits = {"train": [], "test": []}
        for i in sorted(images, key=int):
            split = "train" if is_train[i] == "1" else "test"
            splits[split].append((root / "images" / images[i], index[int(labels[i])]))
        base.warn_unlisted(root / "images", [p for items in splits.values() for p, _ in items])
        return names, splits
