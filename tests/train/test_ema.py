"""The EMA of the weights (`train.ema_decay`) is the analytic update, kept in the train state,
and restored as the tools' weights."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from fgvc_jax.loop import step as step_lib
from fgvc_jax.recipe import optim
from fgvc_jax.recipe import train_state as state_lib
from fgvc_jax.run import restore
from fgvc_jax.runtime import parallel
from tests.train.tiny import TinyMethod, method_config

DECAY = 0.9


def _config():
    return ml_collections.ConfigDict(
        dict(
            seed=1,
            train=dict(dtype="float32", ema_decay=DECAY),
            optim=dict(
                name="sgd",
                momentum=0.9,
                nesterov=False,
                weight_decay=0.0,
                wd_mask=".*",
                lr={"backbone": 0.1, "heads": 0.1, "new": 0.1},
                schedule="constant",
                end_factor=0.0,
                warmup_steps=0,
                warmup_epochs=0.0,
                clip_norm=0.0,
                accumulate=1,
            ),
        )
    )


def _setup():
    """(config, mesh, method, optimizer, train state at step 0 with EMA)."""
    cfg, mesh = _config(), parallel.make_mesh(jax.devices()[:1])
    method = TinyMethod(method_config(dropout=0.0), 5)
    variables = state_lib.init_variables(method, (16, 16, 3), 0, jnp.float32)
    tx = optim.create_optimizer(
        cfg.optim, variables["params"], method.param_groups(), total_steps=10, steps_per_epoch=10
    )
    return cfg, mesh, method, tx, state_lib.create_train_state(tx, variables, mesh, ema=True)


def test_ema_is_the_analytic_update():
    cfg, mesh, method, tx, state = _setup()
    step = step_lib.make_train_step(method, tx, cfg, mesh)
    want = jax.device_get(state.params)
    np.testing.assert_array_equal(
        jax.device_get(state.ema_params)["head"]["kernel"], want["head"]["kernel"]
    )  # starts at the weights
    r = np.random.default_rng(0)
    for _ in range(3):
        batch = {
            "image": r.integers(0, 256, (4, 16, 16, 3), dtype=np.uint8),
            "label": r.integers(0, 5, (4,), dtype=np.int32),
        }
        state, _ = step(state, parallel.host_to_global(batch, mesh))
        p = jax.device_get(state.params)
        want = jax.tree.map(lambda e, q: DECAY * e + (1 - DECAY) * q, want, p)
    got = jax.device_get(state.ema_params)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert not np.allclose(got["head"]["kernel"], p["head"]["kernel"])  # it lags the weights
    assert state.variables(ema=True)["params"] is state.ema_params


def test_tools_restore_the_ema_weights(tmp_path):
    """A checkpoint with EMA: `restore_variables(ema=True)` gives the EMA as 'params'."""
    import orbax.checkpoint as ocp

    _, mesh, method, _, state = _setup()
    state = state.replace(ema_params=jax.tree.map(lambda x: x + 1.0, state.ema_params))
    with ocp.CheckpointManager(tmp_path / "checkpoints") as mgr:
        mgr.save(3, args=ocp.args.StandardSave(state))
        mgr.wait_until_finished()
    shapes = state_lib.variable_shapes(method, (16, 16, 3), 0, jnp.float32)
    raw = restore.restore_variables(str(tmp_path / "checkpoints" / "3"), shapes, mesh)
    ema = restore.restore_variables(str(tmp_path / "checkpoints" / "3"), shapes, mesh, ema=True)
    np.testing.assert_array_equal(
        raw["params"]["head"]["kernel"], jax.device_get(state.params)["head"]["kernel"]
    )
    np.testing.assert_array_equal(
        ema["params"]["head"]["kernel"], jax.device_get(state.ema_params)["head"]["kernel"]
    )
    assert "ema_params" not in ema
