"""`--config.train.wandb_project=P` with WANDB_MODE=offline: the W&B run under <workdir>/wandb/
holds every scalar of metrics.jsonl at its step, the run's config, and a resume continues the
same W&B run (its id kept in the workdir)."""

import glob
import json
import os
import struct

import pytest

from fgvc_jax.run import wandb_writer
from tests.train import cli

BLOCK = 32768  # the .wandb file: LevelDB's log format, 32 KiB blocks of 7-byte-headed chunks


def _records(path):
    """The protobuf Records of an offline run file (wandb 0.30 has no public reader)."""
    from wandb.proto import wandb_internal_pb2

    data = open(path, "rb").read()
    assert data[:4] == b":W&B", data[:7]
    pos, buf = 7, b""
    while pos + 7 <= len(data):
        if BLOCK - pos % BLOCK < 7:  # a block's trailer
            pos += BLOCK - pos % BLOCK
            continue
        _, n, kind = struct.unpack("<IHB", data[pos : pos + 7])
        buf, pos = buf + data[pos + 7 : pos + 7 + n], pos + 7 + n
        if kind in (1, 4):  # FULL, LAST
            record = wandb_internal_pb2.Record()
            record.ParseFromString(buf)
            buf = b""
            yield record


def _offline_run(workdir):
    """(config, {step: {key: value}}) of every offline run file under the workdir, merged."""
    config, history = {}, {}
    for path in sorted(glob.glob(os.path.join(workdir, "wandb", "offline-run-*", "run-*.wandb"))):
        for r in _records(path):
            kind = r.WhichOneof("record_type")
            if kind == "run":
                config.update({i.key: json.loads(i.value_json) for i in r.run.config.update})
            elif kind == "history":
                row = {
                    i.key or "/".join(i.nested_key): json.loads(i.value_json)
                    for i in r.history.item
                }
                history.setdefault(r.history.step.num, {}).update(
                    {k: v for k, v in row.items() if not k.startswith("_")}
                )
    return config, history


def test_offline_wandb_run_holds_every_scalar_and_resumes(tmp_path):
    pytest.importorskip("wandb")
    workdir, data_dir = tmp_path / "w", tmp_path / "tfds"
    args = ["--config.train.wandb_project=fgvc-test", "--config.train.eval_every_steps=3"]
    first = cli.run(
        cli.tiny_args("attention_cnn", workdir, data_dir, "--config.train.num_steps=3", *args),
        WANDB_MODE="offline",
    )
    assert first.returncode == 0, first.stderr[-3000:]
    run_id = (workdir / wandb_writer.RUN_ID_FILE).read_text().strip()
    second = cli.run(
        cli.tiny_args("attention_cnn", workdir, data_dir, "--config.train.num_steps=6", *args)
        + ["--allow_config_change"],  # the finished 3-step run, carried on to 6 steps
        WANDB_MODE="offline",
    )
    assert second.returncode == 0, second.stderr[-3000:]
    assert (workdir / wandb_writer.RUN_ID_FILE).read_text().strip() == run_id
    runs = glob.glob(str(workdir / "wandb" / "offline-run-*"))
    assert runs and all(r.endswith("-" + run_id) for r in runs), runs

    config, history = _offline_run(workdir)
    assert config["method"]["name"] == "attention_cnn"
    assert config["train"]["wandb_project"] == "fgvc-test"
    expected = {}
    with open(workdir / "metrics.jsonl") as f:
        for line in f:
            row = json.loads(line)
            expected.setdefault(row.pop("step"), {}).update(row)
    assert sorted(history) == sorted(expected) and max(expected) == 6
    for step, row in expected.items():
        assert history[step].keys() == row.keys(), step
        for k, v in row.items():
            assert history[step][k] == pytest.approx(v, rel=1e-6), (step, k)


def test_a_wandb_project_without_the_package_is_one_line(monkeypatch):
    monkeypatch.setattr(wandb_writer.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(
        ValueError, match=r"wandb_project='p' needs the wandb package: run `make dev`"
    ):
        wandb_writer.check("p")
    wandb_writer.check("")  # off: nothing needed
