"""The optax optimizer of a run, built from `config.optim` and the method's parameter groups.

- Parameter groups: each parameter goes to the first group whose regex (`Method.param_groups`)
  re.search-matches its '/'-joined path ('new' if none); each group has its own peak learning
  rate (`config.optim.lr[group]`, e.g. backbone 2e-3 vs new modules 5e-3 in SwinFC).
- SGD with momentum/Nesterov (PyTorch semantics: weight decay added to the gradient before
  momentum) or AdamW (decoupled decay); weight decay only where `config.optim.wd_mask` matches.
- Schedules: linear warmup then cosine (or constant) decay, per group.
- Global-norm gradient clipping over all groups (`clip_norm` > 0), as PyTorch's
  `clip_grad_norm_` (`clip_by_global_norm`).
- Freezing (`freeze_steps` > 0): the groups of `freeze_groups` are not updated in the first
  `freeze_steps` steps (`frozen_until`), as timm's `--freeze`-style `requires_grad=False`.
- Gradient accumulation: `accumulate_gradients` splits a global batch into micro-batches inside
  the jitted step, so a paper's batch size fits on fewer devices.
The learning rate of every group is injected into the optimizer state, so the effective rates
can be read back (`learning_rates`) and logged.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import traverse_util

from fgvc_jax.recipe import lengths

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "constant")


def param_path(path: tuple) -> str:
    """'/'-joined parameter path, the string the group and mask regexes are matched against."""
    return "/".join(str(p) for p in path)


def group_labels(params: Any, groups: Mapping[str, str]) -> Any:
    """Pytree like `params` with each leaf replaced by its group name (first regex match)."""
    compiled = [(name, re.compile(rx)) for name, rx in groups.items()]

    def label(path):
        p = param_path(path)
        return next((name for name, rx in compiled if rx.search(p)), "new")

    flat = traverse_util.flatten_dict(params)
    return traverse_util.unflatten_dict({k: label(k) for k in flat})


def regex_mask(params: Any, regex: str) -> Any:
    """Pytree of bools: True where the parameter path matches `regex` (re.search)."""
    rx = re.compile(regex)
    flat = traverse_util.flatten_dict(params)
    return traverse_util.unflatten_dict({k: bool(rx.search(param_path(k))) for k in flat})


class FrozenState(NamedTuple):
    count: jax.Array  # updates seen, frozen ones included
    inner_state: Any


def frozen_until(inner: optax.GradientTransformation, steps: int) -> optax.GradientTransformation:
    """`inner` from update `steps` on; before it, zero updates and `inner`'s state left as
    initialised (no momentum or Adam moments, no weight decay). The first update after the
    freeze is then `inner`'s first from a fresh state, as in PyTorch when a parameter with
    `requires_grad=False` starts getting gradients."""

    def init(params):
        return FrozenState(jnp.zeros([], jnp.int32), inner.init(params))

    def update(updates, state, params=None):
        new_updates, new_inner = inner.update(updates, state.inner_state, params)
        frozen = state.count < steps
        keep = lambda old, new: jnp.where(frozen, old, new)
        updates = jax.tree.map(lambda u: jnp.where(frozen, jnp.zeros_like(u), u), new_updates)
        inner_state = jax.tree.map(keep, state.inner_state, new_inner)
        return updates, FrozenState(optax.safe_int32_increment(state.count), inner_state)

    return optax.GradientTransformation(init, update)


def frozen_groups(config: ml_collections.ConfigDict, known: list[str]) -> set[str]:
    """The groups `config.freeze_groups` names when `config.freeze_steps` > 0 (else none);
    a name that is not one of the method's groups (`known`) is a one-line ValueError."""
    if int(config.get("freeze_steps", 0) or 0) <= 0:
        return set()
    names = config.get("freeze_groups", ("backbone",))
    names = (names,) if isinstance(names, str) else tuple(names)
    # `--config.optim.freeze_groups=backbone,new` arrives as ('backbone,new',)
    names = [n.strip() for entry in names for n in entry.split(",") if n.strip()]
    bad = [n for n in names if n not in known]
    if bad:
        raise ValueError(
            f"config.optim.freeze_groups: {bad[0]!r} is not a parameter group of the method; "
            f"valid: {', '.join(known)}"
        )
    return set(names)


