"""One tiny model trained once per test session (shared by pytest-xdist workers through a file
lock): a CPU-sized method on a folder dataset of synthetic_fgvc birds whose classes differ
only in their marks (`paired_data`), through `fgvc_jax.loop.train.train_and_evaluate`."""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os

import pytest

from tests.tools import paired_data

METHOD = "attention_cnn"
STEPS = 300
PER_CLASS = {"train": 4, "test": 2}  # nuisance seeds; each rendered once per class


@dataclasses.dataclass
class Run:
    workdir: str
    config: object
    index: dict  # {split: [(path, label, boxes)]}
    final_eval: dict  # the trainer's <workdir>/eval.json


def make_config(root: str):
    import importlib

    config = importlib.import_module(f"configs.{METHOD}").get_config("synthetic")
    config.data.name = "folder"
    config.data.folder_root = os.path.join(root, "images")
    config.data.data_dir = os.path.join(root, "tfds")
    config.data.resize = config.data.eval_resize = 64  # crop 64: no rescaling, boxes exact
    config.data.num_workers = 1
    config.data.flip = False
    config.data.val_fraction = 0.0  # fit on the whole train split (the tests predict it)
    config.method.widths = (16, 32, 64)
    config.method.hidden = 64
    config.method.dropout = 0.0
    config.optim.lr = {"new": 1e-3}
    config.train.batch_size = 16
    config.train.eval_batch_size = 16
    config.train.num_steps = STEPS
    config.train.eval_every_epochs = 0.0
    config.train.log_every = 50
    config.train.checkpoint_every = 0
    return config


def _train(root: str) -> None:
    from fgvc_jax.loop import train

    paired_data.write(os.path.join(root, "images"), num_classes=4, per_class=PER_CLASS)
    config = make_config(root)
    train.train_and_evaluate(config, os.path.join(root, "workdir"))  # writes config.json
    open(os.path.join(root, "done"), "w").close()


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Run:
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # common to all workers of this session
    root = str(shared / "tools_trained_run")
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, "lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not os.path.exists(os.path.join(root, "done")):
                _train(root)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    with open(os.path.join(root, "images", "index.json")) as f:
        index = json.load(f)
    with open(os.path.join(root, "workdir", "eval.json")) as f:
        final = json.load(f)
    return Run(os.path.join(root, "workdir"), make_config(root), index, final)
