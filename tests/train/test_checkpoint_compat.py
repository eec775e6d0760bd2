"""Checkpoints written before the managers used orbax's `preservation_policy` (a workdir's
`checkpoints/` and `best/` in tests/train/data/checkpoints_before_preservation_policy,
written by fgvc_jax.run.checkpoints as of commit 3f32688 with orbax-checkpoint 0.12.8: periodic
steps 1-3 with keep=2, best step 2 at top1/combined 50) restore, verify and are pruned by
today's code; the digest is read through orbax's step metadata API."""

import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fgvc_jax.run import checkpoints

FIXTURE = os.path.join(os.path.dirname(__file__), "data", "checkpoints_before_preservation_policy")


def _state(step):
    """The state the fixture holds at `step` (as it was written)."""
    return {
        "step": jnp.int32(step),
        "params": {
            "head": {"kernel": jnp.arange(12.0).reshape(3, 4) + step},
            "bn": {"scale": jnp.ones(5) * step},
        },
        "opt_state": {"mu": jnp.full((3, 4), float(step))},
    }


def _equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_checkpoints_of_the_previous_layout_restore_verify_and_are_pruned(tmp_path):
    shutil.copytree(FIXTURE, tmp_path / "w")
    workdir = str(tmp_path / "w")
    assert checkpoints.stored_digest(os.path.join(workdir, "checkpoints", "3")) == (
        checkpoints.digest(_state(3))
    )
    ck = checkpoints.Checkpoints(workdir, keep=2)
    assert ck.latest.all_steps() == [2, 3] and ck.best.all_steps() == [2]
    assert ck.best_value() == 50.0
    abstract = jax.eval_shape(lambda: _state(0))
    state, step = ck.restore(abstract, "latest")
    assert step == 3
    _equal(state, _state(3))
    state, step = ck.restore(abstract, "best")
    assert step == 2
    _equal(state, _state(2))

    # Today's policies take over the old folders: the newest 2 periodic, the single best.
    for s in (4, 5):
        ck.save(s, _state(s))
    assert not ck.save_best(4, _state(4), {"top1/combined": 40.0})
    assert ck.save_best(5, _state(5), {"top1/combined": 60.0})
    ck.wait()
    ck.close()
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["4", "5"]
    assert os.listdir(os.path.join(workdir, "best")) == ["5"]
    ck = checkpoints.Checkpoints(workdir, keep=2)
    assert ck.best_value() == 60.0
    state, step = ck.restore(abstract, "latest")
    ck.close()
    assert step == 5
    _equal(state, _state(5))


def test_missing_step_metadata_is_damage(tmp_path):
    shutil.copytree(FIXTURE, tmp_path / "w")
    folder = tmp_path / "w" / "checkpoints" / "3"
    for name in os.listdir(folder):  # orbax's step metadata file, whatever its name
        if os.path.isfile(folder / name) and name != "commit_success.txt":
            os.remove(folder / name)
    with pytest.raises(checkpoints.Damaged, match="step metadata unreadable"):
        checkpoints.stored_digest(str(folder))
