"""launch/slurm.sbatch's signal logic, without SLURM (tests/train/test_slurm_cluster.py runs it
under a real one, where slurm-wlm is installed): `srun`, `scontrol` and `scancel` are
stand-ins on PATH (srun runs the task, scontrol records its arguments, scancel finds no
cluster, so the script signals the step itself). SIGUSR1 to the batch shell, as
`--signal=B:USR1@120` sends it before the time limit, is forwarded to the trainer as SIGTERM:
it writes the checkpoint of its step and exits 143; the shell waits for it, requeues the
unfinished job, and exits 143; the requeued start resumes and finishes. SIGTERM to the shell
(`scancel`, pre-emption) is forwarded the same way but does not requeue."""

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
FAKE_SCANCEL = """#!/usr/bin/env bash
exit 1  # no cluster to reach (a real scancel here could signal another cluster's job 42)
"""
STEPS = 120


def _tools(folder):
    folder.mkdir()
    for name, text in (("srun", FAKE_SRUN), ("scontrol", FAKE_SCONTROL), ("scancel", FAKE_SCANCEL)):
        path = folder / name
        path.write_text(text)
        path.chmod(0o755)
    return folder


def _start(args, env):
    return subprocess.Popen(
        args, cwd=cli.ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _job(tmp_path):
    """(the batch command, its environment, the scontrol log, the workdir)."""
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
    return batch, env, log, workdir


def _signalled_while_training(batch, env, workdir, signum):
    """Start the batch shell, send it `signum` after a few training steps, let it finish:
    (return code, stderr, the checkpointed steps)."""
    job = _start(batch, env)
    metrics = workdir / "metrics.jsonl"
    start = time.monotonic()
    while not (metrics.exists() and metrics.read_text().count("\n") >= 3):
        assert job.poll() is None, job.stderr.read()[-3000:]
        assert time.monotonic() - start < 300, "no training step within 300 s"
        time.sleep(0.2)
    job.send_signal(signum)  # SLURM signals the batch shell only (B:)
    _, err = job.communicate(timeout=300)
    saved = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    return job.returncode, err, saved


def test_time_limit_signal_is_forwarded_waited_for_and_requeues(tmp_path):
    batch, env, log, workdir = _job(tmp_path)
    rc, err, saved = _signalled_while_training(batch, env, workdir, signal.SIGUSR1)
    assert rc == 143, err[-3000:]
    assert (
        "SIGUSR1 (time limit near): forwarded to the trainers; waiting for their checkpoint" in err
    )
    assert "requeueing job 42" in err
    assert log.read_text().split() == ["requeue", "42"]
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


def test_scancel_is_forwarded_and_not_requeued(tmp_path):
    """SIGTERM to the batch shell is `scancel` (or pre-emption, which SLURM requeues itself):
    the trainer checkpoints and the job ends; the script does not requeue a cancelled job."""
    batch, env, log, workdir = _job(tmp_path)
    rc, err, saved = _signalled_while_training(batch, env, workdir, signal.SIGTERM)
    assert rc == 143, err[-3000:]
    assert "SIGTERM (job cancelled or pre-empted; not requeued by this script)" in err
    assert saved and 0 < saved[-1] < STEPS
    assert "requeueing" not in err and not log.exists()
