"""`make quickstart` on a finished run prints its result (eval.json's top-1) and how to start a
new one instead of training or evaluating it again."""

import json
import subprocess

from tests.train import cli


def _eval_json(workdir):
    workdir.mkdir()
    (workdir / "eval.json").write_text(
        json.dumps(
            {
                "step": 600,
                "num_steps": 600,
                "metrics": {"top1/combined": 98.8, "top5/combined": 100.0},
                "test_best": {"step": 400, "metrics": {"top1/combined": 98.4}},
            }
        )
    )


def test_make_quickstart_on_a_finished_run_prints_its_result(tmp_path):
    workdir = tmp_path / "quickstart"
    _eval_json(workdir)
    # The recipe as make runs it (-n: printed, not run, so that `venv` installs nothing).
    recipe = subprocess.run(
        ["make", "-n", "--no-print-directory", "quickstart", f"QUICKSTART={workdir}"],
        cwd=cli.ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    shell = recipe[recipe.index("if [ -f ") :]
    out = subprocess.run(
        ["bash", "-c", shell], cwd=cli.ROOT, env=cli.env(), capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        f"{workdir} is a finished run (step 600/600): test top-1 98.80% (best checkpoint, "
        f"step 400: 98.40%); the report is {workdir / 'eval.json'}.",
        f"To start a new run: make quickstart QUICKSTART=runs/quickstart_2 (or delete {workdir}).",
        f"To evaluate it again: python -m fgvc_jax.main --workdir {workdir} --mode eval",
    ]


def test_an_unfinished_run_is_trained(tmp_path):
    recipe = subprocess.run(
        ["make", "-n", "--no-print-directory", "quickstart", f"QUICKSTART={tmp_path / 'q'}"],
        cwd=cli.ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"fgvc_jax.main --config configs/swinfc.py:synthetic --workdir {tmp_path / 'q'}" in (
        recipe
    )
    from fgvc_jax.run import summary

    assert summary.finished(str(tmp_path / "q")) is None
