"""evaluate / predict / explain on a model trained once per session (conftest.trained_run)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from fgvc_jax import data, evaluate, explain, predict
from fgvc_jax.run import trained
from fgvc_jax.run.trained import ToolError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def model(trained_run):
    # 'latest' is the trainer's final state, the one its final evaluation saw.
    return trained.load(trained_run.workdir, trained_run.config, "latest")


def _cli(tool: str, *args) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    return subprocess.run(
        [sys.executable, "-m", f"fgvc_jax.{tool}", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_evaluate_matches_the_trainers_final_eval(model, trained_run, tmp_path):
    report = evaluate.evaluate(model, flip=True, out_dir=str(tmp_path))
    final = trained_run.final_eval["metrics"]
    heads = [k for k in final if k != "count"]
    assert heads and report["count"] == final["count"]
    for k in heads:
        assert report["single_view"][k] == pytest.approx(final[k], abs=1e-9), k
    assert set(report["flip_tta"]) == set(report["single_view"])
    # Per-class accuracy, confusions and the written files agree with the headline number.
    cm = np.array(report["confusion_matrix"])
    assert cm.sum() == report["count"]
    assert 100.0 * np.trace(cm) / cm.sum() == pytest.approx(report["single_view"]["top1/combined"])
    assert sum(c["count"] for c in report["per_class"]) == report["count"]
    for pair in report["most_confused"]:
        t = model.class_names.index(pair["true"])
        p = model.class_names.index(pair["predicted"])
        assert t != p and cm[t, p] == pair["count"]
    with open(tmp_path / evaluate.REPORT_FILE) as f:
        assert json.load(f)["single_view"] == report["single_view"]
    with Image.open(tmp_path / evaluate.CONFUSION_FILE) as im:
        assert im.format == "PNG" and im.size[0] > 100


def test_flip_tta_is_the_mean_of_both_views(model):
    images = np.stack(
        [np.asarray(Image.open(p).convert("RGB")) for p, _, _ in model_rows(model)[:8]]
    )
    single = predict.predict_arrays(model, images)
    flipped = predict.predict_arrays(model, images[:, :, ::-1])
    batch = {"image": images, "label": np.zeros(8, np.int32), "mask": np.ones(8, bool)}
    tops = evaluate.collect(model, [batch], flip=True)
    np.testing.assert_array_equal(
        tops["flip/combined"][:, 0], np.argmax((single + flipped) / 2, -1)
    )
    np.testing.assert_array_equal(tops["single/combined"][:, 0], np.argmax(single, -1))


def model_rows(model):
    with open(os.path.join(model.config.data.folder_root, "index.json")) as f:
        return json.load(f)["train"]


def test_predict_gives_the_training_labels(model, trained_run):
    rows = trained_run.index["train"]
    results = predict.predict_files(model, [p for p, _, _ in rows], top_k=3, batch_size=24)
    assert [r["file"] for r in results] == [p for p, _, _ in rows]
    predicted = [model.class_names.index(r["top"][0]["class"]) for r in results]
    accuracy = np.mean(np.array(predicted) == np.array([label for _, label, _ in rows]))
    assert accuracy >= 0.9, accuracy
    for r in results:
        probs = [t["prob"] for t in r["top"]]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-5


def test_predict_names_unreadable_images(model, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(trained.ToolError, match="broken.jpg"):
        predict.predict_files(model, [str(bad)])
    with pytest.raises(trained.ToolError, match="missing.png"):
        predict.predict_files(model, [str(tmp_path / "missing.png")])


def test_cli_evaluate_predict_explain_from_workdir(trained_run, tmp_path):
    rows = trained_run.index["train"]
    r = _cli("predict", "--workdir", trained_run.workdir, "--top_k=2", rows[0][0], rows[1][0])
    assert r.returncode == 0, r.stderr[-2000:]
    lines = [
        line for line in r.stdout.splitlines() if line.split(": ")[0] in (rows[0][0], rows[1][0])
    ]
    assert len(lines) == 2 and lines[0].startswith(rows[0][0] + ": ")
    assert lines[0].split(": ")[1].count(",") == 1  # --top_k=2

    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG broken")
    r = _cli("predict", "--workdir", trained_run.workdir, str(bad))
    assert r.returncode == 2 and "bad.png" in r.stderr and "Traceback" not in r.stderr

    r = _cli(
        "explain",
        "--workdir",
        trained_run.workdir,
        "--out",
        str(tmp_path / "maps"),
        rows[0][0],
        rows[1][0],
    )
    assert r.returncode == 0, r.stderr[-2000:]
    pngs = r.stdout.split()
    assert len(pngs) == 2 and all(p.startswith(str(tmp_path / "maps")) for p in pngs)
    for png in pngs:
        with Image.open(png) as im:
            assert im.format == "PNG" and im.size[0] > 200 and np.asarray(im).std() > 10

    r = _cli("evaluate", "--workdir", trained_run.workdir, "--out", str(tmp_path / "eval"))
    assert r.returncode == 0, r.stderr[-2000:]
    with open(tmp_path / "eval" / evaluate.REPORT_FILE) as f:
        report = json.load(f)
    assert report["single_view"]["top1/combined"] == pytest.approx(
        trained_run.final_eval["metrics"]["top1/combined"]
    )


def test_heat_maps_peak_on_the_class_defining_marks(model, trained_run):
    """Every Grad-CAM map of explain peaks inside a mark box (+1 px of anti-aliasing) on far
    more images than chance, the boxes' share of the image (one-sided binomial p < 1e-3)."""
    from scipy import stats

    rows = trained_run.index["train"] + trained_run.index["test"]
    images = np.stack([np.asarray(Image.open(p).convert("RGB")) for p, _, _ in rows])
    maps = explain.explain_arrays(model, images)["maps"]
    assert maps
    inside = np.zeros(images.shape[:3], bool)
    for mask, (_, _, boxes) in zip(inside, rows):
        for x0, y0, x1, y1 in boxes:
            mask[max(y0 - 1, 0) : y1 + 1, max(x0 - 1, 0) : x1 + 1] = True
    chance = inside.mean()
    for title, m in maps.items():
        peaks = m.reshape(len(m), -1).argmax(1)
        hits = int(inside.reshape(len(m), -1)[np.arange(len(m)), peaks].sum())
        p = stats.binom.sf(hits - 1, len(m), chance)
        assert p < 1e-3, (title, hits, len(m), chance)


