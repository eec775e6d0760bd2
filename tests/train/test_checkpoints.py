"""fgvc_jax.convert.pretrained: pretrained backbone merge with a dont-load regex, strict shape
checks; fgvc_jax.run.checkpoints: the periodic/best managers."""

import jax.numpy as jnp
import numpy as np
import pytest

from fgvc_jax.convert.pretrained import load_pretrained, merge_backbone
from fgvc_jax.run import checkpoints


def _variables():
    return {
        "params": {
            "backbone": {
                "conv": {"kernel": jnp.zeros((3, 3, 3, 4))},
                "head": {"kernel": jnp.zeros((4, 1000))},
            },
            "new": {"kernel": jnp.zeros((4, 5))},
        },
        "batch_stats": {"backbone": {"bn": {"mean": jnp.zeros((4,))}}},
    }


def _pretrained(head_shape=(4, 1000)):
    return {
        "params": {
            "conv": {"kernel": np.full((3, 3, 3, 4), 2.0, np.float32)},
            "head": {"kernel": np.full(head_shape, 3.0, np.float32)},
        },
        "batch_stats": {"bn": {"mean": np.full((4,), 4.0, np.float32)}},
    }


def test_merge_fills_the_backbone_and_keeps_new_layers():
    merged = merge_backbone(_variables(), _pretrained())
    assert np.all(merged["params"]["backbone"]["conv"]["kernel"] == 2.0)
    assert np.all(merged["params"]["backbone"]["head"]["kernel"] == 3.0)
    assert np.all(merged["batch_stats"]["backbone"]["bn"]["mean"] == 4.0)
    assert np.all(merged["params"]["new"]["kernel"] == 0.0)


def test_dont_load_skips_the_head_and_shape_mismatch_is_named():
    with pytest.raises(
        ValueError,
        match=r"params/backbone/head/kernel: converted shape "
        r"\(4, 10\), method shape \(4, 1000\)",
    ):
        merge_backbone(_variables(), _pretrained((4, 10)))
    merged = merge_backbone(_variables(), _pretrained((4, 10)), dont_load=r"^backbone/head/")
    assert np.all(merged["params"]["backbone"]["head"]["kernel"] == 0.0)
    assert np.all(merged["params"]["backbone"]["conv"]["kernel"] == 2.0)


def test_unknown_source_array_and_unfilled_target_are_errors():
    src = _pretrained()
    src["params"]["extra"] = {"w": np.zeros(3, np.float32)}
    del src["params"]["conv"]
    with pytest.raises(
        ValueError,
        match=r"(?s)params/backbone/conv/kernel: missing.*"
        r"params/backbone/extra/w: not in the method's backbone",
    ):
        merge_backbone(_variables(), src)


def test_missing_pretrained_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.init.pretrained"):
        load_pretrained(_variables(), str(tmp_path / "nope.pth"), arch="resnet50")


def test_periodic_keep_and_best_only_when_better(tmp_path):
    ck = checkpoints.Checkpoints(str(tmp_path), keep=2, best_metric="top1/combined")
    state = {"w": jnp.arange(3.0)}
    for step in (1, 2, 3):
        ck.save(step, {"w": state["w"] + step})
    assert ck.save_best(2, state, {"top1/combined": 50.0})
    assert not ck.save_best(3, state, {"top1/combined": 40.0})
    assert ck.save_best(3, {"w": state["w"] * 7}, {"top1/combined": 60.0})
    ck.wait()
    assert ck.latest.all_steps() == [2, 3]
    assert ck.best_value() == 60.0
    restored, step = ck.restore({"w": jnp.zeros(3)}, "latest")
    assert step == 3 and np.array_equal(restored["w"], np.arange(3.0) + 3)
    restored, step = ck.restore({"w": jnp.zeros(3)}, "best")
    assert step == 3 and np.array_equal(restored["w"], np.arange(3.0) * 7)
    ck.close()
    # A new manager on the same workdir sees the same best value (resume keeps it).
    again = checkpoints.Checkpoints(str(tmp_path), keep=2)
    assert again.best_value() == 60.0 and again.latest_step() == 3
    again.close()
