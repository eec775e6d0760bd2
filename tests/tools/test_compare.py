"""`python -m fgvc_jax.compare`: the table, the float64 reference columns and the exit code."""

import subprocess
import sys

import pytest

pytest.importorskip("torch")


def compare(*args):
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "fgvc_jax.compare",
            "--config",
            "configs/attention_cnn.py:synthetic",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_float32_shows_both_errors_against_float64_and_passes():
    done = compare("--train")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ours vs f64" in done.stdout and "PyTorch f32 vs f64" in done.stdout
    assert "loss total" in done.stdout and "grad [" in done.stdout
    assert "Unable to initialize backend" not in done.stderr  # JAX's INFO lines, dropped


def test_float64_fails_above_the_tolerance_naming_the_rows():
    done = compare("--dtype", "float64", "--tolerance", "1e-30")
    assert done.returncode == 1
    assert "FAIL:" in done.stdout and "logits main" in done.stdout.split("FAIL:")[1]