def test_cli_errors_are_one_line(tmp_path):
    r = _cli("evaluate", "--workdir", str(tmp_path / "nope"))
    assert r.returncode == 2 and "does not exist" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "empty").mkdir()
    image = tmp_path / "x.png"
    Image.new("RGB", (8, 8)).save(image)
    r = _cli("explain", "--workdir", str(tmp_path / "empty"), str(image))
    assert r.returncode == 2 and "no checkpoint" in r.stderr and "Traceback" not in r.stderr
    r = _cli("predict", "--workdir", str(tmp_path / "empty"), str(tmp_path / "y.png"))
    assert r.returncode == 2 and "y.png" in r.stderr and "Traceback" not in r.stderr


def test_crop_views_are_torchvisions_five_and_ten_crops():
    s, c = 10, 6
    yy, xx = np.meshgrid(np.arange(s), np.arange(s), indexing="ij")
    images = np.stack([yy, xx, np.zeros_like(yy)], -1)[None]  # pixel (y, x) holds (y, x)
    corners = [(v[0, 0, 0, 0], v[0, 0, 0, 1]) for v in evaluate.crop_views(images, c, 5)]
    assert corners == [(0, 0), (0, 4), (4, 0), (4, 4), (2, 2)]  # tl, tr, bl, br, center
    ten = evaluate.crop_views(images, c, 10)
    assert len(ten) == 10 and all(v.shape == (1, c, c, 3) for v in ten)
    for v, f in zip(ten[:5], ten[5:]):
        np.testing.assert_array_equal(f, v[:, :, ::-1])
    with pytest.raises(ValueError, match="crops=3; valid: 0, 5, 10"):
        evaluate.crop_views(images, c, 3)


def test_crops_tta_at_the_crop_size_equals_the_single_and_flip_views(model, tmp_path):
    """This run evaluates at S = C (64): its five crops are all the single view, and its ten
    crops the single and the flipped view, so the multi-crop TTA must report their numbers
    (the pass over the uncropped S×S images, the averaging and the report are exercised)."""
    assert model.config.data.eval_resize == model.config.data.eval_crop
    five = evaluate.evaluate(model, flip=True, crops=5, out_dir=str(tmp_path))
    assert five["crops_tta"] == {"views": 5, **five["single_view"]}
    ten = evaluate.evaluate(model, flip=True, crops=10, out_dir=str(tmp_path))
    assert ten["crops_tta"] == {"views": 10, **ten["flip_tta"]}
    assert "5-crop top-1" in evaluate.format_report(five)


def test_scale_batches_are_the_eval_views_at_each_resize(model):
    """View v of a multi-scale batch is the eval iterator's center crop with eval_resize set to
    scales[v]; the run's own size reads its cache, another is decoded (nothing written)."""
    d = model.config.data
    own, other = int(d.eval_resize), int(d.eval_resize) + 16
    views = next(evaluate.scale_batches(d, d.test_split, 8, (own, other)))
    assert views["image"].shape == (8, 2, d.eval_crop, d.eval_crop, 3)
    for v, size in enumerate((own, other)):
        c = d.copy_and_resolve_references()
        c.eval_resize, c.cache = size, "none"
        it = data.eval_iterator(c, split=d.test_split, global_batch_size=8)
        expected = next(it)
        it.close()
        np.testing.assert_array_equal(views["image"][:, v], expected["image"])
        np.testing.assert_array_equal(views["label"], expected["label"])
    assert not np.array_equal(views["image"][:, 0], views["image"][:, 1])


def test_scales_tta_of_the_runs_own_size_is_the_single_view(model, tmp_path):
    own = int(model.config.data.eval_resize)
    report = evaluate.evaluate(model, flip=False, scales=f"{own},{own}", out_dir=str(tmp_path))
    assert report["scales_tta"] == {"scales": [own, own], **report["single_view"]}
    two = evaluate.evaluate(model, flip=False, scales=f"{own},{own + 16}", out_dir=str(tmp_path))
    assert two["scales_tta"]["scales"] == [own, own + 16]
    assert "2-scale top-1" in evaluate.format_report(two)
    with pytest.raises(ToolError, match=f"--scales '32': 32 is smaller than the crop {own}"):
        evaluate.evaluate(model, scales="32", out_dir=str(tmp_path))
