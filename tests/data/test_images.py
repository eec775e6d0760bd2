"""Images as a person sees them: `images.decode` on its own, in a prepared `folder` dataset
(the stored records and the evaluation pipeline), and in the tools' `load_images`."""

import io

import numpy as np
import pytest
from PIL import Image, ImageOps

from fgvc_jax import data
from fgvc_jax.data import datasets, images, preprocess
from tests.data import fakes
from tests.data.image_kinds import KINDS, assert_within_one_grey_level, exif_rotated_jpeg
from tests.data.test_builders import _config


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_decode_matches_reference(tmp_path, kind):
    reference = KINDS[kind](tmp_path / kind)
    assert_within_one_grey_level(images.decode(tmp_path / kind), reference, kind)
    got = images.decode((tmp_path / kind).read_bytes())
    assert_within_one_grey_level(got, reference, kind + " (bytes)")


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation(tmp_path, orientation):
    reference = exif_rotated_jpeg(tmp_path / "x.jpg", orientation)
    np.testing.assert_array_equal(images.decode(tmp_path / "x.jpg"), reference)


def test_exif_orientation_with_draft(tmp_path):
    """Decoding at a reduced JPEG scale keeps the orientation and at least the asked size."""
    path = tmp_path / "x.jpg"
    exif_rotated_jpeg(path, orientation=6, size=(64, 48))  # seen as 48 wide, 64 high
    asked = []
    im = images.open_as_seen(path.read_bytes(), draft=lambda w, h: asked.append((w, h)) or (24, 32))
    assert asked == [(48, 64)] and im.size == (24, 32) and im.mode == "RGB"


@pytest.mark.parametrize("mode", ["1", "L", "P", "LA", "PA", "CMYK", "I", "F", "I;16B"])
def test_other_modes(mode):
    base = Image.fromarray(np.arange(48, dtype=np.uint8).reshape(6, 8) * 5)
    alpha = Image.fromarray(np.where(np.arange(48).reshape(6, 8) % 2, 255, 0).astype(np.uint8))
    if mode in ("LA", "PA"):
        colour = base if mode == "LA" else base.convert("P")
        im = Image.merge(mode, (colour, alpha))
        a = np.asarray(alpha, np.float64)[..., None] / 255
        expected = np.asarray(colour.convert("RGB"), np.float64) * a + 255 * (1 - a)
    elif mode == "I":
        im = Image.fromarray(np.asarray(base).astype(np.int32) * 257)  # 16-bit data in mode I
        expected = np.asarray(base.convert("RGB"))
    elif mode == "F":
        im = Image.fromarray(np.asarray(base).astype(np.float32) / 255)  # floats in [0, 1]
        expected = np.asarray(base.convert("RGB"))
    elif mode == "I;16B":
        im = Image.frombytes("I;16B", base.size, (np.asarray(base).astype(">u2") * 257).tobytes())
        expected = np.asarray(base.convert("RGB"))
    else:
        im = base.convert(mode)
        expected = np.asarray(im.convert("RGB"))
    buf = io.BytesIO()
    im.save(buf, format="TIFF")
    assert Image.open(io.BytesIO(buf.getvalue())).mode == mode
    assert_within_one_grey_level(images.decode(buf.getvalue()), np.rint(expected), mode)


def test_palette_transparency_on_white():
    im = Image.new("P", (4, 2), 0)
    im.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    im.putpixel((1, 0), 1)
    im.info["transparency"] = 0  # colour 0 is clear
    buf = io.BytesIO()
    im.save(buf, format="PNG", transparency=0)
    got = images.decode(buf.getvalue())
    assert tuple(got[0, 1]) == (10, 20, 30)
    assert (got[1] == images.BACKGROUND).all() and images.BACKGROUND == (255, 255, 255)


def test_unreadable_names_the_file(tmp_path):
    bad = tmp_path / "bad.jpg"
    fakes.jpeg(bad, seed=0)
    bad.write_bytes(bad.read_bytes()[:60])
    with pytest.raises(data.DataError, match=f"Cannot read image {bad}"):
        images.decode(bad)
    with pytest.raises(data.DataError, match="Cannot read image my.png"):
        images.decode(b"not an image", name="my.png")
    with pytest.raises(data.DataError, match=str(tmp_path / "none.jpg")):
        images.decode(tmp_path / "none.jpg")


