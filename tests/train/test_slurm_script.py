"""launch/slurm.sbatch's time-limit logic, without SLURM (slurm-wlm is not on the test
machines): `srun` and `scontrol` are stand-ins on PATH (srun runs the task, scontrol records
its arguments). SIGTERM to the batch shell, as `--signal=B:TERM@120` sends it, is forwarded
to the trainer, which writes the checkpoint of its step and exits 143; the shell waits for it,
requeues the unfinished job, and exits 143; the requeued start resumes and finishes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from tests.train import cli

FAKE_SRUN = """#!/usr/bin/env bash
while [[ "$1" == --* ]]; do shift; done  # srun's own options
exec "$@"
"""
FAKE_SCONTROL = """#!/usr/bin/env bash
echo "$@" >> "$SCONTROL_LOG"
"""
STEPS = 120


def _tools(folder):
    folder.mkdir()
    for name, text in (("srun", FAKE_SRUN), ("scontrol", FAKE_SCONTROL)):
        path = folder / name
        path.write_text(text)
        path.chmod(0o755)
    return folder


def _start(args, env):
    return subprocess.Popen(
        args, cwd=cli.ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_time_limit_signal_is_forwarded_waited_for_and_requeues(tmp_path):
    tools, log = _tools(tmp_path / "bin"), tmp_path / "scontrol.log"
    workdir, data_dir = tmp_path / "run", tmp_path / "tfds"
    env = cli.env(
        PATH=f"{tools}{os.pathsep}{os.environ['PATH']}",
        SLURM_JOB_ID="42",
        SLURM_NTASKS="1",
        SCONTROL_LOG=str(log),
        PYTHON=sys.executable,
    )
    overrides = cli.tiny_args("attention_cnn", workdir, data_dir)[7:]  # after --workdir DIR
    batch = [
        "bash",
        "launch/slurm.sbatch",
        "configs/attention_cnn.py:synthetic",
        str(workdir),
        *overrides,
        f"--config.train.num_steps={STEPS}",
        "--config.train.checkpoint_every=1000",
    ]
    job = _start(batch, env)
    metrics = workdir / "metrics.jsonl"
    start = time.monotonic()
    while not (metrics.exists() and metrics.read_text().count("\n") >= 3):
        assert job.poll() is None, job.stderr.read()[-3000:]
        assert time.monotonic() - start < 300, "no training step within 300 s"
        time.sleep(0.2)
    job.send_signal(signal.SIGTERM)  # what --signal=B:TERM@120 does: the batch shell only
    out, err = job.communicate(timeout=300)
    assert job.returncode == 143, err[-3000:]
    assert "forwarded to the trainers; waiting for their checkpoint" in err
    assert "requeueing job 42" in err
    assert log.read_text().split() == ["requeue", "42"]
    saved = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    assert saved and 0 < saved[-1] < STEPS  # the step it was at, not a checkpoint_every one
    assert not (workdir / "eval.json").exists()

    log.unlink()
    again = subprocess.run(
        batch, cwd=cli.ROOT, env=env, capture_output=True, text=True, timeout=600
    )  # the requeued job
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"Resumed from {workdir / 'checkpoints'} at step {saved[-1]}" in again.stderr
    assert json.loads((workdir / "eval.json").read_text())["step"] == STEPS
    assert not log.exists()  # a finished run is not requeued
