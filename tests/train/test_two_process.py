"""Two local processes (jax.distributed from the environment, gloo CPU collectives) train
through the real CLI on a shared workdir and end with the same parameters."""

import json
import re
import socket
import subprocess
import time

from tests.train import cli


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_train_and_agree(tmp_path):
    port = _free_port()
    args = cli.tiny_args(
        "baseline_resnet",
        tmp_path / "w",
        tmp_path / "tfds",
        "--config.train.num_steps=4",
        "--config.train.checkpoint_every=2",
    )
    procs = [
        subprocess.Popen(
            args,
            cwd=cli.ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=cli.env(
                JAX_COORDINATOR_ADDRESS=f"localhost:{port}",
                JAX_NUM_PROCESSES="2",
                JAX_PROCESS_ID=str(i),
            ),
        )
        for i in range(2)
    ]
    errs, outs = [], []
    for p in procs:
        try:
            out, err = p.communicate(timeout=500)
        finally:
            p.kill()
        errs.append(err)
        outs.append(out)
        assert p.returncode == 0, err[-4000:]
    prints = []
    for i, err in enumerate(errs):
        assert "jax.distributed initialised" in err and f"process {i} of 2" in err, err[-3000:]
        m = re.search(rf"process {i} of 2: parameter fingerprint ([0-9a-f]+)", err)
        assert m, err[-3000:]
        prints.append(m.group(1))
    assert prints[0] == prints[1]
    result = json.loads((tmp_path / "w" / "eval.json").read_text())
    assert result["params_fingerprint"] == prints[0] and result["step"] == 4
    assert result["metrics"]["count"] == 8  # both processes' halves of the test split
    assert len(cli.losses(outs[0])) == 4 and not cli.losses(outs[1])  # process 0 writes metrics


def test_a_dead_peer_is_one_line_naming_the_checkpoint_to_resume_from(tmp_path):
    port = _free_port()
    workdir = tmp_path / "w"
    args = cli.tiny_args(
        "baseline_resnet",
        workdir,
        tmp_path / "tfds",
        "--config.train.num_steps=400",
        "--config.train.checkpoint_every=2",
        "--config.train.log_every=1",
    )
    procs = [
        subprocess.Popen(
            args,
            cwd=cli.ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=cli.env(
                JAX_COORDINATOR_ADDRESS=f"localhost:{port}",
                JAX_NUM_PROCESSES="2",
                JAX_PROCESS_ID=str(i),
            ),
        )
        for i in range(2)
    ]
    try:
        start = time.monotonic()
        while not (workdir / "checkpoints" / "2" / "commit_success.txt").exists():
            assert time.monotonic() - start < 400, "no checkpoint 2 within 400 s"
            assert all(p.poll() is None for p in procs), procs[0].stderr.read()[-3000:]
            time.sleep(0.5)
        procs[1].kill()
        _, err = procs[0].communicate(timeout=300)
    finally:
        for p in procs:
            p.kill()
    finished = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    last = err.strip().splitlines()[-1]
    assert procs[0].returncode == 1, err[-3000:]
    assert re.fullmatch(
        r"error: process 0 of 2: .*\); restart all 2 processes with the same command: "
        rf"the run resumes from checkpoint {finished[-1]} in {re.escape(str(workdir))}\.",
        last,
    ), last
    assert "Traceback" not in err and "Check failure stack trace" not in err, err[-3000:]
