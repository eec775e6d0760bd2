"""A refused start records nothing and leaves the workdir usable by the tools."""

import json
import os
import sys

import pytest

from tests.train import cli


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    """A tiny baseline_resnet run from scratch (the dataset prepared by it), logging every
    100 steps: (workdir, data_dir, stdout + stderr)."""
    root = tmp_path_factory.mktemp("first")
    workdir, data_dir = root / "w", root / "tfds"
    out = cli.run(
        cli.tiny_args(
            "baseline_resnet",
            workdir,
            data_dir,
            "--config.train.num_steps=2",
            "--config.train.log_every=100",
        )
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return workdir, data_dir, out.stdout + out.stderr


def test_refused_start_records_nothing_and_tools_still_work(first_run, tmp_path):
    workdir, data_dir, log = first_run
    assert f"training curves: {workdir / 'curves.png'}" in log  # written at the end of the run
    history = sorted(os.listdir(workdir / "config_history"))
    swinfc = cli.run(
        cli.tiny_args(
            "swinfc", workdir, data_dir, "--config.train.num_steps=2", "--allow_config_change"
        )
    )
    assert swinfc.returncode == 2
    assert swinfc.stderr.strip().splitlines() == [
        f"error: workdir {workdir} holds a 'baseline_resnet' run and this config is 'swinfc': "
        "a run cannot change its method. Start it in a new --workdir."
    ]
    # Same method, other shapes, change accepted: refused when the checkpoint is read.
    resnet34 = cli.run(
        cli.tiny_args(
            "baseline_resnet",
            workdir,
            data_dir,
            "--config.train.num_steps=4",
            "--config.method.backbone=resnet34",
            "--allow_config_change",
        )
    )
    assert resnet34.returncode == 2
    error = [line for line in resnet34.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1, resnet34.stderr[-3000:]
    assert "(written by method 'baseline_resnet')" in error[0]
    assert error[0].endswith("Start this config in a new --workdir.")
    assert "--allow_config_change" not in error[0]
    assert sorted(os.listdir(workdir / "config_history")) == history
    config = json.loads((workdir / "config_history" / history[-1]).read_text())["config"]
    assert config["method"]["backbone"] == "resnet18"

    from PIL import Image

    image = tmp_path / "bird.png"
    Image.new("RGB", (40, 30), (120, 60, 30)).save(image)
    predict = cli.run(
        [sys.executable, "-m", "fgvc_jax.predict", "--workdir", str(workdir), str(image)]
    )
    assert predict.returncode == 0, predict.stderr[-3000:]
    assert str(image) in predict.stdout
    evaluate = cli.run(
        [sys.executable, "-m", "fgvc_jax.evaluate", "--workdir", str(workdir), "--noflip"]
    )
    assert evaluate.returncode == 0, evaluate.stderr[-3000:]
    assert "checkpoint step 2" in evaluate.stdout and "top-1" in evaluate.stdout
    assert f"training curves: {workdir / 'curves.png'}" in evaluate.stdout
    assert "Using custom data configuration" not in evaluate.stderr  # TFDS chatter
