"""`python -m fgvc_jax.export` on the session's trained model (conftest.trained_run): the
SavedModel, loaded by a separate Python process that imports only TensorFlow and numpy, the
ONNX model, run by onnxruntime alone, and the jax.export model, run by jax and
`fgvc_jax.serving` alone, give the library's predictions."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from fgvc_jax import export, predict
from fgvc_jax.run import trained

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Run by a fresh interpreter in which jax, flax and this library cannot be imported (TensorFlow
# imports jax when it can, for TF Lite): argv = saved_model_dir, inputs .npz, file list .json,
# out .npz.
TF_ONLY_SCRIPT = r"""
import json, os, sys

FOREIGN = ("jax", "jaxlib", "flax", "fgvc_jax", "optax", "orbax")


class Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in FOREIGN:
            raise ModuleNotFoundError(f"{name} is blocked", name=name)


sys.meta_path.insert(0, Blocked())
import numpy as np
import tensorflow as tf

model_dir, inputs, files, out = sys.argv[1:]
model = tf.saved_model.load(model_dir)
images = np.load(inputs)["images"]
serve, serve_bytes = model.signatures["serving_default"], model.signatures["serving_bytes"]
full = serve(images=tf.constant(images))
one = serve(images=tf.constant(images[:1]))
with open(files) as f:
    data = [open(p, "rb").read() for p in json.load(f)]
by_bytes = serve_bytes(image_bytes=tf.constant(data))
with open(os.path.join(model_dir, "assets", "class_names.txt"), encoding="utf-8") as f:
    names = f.read().splitlines()
foreign = sorted(m for m in sys.modules if m.split(".")[0] in FOREIGN)
np.savez(out, probs=full["probabilities"].numpy(), index=full["class_index"].numpy(),
         name=full["class_name"].numpy().astype(str), probs_one=one["probabilities"].numpy(),
         bytes_probs=by_bytes["probabilities"].numpy(), names=np.array(names),
         foreign=np.array(foreign, dtype=str))
"""


# Run by a fresh interpreter that cannot import jax, flax or this library: argv = model folder,
# inputs .npz, out .npz.
ONNX_ONLY_SCRIPT = r"""
import sys

FOREIGN = ("jax", "jaxlib", "flax", "fgvc_jax", "optax", "orbax", "tensorflow", "jax2onnx")


class Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in FOREIGN:
            raise ModuleNotFoundError(f"{name} is blocked", name=name)


sys.meta_path.insert(0, Blocked())
import numpy as np
import onnxruntime as ort

model_dir, inputs, out = sys.argv[1:]
session = ort.InferenceSession(model_dir + "/model.onnx", providers=["CPUExecutionProvider"])
images = np.load(inputs)["images"]
run = lambda x: session.run(["probabilities"], {"images": x})[0]
with open(model_dir + "/class_names.txt", encoding="utf-8") as f:
    names = f.read().splitlines()
foreign = sorted(m for m in sys.modules if m.split(".")[0] in FOREIGN)
np.savez(out, probs=run(images), probs_one=run(images[:1]), names=np.array(names),
         foreign=np.array(foreign, dtype=str))
"""

# Run by a fresh interpreter that can import jax and fgvc_jax.serving but no other module of
# this library, nor flax or TensorFlow: argv = model folder, inputs .npz, out .npz.
JAX_ONLY_SCRIPT = r"""
import sys

FOREIGN = ("flax", "fgvc_jax", "optax", "orbax", "tensorflow", "ml_collections")
ALLOWED = ("fgvc_jax", "fgvc_jax.serving")


class Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in FOREIGN and name not in ALLOWED:
            raise ModuleNotFoundError(f"{name} is blocked", name=name)


sys.meta_path.insert(0, Blocked())
import numpy as np
from fgvc_jax import serving

model_dir, inputs, out = sys.argv[1:]
model = serving.load(model_dir)
images = np.load(inputs)["images"]
foreign = sorted(m for m in sys.modules if m.split(".")[0] in FOREIGN and m not in ALLOWED)
np.savez(out, probs=model(images), probs_one=model(images[:1]), names=np.array(model.class_names),
         batch=str(model.input_shape[0]), foreign=np.array(foreign, dtype=str))
