"""FGVC-Aircraft 2013b at the variant, family or manufacturer level; banner cropped off."""

from pathlib import Path

import tensorflow_datasets as tfds

from fgvc_jax.data.builders import base

_PLURAL = {"variant": "variants", "family": "families", "manufacturer": "manufacturers"}


class FGVCAircraft(base.ManualBuilder, skip_registration=True):
    name = "fgvc_aircraft"
    BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=level) for level in _PLURAL]
    CROP_BOTTOM = 20  # the copyright banner at the bottom of every image
    EXPECTED = (
        "fgvc-aircraft-2013b.tar.gz, or its extracted folder fgvc-aircraft-2013b/ "
        "(data/images/, data/variants.txt, data/images_variant_trainval.txt, ...)"
    )

    @classmethod
    def locate(cls, manual_dir: Path, extract_dir: Path):
        return base.find(
            manual_dir, extract_dir, "fgvc-aircraft-2013b", ("fgvc-aircraft-2013b.tar.gz",)
        )

    def read_source(self, root):
        level = self.builder_config.name
        data = root / "data"
        names_file = data / f"{_PLURAL[level]}.txt"
        if not names_file.is_file():
            base.read_pairs(names_file)  # raises the missing-file error
        lines = names_file.read_text(encoding="utf-8").splitlines()
        names = [l.strip() for l in lines if l.strip()]
        index = {n: i for i, n in enumerate(names)}
        splits = {}
        for split in ("train", "val", "trainval", "test"):
            listed = data / f"images_{level}_{split}.txt"
            rows = base.read_pairs(listed)
            base.disagreement(
                f"{listed} names classes missing from {names_file.name}",
                [f"{i}: {n}" for i, n in rows if n not in index],
            )
            splits[split] = [(data / "images" / f"{i}.jpg", index[n]) for i, n in rows]
        return names, splits
