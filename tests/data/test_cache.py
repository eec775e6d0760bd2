"""The decoded cache: same pixels as the decode path, rebuilt when stale or damaged, never half
reused; a full disk or a read-only data_dir is one error line."""

import errno
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from fgvc_jax import data
from fgvc_jax.data import augment, cache, datasets, pipeline, preprocess
from fgvc_jax.data.errors import DataError

S, C, B = 40, 32, 8
# portrait, landscape and square photos; PIL's pass order differs between portrait and
# landscape, which is where a one-step box resize and resize-then-slice disagree
SIZES = [(37, 50), (50, 37), (45, 45), (33, 61), (64, 48), (48, 64)]


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for split, per_class in (("train", 8), ("test", 5)):
        for c in range(2):
            for k in range(per_class):
                w, h = SIZES[(k + c) % len(SIZES)]
                yy, xx = np.mgrid[0:h, 0:w]
                img = rng.normal(128, 50, (h, w, 3)) + 60 * np.sin(xx / 3 + yy / 5)[..., None]
                path = root / split / f"class_{c}" / f"{k}.jpg"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path, quality=90)
    cfg = data.default_config("folder")
    cfg.folder_root = str(root)
    cfg.data_dir = str(tmp_path_factory.mktemp("tfds"))
    cfg.resize, cfg.crop, cfg.eval_resize, cfg.eval_crop = S, C, S, C
    cfg.num_workers = 2
    data.prepare(cfg)
    return cfg


def _with(config, **kw):
    c = config.copy_and_resolve_references()
    c.update(kw)
    return c


class _Window:
    """A numpy Generator stand-in that makes `preprocess.train_image` take a given window
    (x, y) and flip."""

    def __init__(self, x, y, flip):
        self.ints, self.flip = [x, y], flip

    def integers(self, lo, hi):
        v = self.ints.pop(0)
        assert lo <= v < hi
        return v

    def random(self):
        return 0.0 if self.flip else 0.99


def test_cached_train_batch_equals_decode_path_for_the_same_window(config):
    seed, step = 3, 1
    kw = dict(global_batch_size=B, seed=seed, start_step=step, process_index=0, process_count=1)
    cached = next(data.train_iterator(config, **kw))
    decoded = next(data.train_iterator(_with(config, cache="none"), **kw))
    assert cached["image"].shape == (B, S, S, 3) and cached["image"].dtype == np.uint8
    np.testing.assert_array_equal(cached["label"], decoded["label"])  # the same examples

    key = augment.step_key(seed, step)
    images, targets = jax.jit(lambda x, y, k: augment.train_batch(x, y, k, config, 2))(
        cached["image"], cached["label"], key
    )
    assert images.dtype == np.uint8 and images.shape == (B, C, C, 3)
    np.testing.assert_array_equal(np.argmax(targets, -1), cached["label"])
    draws = jax.device_get(augment.window_draws(augment.example_keys(key, B), S, C))
    assert 0 < draws["flip"].sum() < B and len(set(draws["x"].tolist())) > 1

    source = datasets.data_source(config, config.train_split)
    n = len(source)
    steps_per_epoch = n // B
    epoch, b = divmod(step, steps_per_epoch)
    indices = pipeline.epoch_permutation(seed, epoch, n)[b * B : (b + 1) * B]
    aug = preprocess.Augment.train(config)
    for i, index in enumerate(indices):
        window = _Window(int(draws["x"][i]), int(draws["y"][i]), bool(draws["flip"][i]))
        host = preprocess.train_image(source[int(index)]["image"], window, aug)
        np.testing.assert_array_equal(np.asarray(images[i]), host)


def test_eval_reads_the_cache_with_the_decode_paths_pixels(config):
    kw = dict(global_batch_size=4, process_index=0, process_count=1)
    cached = list(data.eval_iterator(config, **kw))
    decoded = list(data.eval_iterator(_with(config, cache="none"), **kw))
    assert len(cached) == len(decoded) == 3  # 10 test images, the last batch padded
    for a, b in zip(cached, decoded):
        assert a["image"].shape == (4, C, C, 3)
        for k in ("image", "label", "mask"):
            np.testing.assert_array_equal(a[k], b[k])
    # the device center crop of the uncropped cache is the same slice
    full = cache.load(config, config.test_split, S)
    np.testing.assert_array_equal(augment.eval_batch(full.images[:4], config), cached[0]["image"])


