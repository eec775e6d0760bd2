"""Shared TFDS builder for image-classification releases read from the user's files.

A subclass says where its release lives (`locate`) and how to read it (`read_source` →
class names and, per split, a list of (path, label)). This base class checks every image
before anything is written (corrupt/unreadable files are named, counted, and either skipped
with a warning or reported as one DataError) and stores each image as a person sees it
(`images.decode`) in array_record files: an RGB JPEG as its original bytes (its EXIF
orientation, if any, is applied when read), any other image as a lossless RGB PNG of its
rendering (orientation applied, deep modes scaled, transparency composited, CMYK converted).
Names starting with '.' (hidden files and folders) are never read.
"""

from __future__ import annotations

import concurrent.futures
import io
import json
import logging
import os
import shutil
import tarfile
from pathlib import Path

import tensorflow_datasets as tfds
from PIL import Image

from fgvc_jax.data import images
from fgvc_jax.data.errors import DataError

_MAX_LISTED = 20


def features() -> tfds.features.FeaturesDict:
    """The features of every project dataset: JPEG image, class label, source file name."""
    return tfds.features.FeaturesDict(
        {
            "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
            "label": tfds.features.ClassLabel(),  # names are set once the source is read
            "filename": tfds.features.Text(),
        }
    )


def listing(paths, limit: int = _MAX_LISTED) -> str:
    """Up to `limit` paths, one per line, and how many more there are."""
    paths = [str(p) for p in paths]
    text = "\n  ".join(paths[:limit])
    more = f"\n  ... and {len(paths) - limit} more" if len(paths) > limit else ""
    return f"  {text}{more}"


