"""launch/slurm.sbatch under a real SLURM: tests/slurm_cluster.sh starts a private one-node
cluster (Debian's slurm-wlm; `make slurm` installs it, the test is skipped without it) and a
tiny attention_cnn run is submitted with a 2-minute time limit and `--signal=B:USR1@60`.
Shown: the warning reaches the batch shell, which forwards SIGTERM to the trainer; the
trainer writes the checkpoint of its current step within the warning time and exits 143;
the job requeues itself before the time limit; the requeued start resumes from that step and
finishes; its eval.json equals an uninterrupted run's (run beside it), wall-time rates aside.
About 3-4 minutes on 2 cores: slurmctld checks time limits every 30 s, so the warning comes
30-60 s after the start, and the run is long enough (~80 s alone) to be cut by it."""

from __future__ import annotations

import datetime
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

from tests.train import cli

TOOLS = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "scontrol", "scancel", "squeue")
MISSING = [t for t in TOOLS if shutil.which(t) is None]
pytestmark = [
    pytest.mark.long,
    pytest.mark.skipif(
        bool(MISSING), reason=f"no {', '.join(MISSING)}: `make slurm` installs slurm-wlm"
    ),
]

METHOD, STEPS, WARN = "attention_cnn", 450, 60
DONE = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "DEADLINE"}


@pytest.fixture
def slurm_env(tmp_path):
    """The environment of a live private cluster (SLURM_CONF), stopped afterwards."""
    folder = tempfile.mkdtemp(prefix="slurm-", dir="/tmp")  # munged's socket path is short
    log = open(tmp_path / "cluster.log", "w")
    cluster = subprocess.Popen(
        ["bash", "tests/slurm_cluster.sh", folder],
        cwd=cli.ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    try:
        ready = cluster.stdout.readline()
        assert ready.startswith("slurm cluster ready: "), (tmp_path / "cluster.log").read_text()
        yield cli.env(SLURM_CONF=ready.strip().split("SLURM_CONF=")[1])
    finally:
        cluster.stdin.close()  # the script cancels the jobs left and stops its daemons
        cluster.wait(timeout=120)
        log.close()
        shutil.rmtree(folder, ignore_errors=True)


def _job(job_id: str, env) -> dict:
    out = subprocess.run(
        ["scontrol", "--oneliner", "show", "job", job_id],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return dict(f.split("=", 1) for f in out.split() if "=" in f)


def _seconds(clock: str) -> float:
    """Seconds of the day of 'HH:MM:SS[.ffffff]'."""
    t = datetime.time.fromisoformat(clock)
    return t.hour * 3600 + t.minute * 60 + t.second + t.microsecond / 1e6


def _eval(workdir) -> dict:
    result = json.loads((workdir / "eval.json").read_text())
    return {k: v for k, v in result.items() if not k.endswith("_per_sec")}  # wall-time rates


def _submit(workdir, data_dir, overrides, output, env) -> str:
    """launch/slurm.sbatch on one task of the one node; its job id."""
    submit = subprocess.run(
        [
            "sbatch",
            "--parsable",
            "--nodes=1",
            "--ntasks-per-node=1",
            "--cpus-per-task=1",
            "--gpus-per-task=0",
            "--time=2",
            f"--signal=B:USR1@{WARN}",
            f"--output={output}",
            "--export=ALL",
            "launch/slurm.sbatch",
            f"configs/{METHOD}.py:synthetic",
            str(workdir),
            *cli.tiny_args(METHOD, workdir, data_dir)[7:],  # after --workdir DIR
            *overrides,
        ],
        cwd=cli.ROOT,
        env=dict(env, PYTHON=sys.executable),
        capture_output=True,
        text=True,
    )
    assert submit.returncode == 0, submit.stderr
    return submit.stdout.strip().split(";")[0]


def _wait(job_id: str, env, timeout=600) -> tuple[dict, list]:
    """The job's last record once it is done, and the (JobState, Restarts) it went through.
    Once requeued, its time limit is raised: one time limit shown is enough."""
    start, states, raised = time.monotonic(), [], False
    while True:
        job = _job(job_id, env)
        if not states or states[-1] != (job["JobState"], job["Restarts"]):
            states.append((job["JobState"], job["Restarts"]))
        if job["Restarts"] != "0" and not raised:
            update = ["scontrol", "update", f"JobId={job_id}", "TimeLimit=10"]
            subprocess.run(update, env=env, check=True)
            raised = True
        if job["JobState"] in DONE:
            return job, states
        assert time.monotonic() - start < timeout, f"job {job_id} not done: {states}"
        time.sleep(0.5)


def test_time_limit_checkpoints_requeues_and_resumes_exactly(tmp_path, slurm_env):
    workdir, reference, output = tmp_path / "run", tmp_path / "reference", tmp_path / "job.out"
    overrides = [f"--config.train.num_steps={STEPS}", "--config.train.checkpoint_every=1000"]
    uninterrupted = subprocess.Popen(  # beside the job: the same command and config
        cli.tiny_args(METHOD, reference, tmp_path / "tfds_reference", *overrides),
        cwd=cli.ROOT,
        env=cli.env(),
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "reference.log", "w"),
    )
    job_id = _submit(workdir, tmp_path / "tfds", overrides, output, slurm_env)
    job, states = _wait(job_id, slurm_env)
    log = output.read_text()  # both starts (--open-mode=append)
    assert (job["JobState"], job["Restarts"], job["ExitCode"]) == ("COMPLETED", "1", "0:0"), (
        f"{states}\n{log[-4000:]}"
    )
    assert ("RUNNING", "0") in states and ("PENDING", "1") in states, states

    # the warning: forwarded, the trainer's step checkpointed within it, exit 143, requeued
    forwarded = re.findall(
        r"^(\S+) SIGUSR1 \(time limit near\): forwarded to the trainers; waiting for their "
        r"checkpoint$",
        log,
        re.MULTILINE,
    )
    assert len(forwarded) == 1, log[-4000:]
    where = re.escape(str(workdir))
    saved = re.findall(
        rf"^W\d+ (\S+) .*Pre-empted: checkpoint of step (\d+) saved in {where}$", log, re.MULTILINE
    )
    assert len(saved) == 1, log[-4000:]
    saved_at, step = saved[0]
    assert 0 < int(step) < STEPS
    assert 0 <= _seconds(saved_at) - _seconds(forwarded[0]) < WARN, (forwarded, saved_at)
    assert "task 0: Exited with exit code 143" in log  # SIGTERM, not srun's SIGKILL
    assert log.count(f"requeueing job {job_id}") == 1
    assert "DUE TO TIME LIMIT" not in log  # requeued before the time limit
    assert log.count("Resumed from") == 1
    assert f"Resumed from {workdir / 'checkpoints'} at step {step}" in log

    assert uninterrupted.wait(timeout=600) == 0, (tmp_path / "reference.log").read_text()
    assert _eval(workdir) == _eval(reference)
    assert _eval(workdir)["step"] == STEPS
