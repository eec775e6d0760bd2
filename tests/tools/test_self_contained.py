"""A workdir is self-contained: the tools work from a copy of it whose dataset is gone, and
`--mode eval` evaluates without --config, leaving the training's eval.json as it was."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from fgvc_jax import data, evaluate, explain, predict
from fgvc_jax.run import trained

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def moved_workdir(trained_run, tmp_path, monkeypatch):
    """A copy of the trained workdir whose config points at a dataset that does not exist;
    preparing any dataset fails the test."""
    copy = tmp_path / "workdir"
    shutil.copytree(trained_run.workdir, copy)
    cfg = json.loads((copy / "config.json").read_text())
    cfg["data"]["data_dir"] = str(tmp_path / "deleted_tfds")
    cfg["data"]["folder_root"] = str(tmp_path / "deleted_images")
    (copy / "config.json").write_text(json.dumps(cfg))

    def no_dataset(*args, **kwargs):
        raise AssertionError("a tool prepared the dataset")

    monkeypatch.setattr(data, "prepare", no_dataset)
    return str(copy)


def _test_images(trained_run, tmp_path, model):
    """The test split's images copied into tmp/<class name>/ (labels by folder)."""
    root = tmp_path / "by_class"
    rows = trained_run.index["test"]
    for path, label, _ in rows:
        folder = root / model.class_names[label]
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, folder / os.path.basename(path))
    return str(root), [p for p, _, _ in rows], np.array([label for _, label, _ in rows])


def test_tools_work_without_the_dataset(trained_run, moved_workdir, tmp_path):
    original = trained.load(trained_run.workdir, trained_run.config, "latest")
    moved = trained.load(moved_workdir, None, "latest")
    assert moved.class_names == original.class_names
    root, paths, labels = _test_images(trained_run, tmp_path, moved)

    before = predict.predict_files(original, paths)
    after = predict.predict_files(moved, paths)
    assert [r["top"][0]["class"] for r in after] == [r["top"][0]["class"] for r in before]

    report = evaluate.evaluate(moved, images=root, flip=False, out_dir=str(tmp_path / "rep"))
    predicted = np.array([moved.class_names.index(r["top"][0]["class"]) for r in after])
    assert report["count"] == len(paths)
    assert report["single_view"]["top1/combined"] == pytest.approx(
        100.0 * np.mean(predicted == labels)
    )
    per_class = [np.mean(predicted[labels == c] == c) for c in np.unique(labels)]
    assert report["single_view"]["mean_class/combined"] == pytest.approx(100.0 * np.mean(per_class))
    assert 0.0 <= report["macro_f1"] <= 100.0
    assert (
        evaluate.format_report(report)
        .splitlines()[0]
        .startswith(f"{moved.config.method.name} on {os.path.abspath(root)} ({len(paths)} images)")
    )

    pngs = explain.explain_files(moved, paths[:2], str(tmp_path / "explain"))
    assert len(pngs) == 2 and all(os.path.getsize(p) > 0 for p in pngs)


def test_model_card_describes_the_run(trained_run):
    with open(os.path.join(trained_run.workdir, "model.json")) as f:
        card = json.load(f)
    assert card["num_classes"] == len(card["class_names"]) == 4
    assert card["preprocess"]["eval_crop"] == trained_run.config.data.eval_crop
    assert card["method"]["name"] == trained_run.config.method.name
    assert card["dataset"]["name"] == "folder" and card["dataset"]["fingerprint"]
    assert card["dataset"]["num_examples"]["test"] == len(trained_run.index["test"])


def _main(*args) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    return subprocess.run(
        [sys.executable, "-m", "fgvc_jax.main", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_mode_eval_needs_no_config_and_keeps_eval_json(trained_run, tmp_path):
    copy = tmp_path / "workdir"
    shutil.copytree(trained_run.workdir, copy)
    before = (copy / "eval.json").read_bytes()
    out = _main("--workdir", str(copy), "--mode", "eval", "--checkpoint", "latest")
    assert out.returncode == 0, out.stderr[-3000:]
    assert (copy / "eval.json").read_bytes() == before
    result = json.loads((copy / "eval_latest.json").read_text())
    final = trained_run.final_eval["metrics"]
    assert result["metrics"]["top1/combined"] == pytest.approx(final["top1/combined"])
    assert "eval_latest.json" in out.stdout

    typo = tmp_path / "no_such_run"
    out = _main("--workdir", str(typo), "--mode", "eval")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"--workdir {typo} does not exist" in out.stderr
    assert not typo.exists()