def _folder_of_kinds(tmp_path):
    """A `folder` dataset whose test split holds one file of each kind (classes A, B)."""
    root = tmp_path / "mine"
    fakes.class_folders(root, classes=("A", "B"), per_class=1)
    references = {
        f"test/A/{kind}": make(root / "test" / "A" / kind, size=(32, 32))
        for kind, make in KINDS.items()
    }
    config = _config(
        "folder", tmp_path, folder_root=str(root), eval_resize=32, eval_crop=32, resize=32, crop=32
    )
    return config, references


def test_prepared_records_are_as_seen(tmp_path):
    """The stored pixels of EXIF-rotated, 16-bit, transparent and CMYK files (read from the
    data source, and through the evaluation pipeline) equal the reference rendering."""
    config, references = _folder_of_kinds(tmp_path)
    data.prepare(config)
    source = datasets.data_source(config, "test")
    records = [source[i] for i in range(len(source))]
    stored = {r["filename"].decode(): images.decode(r["image"]) for r in records}
    assert {n: _grey_levels(stored[n], ref) for n, ref in references.items()} == {
        n: 0 for n in references
    }
    for r in records:  # every record is RGB to any decoder
        assert Image.open(io.BytesIO(r["image"])).mode == "RGB"
    batch = next(
        data.eval_iterator(config, global_batch_size=len(records), process_index=0, process_count=1)
    )
    names = [r["filename"].decode() for r in records]
    # square at the eval size: the pipeline adds no resampling
    seen = {
        n: _grey_levels(image, references[n])
        for image, n in zip(batch["image"], names)
        if n in references
    }
    assert seen == {n: 0 for n in references}


def _grey_levels(got, reference) -> int:
    """0 when `got` is the uint8 reference within 1 grey level, else the largest difference."""
    assert got.dtype == np.uint8 and got.shape == reference.shape
    diff = int(np.abs(got.astype(np.int64) - reference.astype(np.int64)).max())
    return 0 if diff <= 1 else diff


def test_plain_rgb_jpeg_stored_as_is(tmp_path):
    """Ordinary RGB JPEGs (an EXIF-rotated one too) keep their bytes; nothing re-encoded."""
    config, _ = _folder_of_kinds(tmp_path)
    data.prepare(config)
    source = datasets.data_source(config, "test")
    root = tmp_path / "mine"
    for r in (source[i] for i in range(len(source))):
        name = r["filename"].decode()
        if name.endswith("img_0.jpg") or name.endswith("exif_rotated.jpg"):
            assert r["image"] == (root / name).read_bytes(), name


def test_eval_image_applies_orientation(tmp_path):
    """What predict/explain use: `preprocess.eval_image` of the file's bytes."""
    reference = exif_rotated_jpeg(tmp_path / "x.jpg", orientation=8, size=(40, 40))
    aug = preprocess.Augment(resize=40, crop=40)
    got = preprocess.eval_image((tmp_path / "x.jpg").read_bytes(), aug)
    np.testing.assert_array_equal(got, reference)
    assert not np.array_equal(got, np.asarray(Image.open(tmp_path / "x.jpg").convert("RGB")))
    assert reference.shape == ImageOps.exif_transpose(Image.open(tmp_path / "x.jpg")).size[::-1] + (
        3,
    )


def test_tools_load_images_as_seen(tmp_path):
    """predict/explain read files through `image_files.load_images` (eval preprocessing)."""
    import ml_collections

    from fgvc_jax.tools import image_files

    references = {kind: make(tmp_path / kind, size=(32, 32)) for kind, make in KINDS.items()}
    config = ml_collections.ConfigDict(
        {"data": _config("folder", tmp_path, eval_resize=32, eval_crop=32)}
    )
    paths = [str(tmp_path / kind) for kind in references]
    batch, ok, bad = image_files.load_images(paths, config)
    assert ok == paths and not bad
    assert {k: _grey_levels(image, references[k]) for k, image in zip(references, batch)} == {
        k: 0 for k in references
    }
