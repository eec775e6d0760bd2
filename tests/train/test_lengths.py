"""Run lengths in steps come from the split actually trained on (FGVC-Aircraft trains on
'trainval', twice its 'train' split)."""

import importlib

import ml_collections

from fgvc_jax import data
from fgvc_jax.loop.experiment import Experiment
from fgvc_jax.recipe import lengths

AIRCRAFT = {"train": 3334, "val": 3333, "trainval": 6667, "test": 3333}


def test_aircraft_epochs_count_the_trainval_split(monkeypatch):
    """The papers' protocol (val_fraction=0) fits on train + val = trainval (6,667)."""
    config = importlib.import_module("configs.ma_ea").get_config("fgvc_aircraft")
    config.data.val_fraction = 0.0
    config.train.num_epochs, config.train.eval_every_epochs = 100.0, 5.0
    config.optim.warmup_epochs = 2.0
    info = data.DatasetInfo(
        name="fgvc_aircraft",
        num_classes=100,
        class_names=[str(i) for i in range(100)],
        num_examples=AIRCRAFT,
    )
    monkeypatch.setattr(data, "prepare", lambda config: info)
    run = Experiment(config)
    per_epoch = 6667 // config.train.batch_size  # 416 at batch 16
    assert run.steps_per_epoch == per_epoch
    assert run.num_steps == 100 * per_epoch
    assert run.eval_every == 5 * per_epoch
    assert lengths.steps("warmup", config.optim, run.steps_per_epoch) == 2 * per_epoch
    assert run.splits.fit == "train+val" and run.splits.val is None

    config.data.val_fraction = 0.1  # honest selection: fit on train, select on the official val
    run = Experiment(config)
    assert run.splits.fit == "train" and run.splits.val == "val"
    assert run.steps_per_epoch == 3334 // config.train.batch_size


def test_steps_override_epochs():
    section = ml_collections.ConfigDict(
        dict(num_steps=0, num_epochs=2.5, eval_every_steps=7, eval_every_epochs=1.0)
    )
    assert lengths.steps("num", section, 10, round_up=True) == 25
    assert lengths.steps("eval_every", section, 10) == 7
    assert lengths.steps("warmup", section, 10) == 0
    assert lengths.steps_per_epoch(10, 4) == 2 and lengths.steps_per_epoch(3, 4) == 1