def test_cache_entries_are_the_square_resize(config):
    decoded = cache.load(config, "train", S)
    source = datasets.data_source(config, "train")
    for i in (0, 5):
        record = source[i]
        im = Image.open(__import__("io").BytesIO(record["image"])).convert("RGB")
        np.testing.assert_array_equal(
            decoded.images[i], np.asarray(im.resize((S, S), Image.BILINEAR))
        )
        assert decoded.labels[i] == record["label"]


def _builds(monkeypatch):
    log = []
    build = cache._build
    monkeypatch.setattr(cache, "_build", lambda *a: (log.append(a[2]["size"]), build(*a)))
    return log


def test_another_size_gets_its_own_cache_and_a_stale_one_is_rebuilt(config, monkeypatch, capsys):
    first = cache.load(config, "train", S)
    builds = _builds(monkeypatch)
    other = cache.load(config, "train", S + 4)
    assert other.images.shape[1:] == (S + 4, S + 4, 3) and other.path != first.path
    assert builds == [S + 4] and "GiB" in capsys.readouterr().out  # size printed at build
    assert cache.load(config, "train", S).images.shape[1] == S and builds == [S + 4]

    meta = json.loads((first.path / "meta.json").read_text())
    (first.path / "meta.json").write_text(json.dumps({**meta, "size": S + 4}))
    np.lib.format.open_memmap(first.path / "images.npy", "r+")[:] = 0
    again = cache.load(config, "train", S)
    assert builds == [S + 4, S]
    np.testing.assert_array_equal(again.images, cache.load(config, "train", S).images)
    assert again.images.max() > 0


def test_interrupted_build_is_not_reused(config, monkeypatch):
    split = "test"
    path = cache.folder(config, split, S + 8)
    calls = []
    square = preprocess.square_image

    def failing(data_bytes, size):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return square(data_bytes, size)

    monkeypatch.setattr(preprocess, "square_image", failing)
    with pytest.raises(KeyboardInterrupt):
        cache.load(config, split, S + 8, workers=1)
    assert not path.exists() and not list(path.parent.glob(path.name + ".partial-*"))

    # a build killed outright leaves its partial folder, complete-looking but never read
    monkeypatch.setattr(preprocess, "square_image", square)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    import socket

    partial = path.with_name(f"{path.name}.partial-{socket.gethostname()}-{dead}")
    partial.mkdir(parents=True)
    good = cache.load(config, split, S)
    for name in ("images.npy", "labels.npy"):
        np.save(partial / name, np.zeros_like(np.load(good.path / name)))
    meta = json.loads((good.path / "meta.json").read_text())
    (partial / "meta.json").write_text(json.dumps({**meta, "size": S + 8}))
    built = cache.load(config, split, S + 8)
    assert built.path == path and built.images.max() > 0 and not partial.exists()


def test_cache_setting_checked(config):
    with pytest.raises(DataError, match="data.cache='decode'.*'decoded', 'none'"):
        cache.applies(_with(config, cache="decode"))
    assert not cache.applies(_with(config, resize_mode="shorter"))
    assert cache.applies(config)


def _fresh(config, split, size, monkeypatch, chunk=None):
    """A cache of `split` at `size` built now (with digests of `chunk` bytes if given)."""
    if chunk:
        monkeypatch.setattr(cache, "CHUNK", chunk)
    path = cache.folder(config, split, size)
    if path.exists():
        import shutil

        shutil.rmtree(path)
    return cache.load(config, split, size)