def make_schedule(
    config: ml_collections.ConfigDict, peak: float, total_steps: int, warmup_steps: int
) -> optax.Schedule:
    """Linear warmup from 0 to `peak`, then cosine to `peak * end_factor` at `total_steps`
    (or constant)."""
    if config.schedule not in SCHEDULES:
        raise ValueError(
            f"config.optim.schedule={config.schedule!r}; valid: {', '.join(SCHEDULES)}"
        )
    warmup_steps = min(int(warmup_steps), max(total_steps - 1, 0))
    if config.schedule == "constant":
        after = optax.constant_schedule(peak)
    else:
        after = optax.cosine_decay_schedule(
            peak, max(total_steps - warmup_steps, 1), alpha=config.get("end_factor", 0.0)
        )
    if warmup_steps > 0:
        warm = optax.linear_schedule(0.0, peak, warmup_steps)
        after = optax.join_schedules([warm, after], [warmup_steps])
    # The step count as a float: optax divides the int32 count in float32 even under x64, so
    # the float64 comparison with PyTorch (reference.recipe_parity) would see lr rounded to
    # 1e-7; in float32 (x64 off) the same numbers as before.
    return lambda count: after(jnp.asarray(count, jnp.result_type(float)))


def _group_optimizer(config: ml_collections.ConfigDict, wd_mask: Any) -> Callable:
    """Factory `(learning_rate) -> GradientTransformation` for one group (for injection)."""
    if config.name == "sgd":

        def factory(learning_rate):
            parts = []
            if config.weight_decay:
                parts.append(optax.add_decayed_weights(config.weight_decay, wd_mask))
            if config.momentum:
                parts.append(optax.trace(decay=config.momentum, nesterov=config.nesterov))
            parts.append(optax.scale_by_learning_rate(learning_rate))
            return optax.chain(*parts)
    elif config.name == "adamw":

        def factory(learning_rate):
            return optax.adamw(
                learning_rate,
                b1=config.b1,
                b2=config.b2,
                eps=config.eps,
                weight_decay=config.weight_decay,
                mask=wd_mask,
            )
    else:
        raise ValueError(f"config.optim.name={config.name!r}; valid: {', '.join(OPTIMIZERS)}")
    return factory


def create_optimizer(
    config: ml_collections.ConfigDict,
    params: Any,
    groups: Mapping[str, str],
    *,
    total_steps: int,
    steps_per_epoch: int,
) -> optax.GradientTransformation:
    """The run's optimizer: [freeze mask →] clip → per-group (decay, momentum/Adam,
    scheduled lr)."""
    labels = group_labels(params, groups)
    used = sorted(set(jax.tree.leaves(labels)))
    lrs = dict(config.lr)
    missing = [g for g in used if g not in lrs]
    if missing:
        raise ValueError(
            f"config.optim.lr has no learning rate for parameter group(s) {missing}; the "
            f"method's groups are {list(groups) + (['new'] if 'new' not in groups else [])}, "
            f"config.optim.lr has {sorted(lrs)}."
        )
    known = list(groups) + ([] if "new" in groups else ["new"])
    unknown = sorted(set(lrs) - set(known))
    if unknown:
        raise ValueError(
            f"config.optim.lr has learning rates for {unknown}, which match no "
            f"parameter group of the method (its groups: {', '.join(known)})."
        )
    warmup = lengths.steps("warmup", config, steps_per_epoch)
    wd_mask = regex_mask(params, config.wd_mask)
    factory = _group_optimizer(config, wd_mask)
    frozen = frozen_groups(config, known) & set(used)
    freeze = int(config.get("freeze_steps", 0) or 0)

    def frozen_factory(learning_rate):  # inside the injection: the schedule counts on
        return frozen_until(factory(learning_rate), freeze)

    transforms = {
        g: optax.inject_hyperparams(frozen_factory if g in frozen else factory)(
            learning_rate=make_schedule(config, float(lrs[g]), total_steps, warmup)
        )
        for g in used
    }
    parts = []
    if frozen:  # frozen groups pass no gradient on: the clipping norm leaves them out
        mask = jax.tree.map(lambda g: g in frozen, labels)
        parts.append(optax.masked(frozen_until(optax.identity(), freeze), mask))
    if config.clip_norm and config.clip_norm > 0:
        parts.append(clip_by_global_norm(config.clip_norm))
    parts.append(optax.multi_transform(transforms, labels))
    return optax.chain(*parts)


