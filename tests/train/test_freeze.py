"""`optim.freeze_steps`/`freeze_groups`: the frozen groups get no update, no optimizer state
and no weight decay in the first steps, then start from a fresh optimizer state (PyTorch's
requires_grad=False); the schedules count on; freeze_steps=0 is the optimizer of before."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import traverse_util

from fgvc_jax.loop import step as step_lib
from fgvc_jax.recipe import optim
from fgvc_jax.recipe import train_state as state_lib
from fgvc_jax.runtime import parallel
from tests.train.test_optim import GROUPS, _config, _grads, _params
from tests.train.tiny import TinyMethod, method_config

FREEZE = 3


def _run(tx, params, n):
    """`n` updates with the gradients of seeds 1..n: [(params, opt_state) after each]."""
    state = tx.init(params)
    out = []
    for i in range(1, n + 1):
        updates, state = tx.update(_grads(params, seed=i), state, params)
        params = optax.apply_updates(params, updates)
        out.append((params, state))
    return out


def _tx(config):
    return optim.create_optimizer(config, _params(), GROUPS, total_steps=10, steps_per_epoch=5)


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_frozen_groups_then_a_fresh_optimizer_state(name):
    kw = dict(name=name, momentum=0.9, weight_decay=0.05, schedule="cosine", warmup_steps=2)
    config = _config(freeze_steps=FREEZE, freeze_groups=("backbone",), **kw)
    p0 = _params()
    history = _run(_tx(config), p0, FREEZE + 2)

    p3, _ = history[FREEZE - 1]
    for a, b in zip(jax.tree.leaves(p3["backbone"]), jax.tree.leaves(p0["backbone"])):
        np.testing.assert_array_equal(a, b)  # bitwise the initial backbone
    assert not np.allclose(p3["head"]["kernel"], p0["head"]["kernel"])  # the head trained

    # Update 4: the backbone's first, from a fresh state of its optimizer at the lr the
    # schedule gives step 3 (it counted through the freeze).
    p4, s4 = history[FREEZE]
    lr = optim.learning_rates(s4)
    schedule = optim.make_schedule(config, 0.01, 10, 2)
    np.testing.assert_allclose(lr["backbone"], schedule(FREEZE), rtol=1e-6)
    fresh = optim._group_optimizer(config, optim.regex_mask(p3, config.wd_mask))(lr["backbone"])
    u, _ = fresh.update(_grads(p3, seed=FREEZE + 1), fresh.init(p3), p3)
    want = optax.apply_updates(p3, u)["backbone"]
    for a, b in zip(jax.tree.leaves(p4["backbone"]), jax.tree.leaves(want)):
        np.testing.assert_array_equal(a, b)
    assert not np.allclose(p4["backbone"]["conv"]["kernel"], p0["backbone"]["conv"]["kernel"])
    p5, _ = history[FREEZE + 1]
    assert not np.allclose(p5["backbone"]["conv"]["kernel"], p4["backbone"]["conv"]["kernel"])


def test_freeze_steps_zero_is_the_optimizer_of_before():
    old = _config(momentum=0.9, weight_decay=0.05, clip_norm=1.0)  # no freeze fields
    new = _config(momentum=0.9, weight_decay=0.05, clip_norm=1.0, freeze_steps=0)
    a, b = _run(_tx(old), _params(), 3), _run(_tx(new), _params(), 3)
    assert jax.tree.structure(a[-1][1]) == jax.tree.structure(b[-1][1])
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y)


def test_clipping_leaves_the_frozen_gradients_out():
    """While frozen, the clipping norm is that of the trained groups only (PyTorch's
    clip_grad_norm_ skips parameters without a gradient)."""
    params = _params()
    tx = _tx(_config(clip_norm=0.1, freeze_steps=FREEZE))
    grads = _grads(params)
    huge = {**grads, "backbone": jax.tree.map(lambda g: 1e3 * g, grads["backbone"])}
    u1, _ = tx.update(grads, tx.init(params), params)
    u2, _ = tx.update(huge, tx.init(params), params)
    np.testing.assert_array_equal(u1["head"]["kernel"], u2["head"]["kernel"])


def test_unknown_freeze_group_is_a_one_line_error():
    with pytest.raises(ValueError, match=r"freeze_groups: 'bakbone' .*valid: backbone, new$"):
        _tx(_config(freeze_steps=2, freeze_groups=("bakbone",)))
    _tx(_config(freeze_steps=0, freeze_groups=("bakbone",)))  # off: not checked
    # --config.optim.freeze_groups=backbone,new arrives as one string
    config = _config(freeze_steps=2, freeze_groups=("backbone,new",))
    assert optim.frozen_groups(config, ["backbone", "new"]) == {"backbone", "new"}


def test_train_step_keeps_the_backbone_and_updates_its_batch_norm_statistics():
    """Through the real train step: the backbone's parameters stay, its BatchNorm running
    statistics move (as with requires_grad=False in PyTorch's train mode)."""
    mesh = parallel.make_mesh(jax.devices()[:1])
    method = TinyMethod(method_config(dropout=0.0), 5)
    variables = state_lib.init_variables(method, (16, 16, 3), 0, jnp.float32)
    config = ml_collections.ConfigDict(
        dict(
            seed=0,
            train=dict(dtype="float32"),
            optim=_config(momentum=0.9, freeze_steps=2, lr={"backbone": 0.1, "new": 0.1}),
        )
    )
    tx = optim.create_optimizer(
        config.optim, variables["params"], {"backbone": r"^backbone/", "new": ".*"},
        total_steps=10, steps_per_epoch=10,
    )  # fmt: skip
    state = state_lib.create_train_state(tx, variables, mesh)
    step = step_lib.make_train_step(method, tx, config, mesh)
    r = np.random.default_rng(0)
    for _ in range(2):
        batch = {
            "image": r.integers(0, 256, (4, 16, 16, 3), dtype=np.uint8),
            "label": r.integers(0, 5, (4,), dtype=np.int32),
        }
        state, _ = step(state, parallel.host_to_global(batch, mesh))
    p, p0 = jax.device_get(state.params), jax.device_get(variables["params"])
    for a, b in zip(jax.tree.leaves(p["backbone"]), jax.tree.leaves(p0["backbone"])):
        np.testing.assert_array_equal(a, b)
    assert not np.allclose(p["head"]["kernel"], p0["head"]["kernel"])
    bs, bs0 = jax.device_get(state.batch_stats), jax.device_get(variables["batch_stats"])
    assert not np.allclose(bs["backbone"]["bn"]["mean"], bs0["backbone"]["bn"]["mean"])


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_matches_pytorch_requires_grad_false(name):
    """PyTorch: the backbone's requires_grad is False for the first FREEZE steps (no .grad,
    so no optimizer state, no weight decay, left out of clip_grad_norm_), the lr of each
    group set from our schedule every step."""
    torch = pytest.importorskip("torch")
    kw = dict(name=name, momentum=0.9, weight_decay=0.05, schedule="cosine", warmup_steps=2)
    config = _config(freeze_steps=FREEZE, clip_norm=1.0, **kw)
    steps, p0 = FREEZE + 3, _params()
    ours = _run(_tx(config), p0, steps)[-1][0]

    flat = lambda t: {"/".join(k): v for k, v in traverse_util.flatten_dict(t).items()}
    tp = {k: torch.nn.Parameter(torch.tensor(np.asarray(v))) for k, v in flat(p0).items()}
    groups = {g: [tp[k] for k in tp if k.startswith("backbone/") == (g == "backbone")]
              for g in ("backbone", "new")}  # fmt: skip
    args = [{"params": ps, "lr": 0.0} for ps in groups.values()]
    if name == "sgd":
        opt = torch.optim.SGD(args, momentum=0.9, weight_decay=0.05)
    else:
        opt = torch.optim.AdamW(args, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.05)
    schedules = {g: optim.make_schedule(config, config.lr[g], 10, 2) for g in groups}
    for i in range(steps):
        frozen = i < FREEZE
        for g, group in zip(groups, opt.param_groups):
            group["lr"] = float(schedules[g](i))
        grads = flat(_grads(p0, seed=i + 1))
        for k, p in tp.items():
            p.requires_grad_(not (frozen and k.startswith("backbone/")))
            p.grad = torch.tensor(np.asarray(grads[k])) if p.requires_grad else None
        torch.nn.utils.clip_grad_norm_([p for p in tp.values() if p.grad is not None], 1.0)
        opt.step()
    for k, v in flat(ours).items():  # float32 rounding: AdamW's steps are ~lr (0.5 for 'new')
        np.testing.assert_allclose(v, tp[k].detach().numpy(), rtol=2e-5, atol=1e-5, err_msg=k)
