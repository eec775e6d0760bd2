"""Sharding across processes, exact resumption, eval coverage, augmentation geometry."""

import io

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P
from PIL import Image

from fgvc_jax import data
from fgvc_jax.data import datasets, pipeline, preprocess
from fgvc_jax.runtime import parallel

N_TRAIN, N_TEST, CLASSES = 48, 20, 4


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    c = data.default_config()
    c.data_dir = str(tmp_path_factory.mktemp("tfds"))
    c.synthetic.update(
        dict(
            num_classes=CLASSES,
            image_size=32,
            train_per_class=N_TRAIN // CLASSES,
            test_per_class=N_TEST // CLASSES,
        )
    )
    c.resize, c.crop, c.eval_resize, c.eval_crop = 36, 32, 36, 32
    c.rotation, c.color_jitter = 10.0, 0.2
    c.cache = "none"  # the host decode path (tests/data/test_cache.py: the decoded cache)
    c.num_workers = 2
    data.prepare(c)
    return c


@pytest.fixture
def reads(monkeypatch):
    """Records the example indices each data source reads, per split."""
    log = []
    original = datasets.data_source

    class Spy:
        def __init__(self, source):
            self.source = source

        def __len__(self):
            return len(self.source)

        def __getitem__(self, i):
            log.append(i)
            return self.source[i]

    monkeypatch.setattr(datasets, "data_source", lambda c, s: Spy(original(c, s)))
    return log


def _take(iterator, n):
    return [next(iterator) for _ in range(n)]


def test_batches_shapes_and_dtypes(config):
    batch = next(
        data.train_iterator(config, global_batch_size=8, seed=0, process_index=0, process_count=1)
    )
    assert batch["image"].shape == (8, 32, 32, 3) and batch["image"].dtype == np.uint8
    assert batch["label"].shape == (8,) and batch["label"].dtype == np.int32
    assert set(batch) == {"image", "label"}
    assert np.all((0 <= batch["label"]) & (batch["label"] < CLASSES))


def test_two_processes_read_disjoint_shards_covering_the_split(config, reads):
    steps = N_TRAIN // 8  # one epoch
    shards = []
    for p in range(2):
        reads.clear()
        it = data.train_iterator(
            config,
            global_batch_size=8,
            seed=1,
            process_index=p,
            process_count=2,
        )
        local = _take(it, steps)
        assert local[0]["image"].shape == (4, 32, 32, 3)
        shards.append((set(reads[: steps * 4]), local))
    (a, local0), (b, local1) = shards
    assert not a & b and a | b == set(range(N_TRAIN))
    # the global batch does not depend on the number of processes
    single = _take(
        data.train_iterator(config, global_batch_size=8, seed=1, process_index=0, process_count=1),
        steps,
    )
    for s in range(steps):
        for key in ("image", "label"):
            np.testing.assert_array_equal(
                np.concatenate([local0[s][key], local1[s][key]]), single[s][key]
            )


def test_resume_at_step_n_matches_uninterrupted_run(config, reads):
    full = _take(
        data.train_iterator(config, global_batch_size=8, seed=2, process_index=1, process_count=2),
        10,
    )  # crosses an epoch (6 steps)
    reads.clear()
    resumed = data.train_iterator(
        config, global_batch_size=8, seed=2, start_step=7, process_index=1, process_count=2
    )
    first = next(resumed)
    perm = pipeline.epoch_permutation(2, 1, N_TRAIN)
    skipped = set(perm[: 1 * 8 + 4].tolist())  # everything process 1 would have read before
    assert not skipped & set(reads), "resuming must not read the skipped examples"
    for got, want in zip([first] + _take(resumed, 2), full[7:10]):
        np.testing.assert_array_equal(got["image"], want["image"])
        np.testing.assert_array_equal(got["label"], want["label"])


def test_epochs_reshuffled_deterministically(config):
    def labels(seed):
        it = data.train_iterator(
            config, global_batch_size=8, seed=seed, process_index=0, process_count=1
        )
        return np.concatenate([b["label"] for b in _take(it, 12)])

    a = labels(3)
    np.testing.assert_array_equal(a, labels(3))
    assert not np.array_equal(a[:48], a[48:])  # epoch 1 is another order
    assert sorted(a[:48]) == sorted(a[48:])  # of the same examples
    assert not np.array_equal(a, labels(4))


def test_eval_sees_every_example_once_across_processes(config, reads):
    masks, labels = [], []
    for p in range(2):
        batches = list(
            data.eval_iterator(config, global_batch_size=8, process_index=p, process_count=2)
        )
        assert len(batches) == 3  # ceil(20 / 8), the same on every process
        for b in batches:
            assert b["image"].shape == (4, 32, 32, 3) and b["mask"].dtype == np.bool_
            assert not b["image"][~b["mask"]].any()
        masks.append(np.stack([b["mask"] for b in batches]))
        labels.append(np.stack([b["label"] for b in batches]))
    assert sorted(reads) == list(range(N_TEST))
    assert sum(m.sum() for m in masks) == N_TEST
    in_order = np.concatenate([masks[0], masks[1]], axis=1).ravel()  # [batch, process, example]
    got = np.concatenate([labels[0], labels[1]], axis=1).ravel()[in_order]
    source = datasets.data_source(config, "test")
    np.testing.assert_array_equal(got, [source[i]["label"] for i in range(N_TEST)])


