"""`train.early_stop_patience`: the trainer stops after that many evaluations without an
improvement of the best checkpoint's metric on the selection split, evaluates as at the end
(eval.json's `early_stopped_at`), and a resumed run stops at the same step. The validation
scores are scripted; the training is real (a CPU-size model, a few steps)."""

import importlib
import json

import ml_collections
import pytest

from fgvc_jax.loop import step as step_lib
from fgvc_jax.loop import train
from fgvc_jax.loop.experiment import Experiment
from fgvc_jax.run import checkpoints as ckpt_lib

# val top-1 after each step; patience 2: 60 at step 2 is not beaten at steps 3 and 4
VAL = {1: 50.0, 2: 60.0, 3: 55.0, 4: 60.0, 5: 40.0, 6: 99.0, 7: 1.0, 8: 1.0}
STOP = 4


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


def _config(data_dir, **train_fields):
    c = importlib.import_module("configs.attention_cnn").get_config("synthetic")
    c.data.data_dir = data_dir
    c.data.synthetic.update(num_classes=4, train_per_class=4, test_per_class=1)
    c.data.num_workers = 1
    c.data.val_fraction = 0.25
    c.method.update(widths=(8, 8, 8), hidden=16)
    c.train.update(
        batch_size=8,
        eval_batch_size=8,
        num_steps=8,
        eval_every_steps=1,
        log_every=1,
        checkpoint_every=0,
        early_stop_patience=2,
        **train_fields,
    )
    return c


@pytest.fixture
def scripted(monkeypatch):
    """Scripted evaluations (VAL on 'val', 50 on 'test'); returns {'step': the trainer's
    step, 'trained': training steps run in this test}."""
    seen = {"step": 0, "trained": 0, "which": None}
    real_iterator, real_step = Experiment.eval_iterator, step_lib.make_train_step
    real_restore = ckpt_lib.Checkpoints.restore

    def eval_iterator(self, which="test"):
        seen["which"] = which
        return real_iterator(self, which)

    def evaluate(eval_fn, variables, batches, mesh):
        n = sum(int(b["mask"].sum()) for b in batches)
        value = VAL[seen["step"]] if seen["which"] == "val" else 50.0
        return {"top1/combined": value, "count": float(n)}

    def make_train_step(*args, **kwargs):
        fn = real_step(*args, **kwargs)

        def step(s, batch):
            seen["step"] += 1
            seen["trained"] += 1
            return fn(s, batch)

        return step

    def restore(self, abstract_state, which="latest"):
        out = real_restore(self, abstract_state, which)
        if out is not None and which == "latest":
            seen["step"] = out[1]
        return out

    monkeypatch.setattr(Experiment, "eval_iterator", eval_iterator)
    monkeypatch.setattr(step_lib, "evaluate", evaluate)
    monkeypatch.setattr(step_lib, "make_train_step", make_train_step)
    monkeypatch.setattr(ckpt_lib.Checkpoints, "restore", restore)
    return seen


def _check_stopped(workdir, out):
    result = json.loads((workdir / "eval.json").read_text())
    assert result["early_stopped_at"] == STOP and result["step"] == STOP
    assert result["num_steps"] == 8
    assert result["best"] == {"top1/combined": 60.0}
    assert result["selection"]["top1/combined"] == VAL[STOP]  # the stopping evaluation
    line = (
        f"early stop at step {STOP}: no improvement of val/top1/combined for 2 evaluations "
        "(best 60.00 at step 2)"
    )
    assert line in out


def test_stops_after_patience_evaluations(data_dir, tmp_path, scripted, capsys):
    workdir = tmp_path / "w"
    train.train_and_evaluate(_config(data_dir), str(workdir))
    assert scripted["trained"] == STOP
    _check_stopped(workdir, capsys.readouterr().out)
    logged = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged if "val/top1/combined" in r] == [1, 2, 3, 4]  # once each


def test_a_resumed_run_stops_at_the_same_step(data_dir, tmp_path, scripted, capsys, monkeypatch):
    """Pre-empted at step 3, an evaluation step (its checkpoint is written before the
    evaluation): the resumed run replays steps 1-2 from metrics.jsonl, evaluates step 3,
    and stops at 4 as the uninterrupted run does."""
    workdir = tmp_path / "w"
    with monkeypatch.context() as m:
        m.setattr(train._Sigterm, "reached", lambda self, step: step == 3)
        with pytest.raises(train.Preempted):
            train.train_and_evaluate(_config(data_dir), str(workdir))
    assert scripted["trained"] == 3
    train.train_and_evaluate(_config(data_dir), str(workdir))
    assert scripted["trained"] == STOP
    _check_stopped(workdir, capsys.readouterr().out)
    # Run again after the early stop: nothing is trained, the stop stands.
    train.train_and_evaluate(_config(data_dir), str(workdir))
    assert scripted["trained"] == STOP
    assert json.loads((workdir / "eval.json").read_text())["early_stopped_at"] == STOP


def test_min_delta_and_off():
    """min_delta 10: 60 after 50 is no improvement (the reference stays 50 at step 1);
    patience 0 never stops."""

    def run(**fields):
        early = train._EarlyStop(ml_collections.ConfigDict(fields), "val/top1/combined")
        stop = next((s for s in VAL if early.update(s, VAL[s])), None)
        return stop, early

    stop, early = run(early_stop_patience=2, early_stop_min_delta=10.0)
    assert stop == 3 and (early.best, early.best_step) == (50.0, 1)
    assert run(early_stop_patience=2)[0] == STOP
    assert run(early_stop_patience=0)[0] is None and run()[0] is None