"""


def _run(args, cwd, **env) -> subprocess.CompletedProcess:
    env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3", **env)
    env.pop("XLA_FLAGS", None)
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def _export(workdir: str, out: str, *args: str) -> str:
    r = _run(
        ["-m", "fgvc_jax.export", "--workdir", workdir, "--out", out, "--checkpoint", "latest"]
        + list(args),
        ROOT,
        PYTHONPATH=ROOT,
    )
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.splitlines()) == 1, r.stdout  # the report, one line
    assert "Skipping serialization" not in r.stderr  # onnx_ir's per-value warnings, hidden
    return r.stdout


@pytest.fixture(scope="module")
def exported(trained_run, tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("export") / "saved_model")
    assert _export(trained_run.workdir, out).startswith(out + ": SavedModel of")
    return out


def _resized_copies(rows, folder) -> list[str]:
    """Test images re-encoded at other sizes, so that the bytes signature resizes them:
    a downscaled 4:2:0 JPEG, an upscaled RGBA PNG with a transparent corner, a grey PNG."""
    os.makedirs(folder)
    paths = []
    for i, (path, _, _) in enumerate(rows):
        im = Image.open(path).convert("RGB")
        if i % 3 == 0:
            p = os.path.join(folder, f"{i}.jpg")
            im.resize((160, 136), Image.BICUBIC).save(p, quality=90)
        elif i % 3 == 1:
            rgba = np.asarray(im.resize((88, 80), Image.BICUBIC).convert("RGBA")).copy()
            rgba[:6, :6, 3] = 0
            p = os.path.join(folder, f"{i}.png")
            Image.fromarray(rgba).save(p)
        else:
            p = os.path.join(folder, f"{i}.png")
            im.resize((96, 96), Image.BICUBIC).save(p)
        paths.append(p)
    return paths


def test_savedmodel_in_plain_tensorflow_matches_the_library(trained_run, exported, tmp_path):
    model = trained.load(trained_run.workdir, trained_run.config, "latest")
    assert np.dtype(model.method.dtype) == np.float32
    rows = trained_run.index["test"]
    originals = [p for p, _, _ in rows]  # 64×64 JPEGs: the eval size, no resampling
    resized = _resized_copies(rows, str(tmp_path / "resized"))
    images = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in originals])
    np.savez(tmp_path / "inputs.npz", images=images)
    with open(tmp_path / "files.json", "w") as f:
        json.dump(originals + resized, f)

    r = _run(
        [
            "-c",
            TF_ONLY_SCRIPT,
            exported,
            str(tmp_path / "inputs.npz"),
            str(tmp_path / "files.json"),
            str(tmp_path / "out.npz"),
        ],
        str(tmp_path),
    )
    assert r.returncode == 0, r.stderr
    got = np.load(tmp_path / "out.npz")
    assert got["foreign"].tolist() == []

    # serving_default (uint8 images): the library's probabilities, at any batch size.
    expected = predict.predict_arrays(model, images)
    assert got["probs"].shape == expected.shape == (len(rows), len(model.class_names))
    np.testing.assert_allclose(got["probs"], expected, rtol=0, atol=1e-5)
    np.testing.assert_allclose(got["probs_one"], expected[:1], rtol=0, atol=1e-5)
    np.testing.assert_array_equal(got["index"], np.argmax(expected, -1))
    assert got["name"].tolist() == [model.class_names[i] for i in np.argmax(expected, -1)]
    assert got["names"].tolist() == list(model.class_names)

    # serving_bytes (encoded files): as predict on the same files.
    results = predict.predict_files(model, originals + resized, top_k=len(model.class_names))
    lib = np.zeros_like(got["bytes_probs"])
    for i, res in enumerate(results):
        for t in res["top"]:
            lib[i, t["index"]] = t["prob"]
    n = len(originals)
    np.testing.assert_allclose(got["bytes_probs"][:n], lib[:n], rtol=0, atol=1e-5)
    np.testing.assert_array_equal(np.argmax(got["bytes_probs"], -1), np.argmax(lib, -1))
    print(
        f"serving_bytes vs predict: max |Δp| {np.abs(got['bytes_probs'] - lib).max():.2e} "
        f"({len(resized)} resized files), {np.abs(got['bytes_probs'][:n] - lib[:n]).max():.2e}"
        f" ({n} files at the eval size)"
    )


@pytest.mark.parametrize(
    "fmt,report,script",
    [("onnx", "ONNX model of", ONNX_ONLY_SCRIPT), ("jax", "jax.export model of", JAX_ONLY_SCRIPT)],
)
def test_onnx_and_jax_export_in_a_process_without_the_library_match_predict(
    trained_run, tmp_path, fmt, report, script
):
    model = trained.load(trained_run.workdir, trained_run.config, "latest")
    out = str(tmp_path / fmt)
    assert _export(trained_run.workdir, out, "--format", fmt).startswith(f"{out}: {report}")
    images = np.stack(
        [np.asarray(Image.open(p).convert("RGB")) for p, _, _ in trained_run.index["test"]]
    )
    np.savez(tmp_path / "inputs.npz", images=images)

    r = _run(["-c", script, out, str(tmp_path / "inputs.npz"), str(tmp_path / "out.npz")], ROOT)
    assert r.returncode == 0, r.stderr
    got = np.load(tmp_path / "out.npz")
    assert got["foreign"].tolist() == []

    expected = predict.predict_arrays(model, images)
    assert got["probs"].shape == expected.shape == (len(images), len(model.class_names))
    assert got["probs"].dtype == np.float32
    np.testing.assert_allclose(got["probs"], expected, rtol=0, atol=1e-5)
    np.testing.assert_allclose(got["probs_one"], expected[:1], rtol=0, atol=1e-5)
    np.testing.assert_array_equal(np.argmax(got["probs"], -1), np.argmax(expected, -1))
    assert got["names"].tolist() == list(model.class_names)
    if fmt == "jax":
        assert got["batch"] == "B"  # any batch size: a symbolic dimension
    print(f"{fmt} vs predict: max |Δp| {np.abs(got['probs'] - expected).max():.2e}")


def test_pools_pads_and_1d_convolutions_rewritten_for_onnx_compute_what_lax_does():
    import jax
    from jax import lax

    x = jax.random.normal(jax.random.key(0), (2, 9, 8, 3))
    for window, strides, padding in [
        ((1, 3, 3, 1), (1, 2, 2, 1), ((0, 0), (1, 1), (1, 1), (0, 0))),
        ((1, 2, 2, 1), (1, 2, 2, 1), ((0, 0),) * 4),
        ((1, 2, 3, 1), (1, 1, 2, 1), ((0, 0), (0, 1), (2, 0), (0, 0))),
    ]:
        got = export._pool_by_slices(x, lax.max, -np.inf, window, strides, padding)
        want = lax.reduce_window(x, -np.inf, lax.max, window, strides, padding)
        np.testing.assert_array_equal(got, want)
        got = export._pool_by_slices(x, lax.add, 0.0, window, strides, padding)
        want = lax.reduce_window(x, 0.0, lax.add, window, strides, padding)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    pads = ((0, 0), (2, 1), (0, 3), (0, 0))
    np.testing.assert_array_equal(
        export._pad_by_concatenation(x, 7.0, pads), lax.pad(x, 7.0, [p + (0,) for p in pads])
    )
    # A 1-D convolution in the NWC/WIO layouts flax's nn.Conv gives it (SwinFC's).
    w = jax.random.normal(jax.random.key(1), (3, 3, 5))
    want = lax.conv_general_dilated(
        x[:, 0], w, (2,), ((1, 1),), dimension_numbers=("NWC", "WIO", "NWC")
    )
    jaxpr = jax.make_jaxpr(
        lambda a, b: lax.conv_general_dilated(
            a, b, (2,), ((1, 1),), dimension_numbers=("NWC", "WIO", "NWC")
        )
    )(x[:, 0], w)
    (eqn,) = jaxpr.eqns
    got = export._conv1d_as_2d(x[:, 0], w, eqn.params)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode,resize,crop", [("square", 73, 64), ("shorter", 96, 80)])
def test_tf_preprocessing_is_the_librarys_within_one_grey_level(tmp_path, mode, resize, crop):
    import ml_collections
    import tensorflow as tf

    from fgvc_jax.data import preprocess

    rng = np.random.default_rng(0)
    smooth = np.asarray(
        Image.fromarray(rng.integers(0, 256, (12, 16, 3), np.uint8)).resize(
            (640, 480), Image.BICUBIC
        )
    )
    rgba = np.concatenate([smooth[:90, :120], rng.integers(0, 256, (90, 120, 1), np.uint8)], -1)
    files = {
        "draft.jpg": (smooth, "JPEG"),
        "small.jpg": (smooth[:50, :70], "JPEG"),
        "rgba.png": (rgba, "PNG"),
        "grey.png": (smooth[:100, :150, 0], "PNG"),
    }
    config = ml_collections.ConfigDict(
        {"data": {"eval_resize": resize, "eval_crop": crop, "resize_mode": mode}}
    )
    aug = preprocess.Augment(resize, crop, mode)
    for name, (array, fmt) in files.items():
        Image.fromarray(array).save(tmp_path / name, format=fmt)
        data = (tmp_path / name).read_bytes()
        ours = export._tf_eval_image(tf.constant(data), config).numpy()
        lib = preprocess.eval_image(data, aug)
        assert ours.shape == lib.shape == (crop, crop, 3), name
        assert np.abs(ours.astype(int) - lib).max() <= 1, name


def test_export_refuses_a_non_empty_out_before_loading(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("x")
    r = _run(
        [
            "-m",
            "fgvc_jax.export",
            "--workdir",
            str(tmp_path / "no_such_run"),
            "--out",
            str(tmp_path / "out"),
        ],
        ROOT,
        PYTHONPATH=ROOT,
    )
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        f"error: --out {tmp_path / 'out'} exists and is not an empty folder: choose a new "
        "folder for the SavedModel."
    ]