def test_eval_images_are_center_crops(config):
    batch = next(data.eval_iterator(config, global_batch_size=4, process_index=0, process_count=1))
    source = datasets.data_source(config, "test")
    original = np.asarray(Image.open(io.BytesIO(source[2]["image"])))
    resized = np.asarray(Image.fromarray(original).resize((36, 36), Image.BILINEAR))
    np.testing.assert_allclose(batch["image"][2], resized[2:34, 2:34], atol=2)


def test_one_step_resized_crop_equals_resize_then_crop():
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (375, 500, 3), dtype=np.uint8)).resize(
        (500, 375), Image.BILINEAR, reducing_gap=None
    )
    smooth = image.resize((125, 94)).resize((500, 375), Image.BILINEAR)
    for x, y in [(0, 0), (64, 10), (63, 64)]:
        reference = np.asarray(smooth.resize((512, 512), Image.BILINEAR))[y : y + 448, x : x + 448]
        got = np.asarray(preprocess._resized_crop(smooth, 512, 512, x, y, 448))
        assert np.abs(got.astype(int) - reference).mean() < 1.0


def test_train_augment_is_deterministic_per_key_and_flips():
    buf = io.BytesIO()
    Image.fromarray(np.tile(np.arange(64, dtype=np.uint8)[None, :, None] * 4, (48, 1, 3))).save(
        buf, format="JPEG", quality=100
    )
    aug = preprocess.Augment(resize=64, crop=64, flip=True)
    outs = [
        preprocess.train_image(buf.getvalue(), np.random.default_rng([0, 0, k]), aug)
        for k in range(16)
    ]
    np.testing.assert_array_equal(
        outs[0], preprocess.train_image(buf.getvalue(), np.random.default_rng([0, 0, 0]), aug)
    )
    increasing = [o[:, -1].mean() > o[:, 0].mean() for o in outs]  # the ramp's direction
    assert 0 < sum(increasing) < 16


def test_bad_batch_size(config):
    with pytest.raises(data.DataError, match="multiple of the process count 2"):
        next(
            data.train_iterator(
                config, global_batch_size=7, seed=0, process_index=0, process_count=2
            )
        )
    with pytest.raises(data.DataError, match="fewer than one global batch"):
        next(
            data.train_iterator(
                config, global_batch_size=64, seed=0, process_index=0, process_count=1
            )
        )


def test_normalize():
    images = np.random.default_rng(0).integers(0, 256, (2, 4, 4, 3), dtype=np.uint8)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    out = data.normalize(images, mean, std, dtype=jnp.bfloat16)
    assert out.dtype == jnp.bfloat16
    want = (images / 255.0 - np.array(mean)) / np.array(std)
    np.testing.assert_allclose(np.asarray(out, np.float32), want, rtol=1e-2, atol=1e-2)


def test_to_global_shards_along_data(config):
    mesh = Mesh(np.array(jax.devices()), ("data",))
    n = len(jax.devices()) * 2
    batch = next(data.train_iterator(config, global_batch_size=n, seed=0))
    out = parallel.host_to_global(batch, mesh)
    for key in ("image", "label"):
        assert isinstance(out[key], jax.Array) and out[key].shape == batch[key].shape
        assert out[key].sharding.spec == P("data")
        np.testing.assert_array_equal(np.asarray(out[key]), batch[key])


@pytest.mark.parametrize("sampling", ["uniform", "class_balanced", "sqrt"])
def test_sampling_draws_classes_as_named_from_a_long_tailed_split(config, monkeypatch, sampling):
    """A long-tailed training split (class c keeps 12, 6, 3, 1 of its examples): 'uniform'
    reads each example once an epoch, 'class_balanced' each class about equally often,
    'sqrt' class c about ∝ √n_c; the batches stay a pure function of (seed, step)."""
    original = datasets.data_source
    keep = {0: 12, 1: 6, 2: 3, 3: 1}

    def long_tailed(c, split):
        source = original(c, split)
        if split != c.train_split:
            return source
        labels = pipeline.split_labels(source)
        indices = np.concatenate([np.flatnonzero(labels == k)[:m] for k, m in keep.items()])
        return datasets.splits.Subset(source, indices)

    monkeypatch.setattr(datasets, "data_source", long_tailed)
    c = config.copy_and_resolve_references()
    c.sampling = sampling
    n, steps_per_epoch = sum(keep.values()), sum(keep.values()) // 2

    def labels(start, steps):
        it = data.train_iterator(c, global_batch_size=2, seed=5, start_step=start)
        return np.concatenate([b["label"] for b in _take(it, steps)])

    drawn = labels(0, 200 * steps_per_epoch)  # 200 epochs, 4400 draws
    share = np.bincount(drawn, minlength=CLASSES) / len(drawn)
    counts = np.array([keep[k] for k in range(CLASSES)], np.float64)
    expected = {
        "uniform": counts / counts.sum(),
        "class_balanced": np.full(CLASSES, 1 / CLASSES),
        "sqrt": np.sqrt(counts) / np.sqrt(counts).sum(),
    }[sampling]
    np.testing.assert_allclose(share, expected, atol=0.02)
    if sampling == "uniform":
        assert sorted(drawn[:n]) == sorted(k for k, m in keep.items() for _ in range(m))
    np.testing.assert_array_equal(labels(7, 5), drawn[14:24])  # resumes at step 7 exactly


def test_unknown_sampling_names_the_valid_ones(config):
    c = config.copy_and_resolve_references()
    c.sampling = "balanced"
    valid = r"data.sampling='balanced'; valid: uniform, class_balanced, sqrt"
    with pytest.raises(ValueError, match=valid):
        next(data.train_iterator(c, global_batch_size=2, seed=0))
