"""The real CLI: every method's synthetic config trains (loss decreasing) and writes
eval.json; user mistakes end in one clear message; a NaN loss stops the run naming the step
and keeps the last good checkpoint."""

import json
import os

import pytest

from fgvc_jax.methods import registry
from tests.train import cli


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tfds")


@pytest.mark.parametrize("method", sorted(registry.METHODS))
def test_synthetic_config_trains_through_cli(method, tmp_path, data_dir):
    out = cli.run(
        cli.tiny_args(
            method,
            tmp_path / "w",
            data_dir,
            "--config.train.num_steps=6",
            "--config.optim.warmup_steps=3",
        )
    )
    assert out.returncode == 0, out.stderr[-4000:]
    loss = cli.losses(out.stdout)
    assert sorted(loss) == [1, 2, 3, 4, 5, 6], out.stderr[-3000:]
    assert loss[6] < loss[1], loss
    result = json.loads((tmp_path / "w" / "eval.json").read_text())
    assert result["step"] == 6 and result["metrics"]["count"] == 8
    assert 0 <= result["metrics"]["top1/combined"] <= 100
    assert "top5/combined" in result["metrics"]
    assert os.path.isdir(tmp_path / "w" / "checkpoints" / "6")


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["--config", "configs/nope.py:synthetic"],
            "unknown method config 'configs/nope.py'; valid: "
            + ", ".join(f"configs/{name}.py" for name in sorted(registry.METHODS)),
        ),
        (["--config=configs/swinfc.py:birds"], "unknown dataset 'birds'; valid: synthetic, cub"),
        (
            ["--config", "configs/swinfc.py:synthetic", "--config.optim.lrr=1"],
            "unknown config key 'config.optim.lrr': config.optim has no 'lrr'; valid: accumulate, b1",
        ),
        (
            ["--config", "configs/swinfc.py:synthetic", "--config.optim.lr.head=1"],
            "config.optim.lr has no 'head'; valid: backbone, new",
        ),
    ],
)
def test_user_mistakes_give_one_clear_message(argv, message, capsys, monkeypatch):
    from fgvc_jax import main

    monkeypatch.chdir(cli.ROOT)
    with pytest.raises(SystemExit) as e:
        main.check_command_line(["--workdir", "w", *argv])
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_unknown_method_name_and_dataset_through_cli(tmp_path):
    from configs import swinfc
    from fgvc_jax.recipe import Recipe

    config = swinfc.get_config("synthetic")
    config.method.name = "resnet"
    with pytest.raises(ValueError, match="unknown method 'resnet'; valid methods: attention_cnn"):
        Recipe(config, 10)
    args = [
        cli.sys.executable,
        "-m",
        "fgvc_jax.main",
        "--workdir",
        str(tmp_path),
        "--config",
        "configs/ma_ea.py:birds",
    ]
    out = cli.run(args, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-3000:]
    assert "error: configs/ma_ea.py: unknown dataset 'birds'; valid: synthetic, cub" in out.stderr


def test_nan_loss_stops_naming_the_step_and_keeps_good_checkpoint(tmp_path, data_dir):
    # SGD with lr 1e9 diverges within a few steps; every step is checkpointed.
    out = cli.run(
        cli.tiny_args(
            "swinfc",
            tmp_path / "w",
            data_dir,
            "--config.train.num_steps=30",
            "--config.optim.name=sgd",
            "--config.optim.lr.backbone=1e9",
            "--config.optim.lr.new=1e9",
            "--config.optim.clip_norm=0",
            "--config.optim.warmup_steps=0",
            "--config.train.checkpoint_every=1",
        )
    )
    assert out.returncode == 2, out.stderr[-3000:]
    msg = [line for line in out.stderr.splitlines() if line.startswith("error: Loss is")]
    assert msg, out.stderr[-3000:]
    bad = int(msg[0].split(" at step ")[1].split(":")[0])
    # the state of step bad - 1 gives the NaN at any learning rate: moved aside, not named
    assert f"Checkpoint {bad - 1} leads to it at any learning rate: moved aside to" in msg[0]
    steps = sorted(int(d) for d in os.listdir(tmp_path / "w" / "checkpoints") if d.isdigit())
    assert max(steps, default=0) == bad - 2
    last = f"step {bad - 2} in" if steps else "none yet"
    assert f"Last good checkpoint: {last}" in msg[0]
    assert not (tmp_path / "w" / "eval.json").exists()