#: What `torch.nn.utils.clip_grad_norm_` adds to the norm before dividing by it.
TORCH_CLIP_EPS = 1e-6


def clip_by_global_norm(max_norm: float) -> optax.GradientTransformation:
    """Gradient clipping as `torch.nn.utils.clip_grad_norm_` (what the papers' code calls):
    every gradient times min(1, max_norm / (‖g‖ + 1e-6)), ‖g‖ over all parameters. optax's
    `clip_by_global_norm` divides by ‖g‖ alone, a relative 1e-6 / ‖g‖ apart on every clipped
    step (1e-8 after 30 steps of SwinFC's recipe in float64). Stateless (optax's state too)."""

    def update(updates, state, params=None):
        del params
        coef = jnp.minimum(max_norm / (optax.global_norm(updates) + TORCH_CLIP_EPS), 1.0)
        return jax.tree.map(lambda g: (g * coef).astype(g.dtype), updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def learning_rates(opt_state: Any) -> dict[str, jax.Array]:
    """The learning rate each group used in its latest update ({group: lr})."""
    found = {}

    def visit(node):
        if isinstance(node, optax.MultiTransformState):
            for group, inner in node.inner_states.items():
                s = inner.inner_state if isinstance(inner, optax.MaskedState) else inner
                found[group] = s.hyperparams["learning_rate"]
        elif isinstance(node, (tuple, list)):
            for child in node:
                visit(child)

    visit(opt_state)
    return found


def accumulate_gradients(
    grad_fn: Callable,
    params: Any,
    carry: Any,
    batch: dict,
    accumulate: int,
    split: Callable | None = None,
):
    """Mean gradient over `accumulate` micro-batches of `batch`, computed in a `lax.scan`.

    `grad_fn(params, carry, micro_batch, index) -> ((loss, (aux, carry)), grads)` (the
    value_and_grad of the loss with has_aux); `carry` threads state such as BatchNorm
    statistics through the micro-batches. Micro-batch i holds rows i, i+k, i+2k, ... so that
    each device keeps an equal share under batch sharding; `split` (optional) re-applies a
    sharding constraint to the (k, B/k, ...) arrays. Returns ((loss, aux), carry, grads) with
    loss, aux and grads averaged over the micro-batches.
    """
    k = int(accumulate)
    if k <= 1:
        (loss, (aux, carry)), grads = grad_fn(params, carry, batch, 0)
        return (loss, aux), carry, grads

    def to_micro(x):
        if x.shape[0] % k:
            raise ValueError(
                f"batch size {x.shape[0]} is not divisible by config.optim.accumulate={k}"
            )
        x = x.reshape((x.shape[0] // k, k) + x.shape[1:])
        return jnp.swapaxes(x, 0, 1)

    micro = jax.tree.map(to_micro, batch)
    if split is not None:
        micro = split(micro)

    def body(acc, xs):
        carry, loss_sum, aux_sum, grad_sum = acc
        i, mb = xs
        (loss, (aux, carry)), grads = grad_fn(params, carry, mb, i)
        add = lambda a, b: jax.tree.map(jnp.add, a, b)
        return (carry, loss_sum + loss, add(aux_sum, aux), add(grad_sum, grads)), None

    # Shapes of one micro step, to start the sums at zero.
    first = jax.tree.map(lambda x: x[0], micro)
    (loss0, (aux0, _)), grads0 = jax.eval_shape(grad_fn, params, carry, first, 0)
    zeros = lambda t: jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), t)
    init = (carry, jnp.zeros(loss0.shape, loss0.dtype), zeros(aux0), zeros(grads0))
    (carry, loss, aux, grads), _ = jax.lax.scan(body, init, (jnp.arange(k), micro))
    mean = lambda t: jax.tree.map(lambda x: x / k, t)
    return (loss / k, mean(aux)), carry, mean(grads)
