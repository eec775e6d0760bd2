"""fgvc_jax.recipe.optim: per-group learning rates, schedules, weight-decay masks, clipping,
momentum semantics and gradient accumulation."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from fgvc_jax.recipe import optim

GROUPS = {"backbone": r"^backbone/", "new": r".*"}


def _params():
    r = np.random.default_rng(0)
    f = lambda *s: jnp.asarray(r.normal(size=s), jnp.float32)
    return {
        "backbone": {"conv": {"kernel": f(3, 3, 2, 4), "bias": f(4)}},
        "head": {"kernel": f(4, 3), "bias": f(3)},
    }


def _config(**kw):
    c = dict(
        name="sgd",
        momentum=0.0,
        nesterov=False,
        weight_decay=0.0,
        wd_mask=".*",
        lr={"backbone": 0.01, "new": 0.5},
        schedule="constant",
        end_factor=0.0,
        warmup_steps=0,
        warmup_epochs=0.0,
        clip_norm=0.0,
        accumulate=1,
        b1=0.9,
        b2=0.999,
        eps=1e-8,
    )
    c.update(kw)
    return ml_collections.ConfigDict(c)


def _grads(params, seed=1):
    r = np.random.default_rng(seed)
    return jax.tree.map(lambda p: jnp.asarray(r.normal(size=p.shape), jnp.float32), params)


def test_group_labels_first_match_wins():
    labels = optim.group_labels(_params(), {"bias": r"bias$", **GROUPS})
    assert labels["backbone"]["conv"]["bias"] == "bias"
    assert labels["backbone"]["conv"]["kernel"] == "backbone"
    assert labels["head"]["kernel"] == "new" and labels["head"]["bias"] == "bias"


def test_each_group_updates_with_its_own_rate():
    params, grads = _params(), _grads(_params())
    tx = optim.create_optimizer(_config(), params, GROUPS, total_steps=10, steps_per_epoch=5)
    state = tx.init(params)
    updates, state = tx.update(grads, state, params)
    lrs = {k: float(v) for k, v in optim.learning_rates(state).items()}
    assert lrs == pytest.approx({"backbone": 0.01, "new": 0.5})
    labels = optim.group_labels(params, GROUPS)
    for u, g, label in zip(
        jax.tree.leaves(updates), jax.tree.leaves(grads), jax.tree.leaves(labels)
    ):
        np.testing.assert_allclose(u, -lrs[label] * g, rtol=1e-6)


def test_warmup_then_cosine_per_group():
    params = _params()
    cfg = _config(schedule="cosine", warmup_steps=4, end_factor=0.1)
    total = 20
    tx = optim.create_optimizer(cfg, params, GROUPS, total_steps=total, steps_per_epoch=5)
    state = tx.init(params)
    zero = jax.tree.map(jnp.zeros_like, params)
    update = jax.jit(tx.update)
    for step in range(total):
        _, state = update(zero, state, params)
        for g, peak in cfg.lr.items():
            if step < 4:
                want = peak * step / 4
            else:
                frac = (step - 4) / (total - 4)
                want = peak * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * frac)))
            assert float(optim.learning_rates(state)[g]) == pytest.approx(want, rel=1e-5, abs=1e-9)


def test_warmup_epochs_uses_steps_per_epoch():
    params = _params()
    cfg = _config(schedule="constant", warmup_epochs=2.0)
    tx = optim.create_optimizer(cfg, params, GROUPS, total_steps=100, steps_per_epoch=5)
    state = tx.init(params)
    zero = jax.tree.map(jnp.zeros_like, params)
    rates = []
    for _ in range(12):
        _, state = tx.update(zero, state, params)
        rates.append(float(optim.learning_rates(state)["new"]))
    np.testing.assert_allclose(rates[:11], [0.5 * s / 10 for s in range(10)] + [0.5], rtol=1e-6)


def test_weight_decay_only_where_mask_matches():
    params = _params()
    zero = jax.tree.map(jnp.zeros_like, params)
    for name in ("sgd", "adamw"):
        cfg = _config(name=name, weight_decay=0.1, wd_mask=r"kernel$")
        tx = optim.create_optimizer(cfg, params, GROUPS, total_steps=10, steps_per_epoch=5)
        updates, _ = tx.update(zero, tx.init(params), params)
        labels = optim.group_labels(params, GROUPS)
        flat_u = jax.tree_util.tree_flatten_with_path(updates)[0]
        for (path, u), p, label in zip(flat_u, jax.tree.leaves(params), jax.tree.leaves(labels)):
            decayed = path[-1].key == "kernel"
            want = -cfg.lr[label] * 0.1 * p if decayed else jnp.zeros_like(p)
            np.testing.assert_allclose(u, want, rtol=1e-5, atol=1e-8, err_msg=f"{name} {path}")


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_momentum_matches_pytorch_rule(nesterov):
    params = {"w": jnp.asarray([1.0, -2.0, 3.0])}
    cfg = _config(
        momentum=0.9, nesterov=nesterov, weight_decay=0.01, lr={"new": 0.1}, schedule="constant"
    )
    tx = optim.create_optimizer(cfg, params, {"new": ".*"}, total_steps=10, steps_per_epoch=5)
    state = tx.init(params)
    p, buf = np.asarray(params["w"], np.float64), np.zeros(3)
    for seed in range(3):
        g = np.random.default_rng(seed).normal(size=3)
        updates, state = tx.update({"w": jnp.asarray(g, jnp.float32)}, state, params)
        params = optax.apply_updates(params, updates)
        # torch.optim.SGD: d = g + wd p; buf = m buf + d; d = d + m buf (nesterov) or buf.
        d = g + 0.01 * p
        buf = 0.9 * buf + d
        d = d + 0.9 * buf if nesterov else buf
        p = p - 0.1 * d
        np.testing.assert_allclose(params["w"], p, rtol=1e-5)


def test_global_norm_clipping():
    params = _params()
    grads = jax.tree.map(lambda g: 100.0 * g, _grads(params))
    cfg = _config(lr={"backbone": 1.0, "new": 1.0}, clip_norm=2.0)
    tx = optim.create_optimizer(cfg, params, GROUPS, total_steps=10, steps_per_epoch=5)
    updates, _ = tx.update(grads, tx.init(params), params)
    assert float(optax.global_norm(updates)) == pytest.approx(2.0, rel=1e-5)


def test_missing_group_rate_is_a_clear_error():
    with pytest.raises(ValueError, match=r"no learning rate for parameter group\(s\) \['new'\]"):
        optim.create_optimizer(
            _config(lr={"backbone": 0.1}), _params(), GROUPS, total_steps=10, steps_per_epoch=5
        )
    with pytest.raises(ValueError, match="valid: sgd, adamw"):
        optim.create_optimizer(
            _config(name="adam"), _params(), GROUPS, total_steps=10, steps_per_epoch=5
        )


def test_accumulated_gradient_equals_full_batch_gradient():
    r = np.random.default_rng(0)
    w = jnp.asarray(r.normal(size=(5, 3)), jnp.float32)
    batch = {
        "x": jnp.asarray(r.normal(size=(12, 5)), jnp.float32),
        "y": jnp.asarray(r.integers(0, 3, 12), jnp.int32),
    }

    def loss(w, b):
        return optax.softmax_cross_entropy_with_integer_labels(b["x"] @ w, b["y"]).mean()

    def grad_fn(w, carry, b, index):
        (l, aux), g = jax.value_and_grad(lambda w: (loss(w, b), {"n": index * 1.0}), has_aux=True)(
            w
        )
        return (l, (aux, carry + 1)), g

    full_l, full_g = jax.value_and_grad(loss)(w, batch)
    (l, aux), carry, g = jax.jit(
        lambda w, b: optim.accumulate_gradients(grad_fn, w, jnp.int32(0), b, 4)
    )(w, batch)
    np.testing.assert_allclose(g, full_g, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(l, full_l, rtol=1e-6)
    assert int(carry) == 4 and float(aux["n"]) == pytest.approx((0 + 1 + 2 + 3) / 4)