def _flip(file, at):
    with open(file, "r+b") as f:
        f.seek(at)
        b = f.read(1)
        f.seek(at)
        f.write(bytes([b[0] ^ 0x10]))


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete_images", "delete_labels"])
def test_damaged_cache_is_named_and_rebuilt(config, monkeypatch, caplog, damage):
    good = _fresh(config, "test", S, monkeypatch)
    expected = (np.array(good.images), np.array(good.labels))
    images, labels = good.path / "images.npy", good.path / "labels.npy"
    if damage == "flip":
        _flip(images, images.stat().st_size - 100)
        why = (
            f"{images} bytes 0-{images.stat().st_size} differ from those written (digest mismatch)"
        )
    elif damage == "truncate":
        size = images.stat().st_size
        os.truncate(images, size // 2)
        why = f"{images} is {size // 2} bytes, {size} were written"
    else:
        (images if damage == "delete_images" else labels).unlink()
        why = f"{images if damage == 'delete_images' else labels} is missing"
    builds = _builds(monkeypatch)
    with caplog.at_level("WARNING"):
        again = cache.load(config, "test", S)
    assert builds == [S]
    assert f"Decoded cache damaged: {why}; rebuilding it." in caplog.text
    np.testing.assert_array_equal(again.images, expected[0])
    np.testing.assert_array_equal(again.labels, expected[1])
    assert cache.load(config, "test", S) and builds == [S]  # verified: not rebuilt again


def test_sampled_chunks_at_open_all_with_verify_cache_or_after_a_killed_build(
    config, monkeypatch, caplog
):
    good = _fresh(config, "train", S, monkeypatch, chunk=4096)
    images = good.path / "images.npy"
    assert (
        len(json.loads((good.path / "meta.json").read_text())["files"]["images.npy"]["blake2b"]) > 4
    )
    _flip(images, 5 * 4096 + 7)
    builds = _builds(monkeypatch)
    monkeypatch.setattr(cache, "SAMPLED", 0)  # no chunk sampled: only sizes are checked
    cache.load(config, "train", S)
    assert builds == []
    with caplog.at_level("WARNING"):
        cache.load(_with(config, verify_cache=True), "train", S)
    assert builds == [S] and f"{images} bytes 20480-24576 differ" in caplog.text

    # a build of this host killed (its .partial-* folder left): the next open checks all
    _flip(images, 5 * 4096 + 7)
    cache.load(config, "train", S)
    assert builds == [S]
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    ).stdout.strip()
    import socket

    partial = images.parent.with_name(f"{images.parent.name}.partial-{socket.gethostname()}-{dead}")
    partial.mkdir()
    cache.load(config, "train", S)
    assert builds == [S, S] and not partial.exists()
    # an intact cache checked in full once: the killed build's folder goes
    partial.mkdir()
    reads = []
    damage = cache._damage
    monkeypatch.setattr(cache, "_damage", lambda *a: (reads.append(a[2]), damage(*a))[1])
    cache.load(config, "train", S)
    cache.load(config, "train", S)
    assert builds == [S, S] and reads == [True, False] and not partial.exists()


def test_full_disk_is_one_error_naming_the_folder_and_the_space(config, monkeypatch):
    path = cache.folder(config, "test", S + 12)

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    with pytest.raises(DataError) as e:
        cache.load(config, "test", S + 12)
    need = (10 * (S + 12) ** 2 * 3 + 4096) / 2**30
    assert str(e.value).startswith(
        f"No space for the decoded cache in {path.parent}: {need:.2f} GiB needed, "
    )
    assert "--config.data.cache=none" in str(e.value) and "\n" not in str(e.value)
    assert not path.exists() and not list(path.parent.glob(path.name + ".partial-*"))


def test_read_only_data_dir_without_a_cache_says_cache_none(config, monkeypatch):
    path = cache.folder(config, "test", S + 16)
    mkdir = type(path).mkdir

    def read_only(self, *a, **kw):
        if str(self).startswith(str(path.parent)):
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return mkdir(self, *a, **kw)

    monkeypatch.setattr(type(path), "mkdir", read_only)
    with pytest.raises(DataError) as e:
        cache.load(config, "test", S + 16)
    line = str(e.value)
    assert line.startswith(f"The decoded cache {path} cannot be built: {path.parent}")
    assert line.endswith(
        " cannot be written (Read-only file system). Make data.data_dir writable, or train "
        "with --config.data.cache=none (every image decoded at every step)."
    )
    assert "\n" not in line and not path.exists()
