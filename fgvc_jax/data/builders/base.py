"""Shared TFDS builder for image-classification releases read from the user's files.

A subclass says where its release lives (`locate`) and how to read it (`read_source` →
class names and, per split, a list of (path, label)). This base class checks every image
before anything is written (corrupt/unreadable files are named, counted, and either skipped
with a warning or reported as one DataError) and stores RGB JPEG bytes in array_record files.
"""
from __future__ import annotations

import concurrent.futures
import io
import logging
import os
import tarfile
from pathlib import Path

import tensorflow_datasets as tfds
from PIL import Image

from fgvc_jax.data.errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
_MAX_LISTED = 20


def features() -> tfds.features.FeaturesDict:
    """The features of every project dataset: JPEG image, class label, source file name."""
    return tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
        "label": tfds.features.ClassLabel(),  # names are set once the source is read
        "filename": tfds.features.Text(),
    })


def listing(paths, limit: int = _MAX_LISTED) -> str:
    """Up to `limit` paths, one per line, and how many more there are."""
    paths = [str(p) for p in paths]
    text = "\n  ".join(paths[:limit])
    more = f"\n  ... and {len(paths) - limit} more" if len(paths) > limit else ""
    return f"  {text}{more}"


def extract(archive: Path, dest: Path) -> Path:
    """Extracts a tar archive into `dest` once (a marker file makes it idempotent)."""
    marker = dest / f".{archive.name}.extracted"
    if not marker.exists():
        dest.mkdir(parents=True, exist_ok=True)
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(dest, filter="data")
        except (tarfile.TarError, OSError, EOFError) as e:
            raise DataError(
                f"Cannot extract {archive}: {e}. Replace it with an intact copy.") from e
        marker.touch()
    return dest


def find(manual_dir: Path, extract_dir: Path, folder: str,
         archives: tuple[str, ...]) -> Path | None:
    """`manual_dir/folder` if it is there, else `folder` inside the first archive found."""
    for base in (manual_dir, extract_dir):
        if (base / folder).is_dir():
            return base / folder
    for name in archives:
        if (manual_dir / name).is_file():
            extract(manual_dir / name, extract_dir)
            if (extract_dir / folder).is_dir():
                return extract_dir / folder
            raise DataError(f"{manual_dir / name} does not contain the folder {folder}/ expected "
                            "in the official release.")
    return None


def read_pairs(path: Path) -> list[tuple[str, str]]:
    """(first field, rest of line) of each non-empty line of a release's text file."""
    if not path.is_file():
        raise DataError(f"Missing {path.name} in {path.parent} (part of the official release).")
    with open(path, encoding="utf-8") as f:
        rows = [line.strip().split(maxsplit=1) for line in f if line.strip()]
    bad = [i for i, r in enumerate(rows) if len(r) != 2]
    if bad:
        raise DataError(f"{path}: line {bad[0] + 1} is not '<id> <value>'.")
    return [(a, b) for a, b in rows]


def disagreement(what: str, problems: list[str]) -> None:
    """Raises one DataError listing where a label file disagrees with the image folder."""
    if problems:
        raise DataError(f"{what} ({len(problems)} cases):\n{listing(problems)}")


def warn_unlisted(image_dir: Path, listed) -> None:
    """Warns about images in `image_dir` that no list file mentions."""
    listed = {Path(p).resolve() for p in listed}
    extra = [p for p in sorted(image_dir.rglob("*"))
             if p.suffix.lower() in IMAGE_EXTENSIONS and p.resolve() not in listed]
    if extra:
        logging.warning("%d images in %s are in no list file and are left out:\n%s",
                        len(extra), image_dir, listing(extra))


def class_folders(split_dir: Path) -> dict[str, list[Path]]:
    """{class folder name: sorted image paths} of a `<split>/<class>/*.jpg` folder."""
    return {d.name: sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
            for d in sorted(split_dir.iterdir()) if d.is_dir()}


def check_image(path: Path) -> str | None:
    """None if the file decodes as an image, else the reason it does not."""
    try:
        with Image.open(path) as im:
            im.load()
        return None
    except FileNotFoundError:
        return "missing"
    except Exception as e:  # PIL raises many types for bad data
        return f"unreadable ({type(e).__name__}: {e})"


def jpeg_bytes(path: Path, crop_bottom: int = 0) -> bytes:
    """The file's bytes if already an RGB JPEG, else re-encoded as one (optionally cropped)."""
    data = Path(path).read_bytes()
    with Image.open(io.BytesIO(data)) as im:
        if im.format == "JPEG" and im.mode == "RGB" and not crop_bottom:
            return data
        im = im.convert("RGB")
        if crop_bottom:
            im = im.crop((0, 0, im.width, im.height - crop_bottom))
        out = io.BytesIO()
        im.save(out, format="JPEG", quality=95)
        return out.getvalue()


class ManualBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Builds a dataset from a release folder located by `datasets.py` (`source`)."""

    VERSION = tfds.core.Version("1.0.0")
    CROP_BOTTOM = 0  # pixels cut from the bottom of every image (FGVC-Aircraft's banner)

    def __init__(self, *, source: str | os.PathLike | None = None, skip_corrupt: bool = False,
                 **kwargs):
        self._source = Path(source) if source is not None else None
        self._skip_corrupt = skip_corrupt
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(builder=self, features=features(),
                                     supervised_keys=("image", "label"))

    def read_source(self, root: Path) -> tuple[list[str], dict[str, list[tuple[Path, int]]]]:
        """Class names and, per split, the (image path, label) pairs of the release at `root`."""
        raise NotImplementedError

    def _split_generators(self, dl_manager):
        del dl_manager
        if self._source is None:
            raise DataError(f"{self.name}: no source folder given to prepare the dataset from.")
        names, splits = self.read_source(self._source)
        self.info.features["label"].names = names
        splits = self._drop_bad(splits)
        return {split: self._generate_examples(items) for split, items in splits.items()}

    def _drop_bad(self, splits):
        """Decodes every image once; names the bad ones and skips them or fails."""
        paths = sorted({p for items in splits.values() for p, _ in items})
        workers = min(8, os.cpu_count() or 1)
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            reasons = dict(zip(paths, pool.map(check_image, paths)))
        bad = {p: r for p, r in reasons.items() if r is not None}
        if not bad:
            return splits
        report = listing(f"{p}: {r}" for p, r in sorted(bad.items()))
        if not self._skip_corrupt:
            raise DataError(
                f"{len(bad)} of {len(paths)} images of {self.name} are missing or unreadable:\n"
                f"{report}\nReplace them, or set config.skip_corrupt=True to leave them out.")
        logging.warning("%s: skipping %d of %d missing or unreadable images:\n%s",
                        self.name, len(bad), len(paths), report)
        return {s: [(p, l) for p, l in items if p not in bad] for s, items in splits.items()}

    def _generate_examples(self, items):
        for path, label in items:
            name = os.path.relpath(path, self._source)
            yield name, {"image": jpeg_bytes(path, self.CROP_BOTTOM), "label": label,
                         "filename": name}
