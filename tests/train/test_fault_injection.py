"""Fault injection through the real CLI at a small size (tests/fault_injection.py runs all of
it): a damaged latest checkpoint, two trainers, a SIGKILL during a checkpoint write, a changed
config on resume, a checkpoint of another method, unusable workdirs and a corrupt
config.json: each ends as documented, in one line where it is the user's to fix."""

import json
import os
import shutil

import pytest

from tests import fault_injection as fi
from tests.train import cli


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    r = fi.Runs(str(tmp_path_factory.mktemp("fault_injection")))
    r.reference()
    return r


def _error_lines(out):
    return [line for line in out.stderr.splitlines() if line.startswith("error: ")]


def _one_line(out, text):
    assert out.returncode == 2, out.stderr[-3000:]
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    lines = _error_lines(out)
    assert len(lines) == 1 and text in lines[0], out.stderr[-3000:]
    return lines[0]


def test_damaged_latest_checkpoint_resumes_exactly_from_the_previous(runs):
    fi.damaged_checkpoint(runs, "byte")


def test_damaged_decoded_cache_is_named_rebuilt_and_the_run_unchanged(runs):
    fi.damaged_cache(runs, "flip")


def test_overflowing_update_is_not_saved_and_training_on_at_a_lower_lr_ends_finite(runs):
    # lr 1e39 from the reference run's checkpoint 8: the update of step 9 overflows after a
    # finite loss; checkpoint 8 is named, and nothing after it is saved
    assert "checkpoint 8 (finite)" in fi.diverged(runs, 1e39, resume=True)


def test_diverged_checkpoint_moved_aside_and_training_on_at_a_lower_lr_ends_finite(runs):
    # lr 1e6 from scratch: finite states, then a NaN gradient at step 3 from the state of
    # step 2 (at any learning rate): checkpoint 2 is moved aside, checkpoint 1 named
    assert "checkpoint 1 (finite)" in fi.diverged(runs, 1e6, resume=False)
    w = os.path.join(runs.root, "diverged_1e+06")
    assert len([d for d in os.listdir(os.path.join(w, "checkpoints")) if ".diverged-" in d]) == 1


def test_sigint_saves_the_step_exits_130_and_resumes_exactly(runs):
    fi.sigint(runs)


def test_sigterm_in_the_final_evaluation_exits_143_and_a_restart_evaluates(runs):
    fi.sigterm_in_final_evaluation(runs)


def test_failed_checkpoint_write_stops_the_run_with_one_line(runs):
    if fi.checkpoint_write_fails(runs) is None:
        pytest.skip("a tmpfs cannot be mounted here (needs root)")


def test_two_processes_on_a_new_data_dir_prepare_once(tmp_path):
    fi.two_preparations(str(tmp_path))


def test_dataset_preparation_on_a_full_disk_is_one_line(tmp_path):
    if fi.preparation_on_a_full_disk(str(tmp_path)) is None:
        pytest.skip("a tmpfs cannot be mounted here (needs root)")


def test_second_trainer_and_eval_fail_in_seconds_first_run_intact(runs):
    fi.two_trainers(runs)


def test_kill_during_checkpoint_writes_resumes_exactly(runs):
    fi.kills_during_writes(runs, 1)


def test_changed_config_stops_listing_keys_and_flag_extends_the_schedule(runs):
    w = os.path.join(runs.root, "changed")
    shutil.copytree(runs.reference(), w)
    out = runs.run(w, f"--config.train.num_steps={fi.STEPS + 4}", "--config.optim.lr.new=0.5")
    line = _one_line(out, "was trained with another config; changed: optim.lr.new")
    assert f"train.num_steps {fi.STEPS} -> {fi.STEPS + 4}." in line
    assert "--allow_config_change" in line
    assert sorted(os.listdir(os.path.join(w, "config_history"))) == ["1.json"]

    out = runs.run(w, f"--config.train.num_steps={fi.STEPS + 4}", "--allow_config_change")
    assert out.returncode == 0, out.stderr[-3000:]
    assert (
        f"train.num_steps {fi.STEPS!r} -> {fi.STEPS + 4!r}: the learning-rate schedule is "
        "rebuilt" in out.stderr
    )
    assert json.loads(open(os.path.join(w, "eval.json")).read())["step"] == fi.STEPS + 4
    assert fi.steps(w)[-1] == fi.STEPS + 4
    first = json.loads(open(os.path.join(w, "config.json")).read())
    assert first["train"]["num_steps"] == fi.STEPS  # the first start's config is kept
    second = json.loads(open(os.path.join(w, "config_history", "2.json")).read())
    assert second["changed"] == ["train.num_steps"]

    out = runs.run(w, "--config.train.num_steps=8", "--allow_config_change")
    _one_line(
        out, f"resumes at step {fi.STEPS + 4}, past the new length of 8 steps: nothing to train"
    )


def test_checkpoint_of_another_method_is_one_line_naming_both(runs):
    out = cli.run(
        cli.tiny_args(
            "swinfc", runs.reference(), runs.data_dir, "--mode", "eval", "--checkpoint", "latest"
        ),
        **runs.env,
    )
    line = _one_line(
        out,
        "holds another model (written by method 'baseline_resnet'; this run is 'swinfc'): params/",
    )
    assert " in the checkpoint, " in line and line.endswith(" in this run.")
    assert len(line) < 600


def test_unusable_workdir_and_corrupt_config_json_are_one_line(runs, tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    _one_line(runs.run(f), f"workdir {f} is a file, not a folder")
    _one_line(runs.run(f / "run"), f"workdir {f}/run cannot be created: {f} is a file.")
    # A workdir written before config_history/ existed, its config.json cut short.
    w = tmp_path / "old"
    shutil.copytree(runs.reference(), w)
    shutil.rmtree(w / "config_history")
    text = (w / "config.json").read_text()
    (w / "config.json").write_text(text[: len(text) // 2])
    _one_line(runs.run(w), f"error: {w}/config.json is corrupt (")
