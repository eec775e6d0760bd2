"""`config.init.resume_from=<workdir>/checkpoints/<step>`: a new workdir goes on from another
run's checkpoint with its optimizer state (timm's --resume), and ends where that run ended,
bitwise; a folder that is not a checkpoint, or a second start source, is one line before any
dataset work."""

from __future__ import annotations

import json

from tests.train import cli

METHOD, STEPS = "baseline_resnet", 4


def _args(workdir, data_dir, *extra):
    return cli.tiny_args(
        METHOD,
        workdir,
        data_dir,
        f"--config.train.num_steps={STEPS}",
        "--config.train.checkpoint_every=2",
        *extra,
    )


def _eval(workdir) -> dict:
    return json.loads((workdir / "eval.json").read_text())


def test_resume_from_another_workdir_goes_on_with_its_optimizer_state(tmp_path):
    data_dir = tmp_path / "tfds"
    first, second = tmp_path / "first", tmp_path / "second"
    done = cli.run(_args(first, data_dir))
    assert done.returncode == 0, done.stderr[-3000:]
    source = first / "checkpoints" / "2"
    went_on = cli.run(_args(second, data_dir, f"--config.init.resume_from={source}"))
    assert went_on.returncode == 0, went_on.stderr[-3000:]
    assert f"Going on from {source} (config.init.resume_from) at step 2" in went_on.stderr
    assert sorted(cli.losses(went_on.stdout)) == [3, 4]  # steps 1-2 are the first run's
    a, b = _eval(first), _eval(second)
    # momentum, schedule position and data order all came along: the same last step, bitwise
    assert b["step"] == a["step"] == STEPS
    assert b["params_fingerprint"] == a["params_fingerprint"]
    assert cli.losses(went_on.stdout) == {s: v for s, v in cli.losses(done.stdout).items() if s > 2}

    # a workdir instead of a step folder: one line that names the step folders there
    wrong = cli.run(_args(tmp_path / "fourth", data_dir, f"--config.init.resume_from={first}"))
    assert wrong.returncode != 0
    assert wrong.stderr.strip().splitlines()[-1] == (
        f"error: config.init.resume_from='{first}' is not a checkpoint: give a step folder "
        f"<workdir>/checkpoints/<step>; e.g. {first / 'checkpoints' / '4'} (steps there: 2, 4)."
    ), wrong.stderr[-2000:]
    assert not (tmp_path / "fourth").exists()


def test_resume_from_a_missing_folder_or_beside_pretrained_is_one_line(tmp_path):
    data_dir = tmp_path / "tfds"
    missing = cli.run(
        _args(tmp_path / "a", data_dir, f"--config.init.resume_from={tmp_path / 'nope'}")
    )
    assert missing.returncode != 0
    assert missing.stderr.strip().splitlines()[-1] == (
        f"error: config.init.resume_from='{tmp_path / 'nope'}': no such directory."
    ), missing.stderr[-2000:]
    both = cli.run(
        _args(
            tmp_path / "b",
            data_dir,
            f"--config.init.resume_from={tmp_path}",
            "--config.init.from_workdir=/some/run",
        )
    )
    assert both.returncode != 0
    assert both.stderr.strip().splitlines()[-1] == (
        "error: config.init.resume_from goes on from another run's whole train state; "
        "config.init.from_workdir would be overwritten by it: leave it empty."
    ), both.stderr[-2000:]
    assert "Traceback" not in missing.stderr + both.stderr
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    assert not data_dir.exists()
