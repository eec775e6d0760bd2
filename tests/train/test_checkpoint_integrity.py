"""Checked checkpoints (fgvc_jax.run.checkpoints): a digest written with each checkpoint and
verified at restore; every kind of damage moves the checkpoint aside and the newest good one
is used; a checkpoint of another model is one line naming the array, both shapes and both
methods; the tools skip a damaged checkpoint without moving it."""

import json
import logging as py_logging
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fgvc_jax.run import checkpoints
from tests import fault_injection


def _state(step, width=4):
    return {
        "step": jnp.int32(step),
        "params": {
            "head": {"kernel": jnp.arange(width * 300.0).reshape(width, 300) + step},
            "bn": {"scale": jnp.ones(7) * step},
        },
        "opt_state": {"mu": jnp.full((width, 300), float(step))},
    }


def _saved(root, steps=(1, 2, 3)):
    ck = checkpoints.Checkpoints(str(root), keep=3)
    for s in steps:
        ck.save(s, _state(s))
    ck.wait()
    ck.close()


def test_digest_is_recorded_and_equal_for_the_state_and_what_orbax_restores(tmp_path):
    _saved(tmp_path, (5,))
    stored = checkpoints.stored_digest(str(tmp_path / "checkpoints" / "5"))
    assert stored == checkpoints.digest(_state(5))
    assert set(stored) == {"step", "params", "opt_state"}
    assert checkpoints.digest(_state(6))["params"] != stored["params"]


@pytest.mark.parametrize("kind", fault_injection.KINDS)
def test_damaged_latest_checkpoint_is_moved_aside_and_the_previous_used(tmp_path, kind, caplog):
    _saved(tmp_path)
    fault_injection.corrupt(str(tmp_path / "checkpoints" / "3"), kind)
    ck = checkpoints.Checkpoints(str(tmp_path), keep=3)
    with caplog.at_level(py_logging.WARNING):
        state, step = ck.restore(jax.eval_shape(lambda: _state(0)), "latest")
    ck.close()
    assert step == 2
    np.testing.assert_array_equal(
        state["params"]["head"]["kernel"], np.asarray(_state(2)["params"]["head"]["kernel"])
    )
    left = sorted(os.listdir(tmp_path / "checkpoints"))
    assert left[:2] == ["1", "2"] and len(left) == 3 and left[2].startswith("3.damaged-")
    message = [r.getMessage() for r in caplog.records if "is damaged" in r.getMessage()]
    assert len(message) == 1 and f"{tmp_path}/checkpoints/3 is damaged (" in message[0]
    assert f"moved aside to {tmp_path}/checkpoints/{left[2]}" in message[0]
    assert "resuming from step 2" in message[0]
    # A new manager no longer sees it, and a new save of step 3 works.
    again = checkpoints.Checkpoints(str(tmp_path), keep=3)
    assert again.latest_step() == 2
    again.save(3, _state(3))
    again.wait()
    assert again.latest.all_steps() == [1, 2, 3]
    again.close()


def test_nothing_is_moved_when_no_checkpoint_reads(tmp_path):
    _saved(tmp_path, (1, 2))
    for s in (1, 2):
        fault_injection.corrupt(str(tmp_path / "checkpoints" / str(s)), "delete_metadata")
    ck = checkpoints.Checkpoints(str(tmp_path), keep=3)
    with pytest.raises(
        checkpoints.CheckpointError,
        match=r"no checkpoint in .* can be read "
        r"\(nothing moved\): step 2: .*step 1",
    ):
        ck.restore(jax.eval_shape(lambda: _state(0)), "latest")
    ck.close()
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["1", "2"]


def test_last_good_reads_back_and_skips_a_damaged_checkpoint(tmp_path):
    _saved(tmp_path)
    fault_injection.corrupt(str(tmp_path / "checkpoints" / "3"), "byte")
    ck = checkpoints.Checkpoints(str(tmp_path), keep=3)
    assert ck.last_good() == 2
    assert ck.latest_step() == 2
    ck.close()


def test_checkpoint_of_another_model_names_array_shapes_and_methods(tmp_path):
    _saved(tmp_path, (1,))
    (tmp_path / "config.json").write_text(json.dumps({"method": {"name": "swinfc"}}))
    ck = checkpoints.Checkpoints(str(tmp_path), keep=3, method="ma_ea")
    with pytest.raises(checkpoints.Mismatch) as e:
        ck.restore(jax.eval_shape(lambda: _state(0, width=6)), "latest")
    ck.close()
    message = str(e.value)
    assert "\n" not in message and len(message) < 400
    assert (
        "holds another model (written by method 'swinfc'; this run is 'ma_ea'): "
        "opt_state/mu is (4, 300) in the checkpoint, (6, 300) in this run."
    ) in message
    assert os.listdir(tmp_path / "checkpoints") == ["1"]  # a mismatch is not damage


def test_tools_skip_a_damaged_checkpoint_without_moving_it(tmp_path):
    _saved(tmp_path, (1, 2))
    folder = str(tmp_path / "checkpoints" / "2")
    fault_injection.corrupt(folder, "byte")
    target = {"params": jax.eval_shape(lambda: _state(0)["params"])}
    target = jax.tree.map(
        lambda s: jax.ShapeDtypeStruct(
            s.shape, s.dtype, sharding=jax.sharding.SingleDeviceSharding(jax.devices()[0])
        ),
        target,
    )
    with pytest.raises(
        checkpoints.Damaged,
        match=r"checkpoint .*/checkpoints/2 is damaged: "
        r"the params read differ",
    ):
        checkpoints.read_variables(folder, target)
    ck = checkpoints.Checkpoints(str(tmp_path), keep=3)
    assert [s for _, s in ck.candidates("latest")] == [2, 1]
    ck.close()
    restored = checkpoints.read_variables(str(tmp_path / "checkpoints" / "1"), target)
    np.testing.assert_array_equal(restored["params"]["bn"]["scale"], np.ones(7))
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["1", "2"]
