"""Honest model selection: periodic evaluation and the best checkpoint use the validation
split; the test split is read only at the end, on the last and on the best checkpoint."""

import importlib
import json

import pytest

from fgvc_jax.loop import step as step_lib
from fgvc_jax.loop import train
from fgvc_jax.loop.experiment import Experiment

VAL = {1: 50.0, 2: 80.0, 3: 60.0}  # best by validation: step 2
TEST = {1: 90.0, 2: 10.0, 3: 95.0}  # best by test would be step 3


@pytest.fixture
def config(tmp_path):
    c = importlib.import_module("configs.attention_cnn").get_config("synthetic")
    c.data.data_dir = str(tmp_path / "tfds")
    c.data.synthetic.update(num_classes=4, train_per_class=12, test_per_class=2)
    c.data.num_workers = 1
    c.data.val_fraction = 0.25
    c.method.update(widths=(8, 8, 8), hidden=16)
    c.train.update(
        batch_size=8,
        eval_batch_size=8,
        num_steps=3,
        eval_every_steps=1,
        log_every=1,
        checkpoint_every=0,
    )
    return c


def test_best_checkpoint_is_chosen_on_validation(config, tmp_path, monkeypatch):
    reads = []  # (which split, training step when read)
    state = {"step": 0}
    real_iterator = Experiment.eval_iterator

    def eval_iterator(self, which="test"):
        reads.append((which, state["step"]))
        return real_iterator(self, which)

    def scripted(eval_fn, variables, batches, mesh):
        which = reads[-1][0]
        n = sum(int(b["mask"].sum()) for b in batches)
        value = (VAL if which == "val" else TEST)[state["step"]]
        return {"top1/combined": value, "count": float(n)}

    real_step = step_lib.make_train_step

    def counting_step(*args, **kwargs):
        fn = real_step(*args, **kwargs)

        def step(s, batch):
            state["step"] += 1
            return fn(s, batch)

        return step

    monkeypatch.setattr(Experiment, "eval_iterator", eval_iterator)
    monkeypatch.setattr(step_lib, "evaluate", scripted)
    monkeypatch.setattr(step_lib, "make_train_step", counting_step)
    workdir = tmp_path / "w"
    train.train_and_evaluate(config, str(workdir))

    assert [w for w, s in reads if s < 3] == ["val", "val"]  # during training: val only
    assert ("test", 3) in reads and all(w == "val" for w, s in reads if s < 3)
    result = json.loads((workdir / "eval.json").read_text())
    assert result["best"]["top1/combined"] == 80.0  # chosen on validation
    assert result["test_best"]["step"] == 2  # not step 3, the test's best
    assert result["metrics"]["top1/combined"] == 95.0  # the last checkpoint on test
    assert result["selection"]["top1/combined"] == 60.0  # the last checkpoint on val
    assert result["selection_split"] == "train~val@0.25"
    assert result["metrics"]["count"] == 8  # the test split, 4 x 2
    assert result["selection"]["count"] == 12  # 4 classes x 3 carved