def visible(folder: Path) -> list[Path]:
    """The sorted entries of `folder` whose names do not start with '.'."""
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _signature(archive: Path) -> dict:
    st = archive.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def extract(archive: Path, dest: Path) -> Path:
    """Extracts a tar archive into `dest`, again whenever the archive changed (size or time).

    The marker `dest/.<archive>.extracted` records the archive's size and modification time
    and the top-level entries it gave. Extraction goes to a hidden temporary folder first,
    then its entries replace the previous ones, then the marker is written: an interrupted
    or failed extraction leaves no marker, so the next call extracts again.
    """
    marker = dest / f".{archive.name}.extracted"
    try:
        record = json.loads(marker.read_text())
    except (OSError, ValueError):
        record = None
    if isinstance(record, dict) and record.get("archive") == _signature(archive):
        return dest
    if record is not None or marker.exists():
        logging.warning(
            "%s changed since it was extracted (or its extraction did not finish); "
            "extracting it again into %s.",
            archive,
            dest,
        )
    marker.unlink(missing_ok=True)
    dest.mkdir(parents=True, exist_ok=True)
    tmp = dest / f".{archive.name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
    except (tarfile.TarError, OSError, EOFError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DataError(f"Cannot extract {archive}: {e}. Replace it with an intact copy.") from e
    entries = sorted(p.name for p in tmp.iterdir())
    old = record.get("entries", []) if isinstance(record, dict) else []
    for name in sorted(set(old) | set(entries)):
        _remove(dest / name)
    for name in entries:
        (tmp / name).rename(dest / name)
    tmp.rmdir()
    marker.write_text(json.dumps({"archive": _signature(archive), "entries": entries}))
    return dest


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def find(
    manual_dir: Path, extract_dir: Path, folder: str, archives: tuple[str, ...]
) -> Path | None:
    """`manual_dir/folder` if it is there, else `folder` inside the first archive found
    (extracted again if it changed), else what an earlier extraction left."""
    if (manual_dir / folder).is_dir():
        return manual_dir / folder
    for name in archives:
        if (manual_dir / name).is_file():
            extract(manual_dir / name, extract_dir)
            if (extract_dir / folder).is_dir():
                return extract_dir / folder
            raise DataError(
                f"{manual_dir / name} does not contain the folder {folder}/ expected "
                "in the official release."
            )
    if (extract_dir / folder).is_dir():
        return extract_dir / folder
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
    extra = [
        p
        for p in sorted(image_dir.rglob("*"))
        if p.suffix.lower() in images.IMAGE_EXTENSIONS
        and p.resolve() not in listed
        and not any(part.startswith(".") for part in p.relative_to(image_dir).parts)
    ]
    if extra:
        logging.warning(
            "%d images in %s are in no list file and are left out:\n%s",
            len(extra),
            image_dir,
            listing(extra),
        )


def class_folders(split_dir: Path) -> dict[str, list[Path]]:
    """{class folder name: sorted image paths} of a `<split>/<class>/*.jpg` folder (hidden
    folders and files left out)."""
    return {
        d.name: [p for p in visible(d) if p.suffix.lower() in images.IMAGE_EXTENSIONS]
        for d in visible(split_dir)
        if d.is_dir()
    }


def check_image(path: Path) -> str | None:
    """None if the file decodes as an image, else the reason it does not."""
    if not Path(path).is_file():
        return "missing"
    try:
        images.decode(path)
        return None
    except DataError as e:
        cause = e.__cause__ or e
        return f"unreadable ({type(cause).__name__}: {cause})"


def stored_bytes(path: Path, crop_bottom: int = 0) -> bytes:
    """What a record holds: the file's bytes if it is an RGB JPEG (uncropped), else the image
    as seen (`images.decode`, minus `crop_bottom` rows) as a lossless PNG; a cropped RGB JPEG
    is re-encoded as a JPEG (quality 95) to keep its size."""
    data = Path(path).read_bytes()
    with Image.open(io.BytesIO(data)) as im:
        plain_jpeg = im.format == "JPEG" and im.mode == "RGB"
    if plain_jpeg and not crop_bottom:
        return data
    seen = images.decode(data, name=str(path))
    seen = seen[: seen.shape[0] - crop_bottom] if crop_bottom else seen
    out = io.BytesIO()
    if plain_jpeg:
        Image.fromarray(seen).save(out, format="JPEG", quality=95)
    else:
        Image.fromarray(seen).save(out, format="PNG", compress_level=6)
    return out.getvalue()


class KnownLength:
    """A split's examples with their count: TFDS iterates it, the preparation's progress line
    reads its length for the ETA."""

    def __init__(self, examples, count: int):
        self.examples, self.count = examples, count

    def __iter__(self):
        return iter(self.examples)

    def __len__(self) -> int:
        return self.count


class ManualBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Builds a dataset from a release folder located by `datasets.py` (`source`)."""

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {
        "1.1.0": "Images as seen: EXIF orientation, 16-bit scaling, transparency on white, "
        "CMYK/palette converted; non-JPEG or non-RGB images stored as lossless PNG; "
        "hidden files and folders ignored.",
    }
    CROP_BOTTOM = 0  # pixels cut from the bottom of every image (FGVC-Aircraft's banner)

    def __init__(
        self, *, source: str | os.PathLike | None = None, skip_corrupt: bool = False, **kwargs
    ):
        self._source = Path(source) if source is not None else None
        self._skip_corrupt = skip_corrupt
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            features=features(),
            supervised_keys=("image", "label"),
            metadata=tfds.core.MetadataDict(),
        )

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
        return {
            split: KnownLength(self._generate_examples(items), len(items))
            for split, items in splits.items()
        }

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
                f"{report}\nReplace them, or set config.skip_corrupt=True to leave them out."
            )
        logging.warning(
            "%s: skipping %d of %d missing or unreadable images:\n%s",
            self.name,
            len(bad),
            len(paths),
            report,
        )
        return {s: [(p, l) for p, l in items if p not in bad] for s, items in splits.items()}

    def _generate_examples(self, items):
        for path, label in items:
            name = os.path.relpath(path, self._source)
            yield (
                name,
                {"image": stored_bytes(path, self.CROP_BOTTOM), "label": label, "filename": name},
            )
