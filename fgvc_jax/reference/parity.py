"""Run a method and its PyTorch twin with the same weights on the same batch and measure the
difference of every stage, head, the combined prediction, auxiliary output, loss term, the
gradients and the updated BN statistics.

Each row: max |ref| (the twin, float32), max |ours − ref| and the relative difference
(max abs diff / max |ref|). Gradients per parameter group (the method's `param_groups`):
their norm and, element-wise, the whole group."""
from __future__ import annotations

import dataclasses
import re

import flax.traverse_util
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from fgvc_jax.methods import registry


@dataclasses.dataclass
class Row:
    name: str
    ref_max: float
    abs_diff: float
    where: str = ""  # for a group of tensors: the one with the largest difference

    @property
    def rel(self) -> float:
        return self.abs_diff / self.ref_max if self.ref_max > 0 else self.abs_diff


def row(name, ours, ref) -> Row:
    ours = np.asarray(ours, np.float64)
    ref = np.asarray(ref, np.float64)
    if ours.shape != ref.shape:
        raise ValueError(f"{name}: shape {ours.shape} (flax) vs {ref.shape} (PyTorch twin)")
    return Row(name, float(np.max(np.abs(ref))), float(np.max(np.abs(ours - ref))))


def randomized(variables: dict, seed: int) -> dict:
    """Non-trivial norm parameters, biases and BN statistics (fresh ones make eval-mode BN
    nearly the identity and every bias zero, which would hide a misplaced one)."""
    rng = np.random.default_rng(seed)
    flat = flax.traverse_util.flatten_dict(jax.device_get(variables))
    out = {}
    for path, v in flat.items():
        v = np.asarray(v)
        if path[-1] in ("scale", "var"):
            v = rng.uniform(0.5, 1.5, v.shape)
        elif path[-1] in ("bias", "mean"):
            v = rng.normal(0.0, 0.1, v.shape)
        out[path] = jnp.asarray(v, jnp.float32)
    return flax.traverse_util.unflatten_dict(out)


def _capture(module, method_name) -> bool:
    return ((module.name == "backbone" and method_name in ("stem", "embed", "stage"))
            or (module.name == "attention" and method_name == "__call__"))


def _jax_stages(intermediates: dict) -> list:
    if "backbone" in intermediates:
        bb = intermediates["backbone"]
        first = bb.get("stem", bb.get("embed", ()))
        outs = list(first) + list(bb.get("stage", ()))
        return [o[0] if isinstance(o, tuple) else o for o in outs]
    return list(intermediates["attention"]["__call__"])


def _group_of(path: str, groups: dict) -> str:
    for name, pattern in groups.items():
        if re.search(pattern, path):
            return name
    return "new"


def run(config: ml_collections.ConfigDict, num_classes: int, *, train: bool,
        dtype=jnp.float32, batch: int = 2, seed: int = 0,
        twin_overrides: dict | None = None) -> tuple[list[Row], list[str]]:
    """Rows for `config` (a `config.method`), and notes on what was switched off to match.
    `twin_overrides`: fields set on the twin's config only (to show that a difference
    between the two is detected)."""
    import torch

    from fgvc_jax.reference import registry as twins
    from fgvc_jax.reference import weights

    config = ml_collections.ConfigDict(config.to_dict())
    notes = []
    if train and config.get("dropout", 0.0):
        notes.append(f"dropout {config.dropout} → 0 on both sides (masks cannot be matched)")
        config.dropout = 0.0
    if train and config.get("drop_path_rate", 0.0):
        notes.append(f"drop_path_rate {config.drop_path_rate} → 0 on both sides")
        config.drop_path_rate = 0.0
    method = registry.create(config, num_classes, dtype)
    size = config.image_size
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((batch, size, size, 3)).astype(np.float32)
    labels = np.asarray([0, 0] + list(range(1, batch - 1)))[:batch] % num_classes
    if batch == 2:
        labels = np.asarray([0, 1 % num_classes])

    key = jax.random.key(seed)
    variables = jax.jit(lambda: method.network.init(
        {"params": key, "dropout": key}, jnp.zeros((2, size, size, 3)), train=True))()
    variables = randomized({k: v for k, v in variables.items()
                            if k in ("params", "batch_stats")}, seed)
    twin_config = ml_collections.ConfigDict(config.to_dict())
    twin_config.update(twin_overrides or {})
    twin = twins.build(twin_config, num_classes)
    weights.jax_to_torch(variables, twin)

    # flax side
    mutable = ["metrics", "intermediates"] + (["batch_stats"] if train else [])

    def loss_fn(params, batch_stats, x, y):
        v = {"params": params, **({"batch_stats": batch_stats} if batch_stats else {})}
        out, state = method.network.apply(v, x, train=train, mutable=mutable,
                                          capture_intermediates=_capture,
                                          rngs={"dropout": key})
        total, terms = method.loss(out, y)
        return total, (out, terms, state)

    fn = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))
    (total, (out, terms, state)), grads = fn(variables["params"],
                                             variables.get("batch_stats", {}),
                                             jnp.asarray(images), jnp.asarray(labels))
    scores = jax.device_get(method.scores(out))

    # PyTorch side (float32)
    twin.train(train)
    x = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
    y = torch.from_numpy(labels).long()
    t_logits, t_aux = twin(x)
    t_total, t_terms = twin.loss(t_logits, t_aux, y)
    t_total.backward()
    det = lambda t: t.detach().cpu().numpy()

    rows = []
    names = list(twin.stages)
    for name, ours in zip(names, _jax_stages(state["intermediates"])):
        rows.append(row(f"stage {name}", ours, det(twin.stages[name])))
    for k, v in t_logits.items():
        rows.append(row(f"logits {k}", scores[k], det(v)))
    rows.append(row("combined prediction", scores["combined"], det(twin.predict(t_logits))))
    for k in ("smram", "fsm"):
        if k in t_aux or k in out.aux:
            rows.append(row(f"aux {k}", out.aux[k], det(t_aux[k])))
    counts = getattr(twin, "suppressed", {})
    metrics = jax.device_get(state.get("metrics", {}))
    for name, count in counts.items():
        ours = jax.tree.leaves(metrics[name])[0] if name in metrics else 0.0  # no suppression
        rows.append(row(f"suppressed channels {name}", ours, det(count)))
    for k, v in t_terms.items():
        rows.append(row(f"loss {k}", terms[k], det(v)))
    rows.append(row("loss total", total, det(t_total)))

    # gradients per parameter group, and the updated BN statistics
    flat_vars = flax.traverse_util.flatten_dict(variables)
    keymap = weights.pairs(twin, flat_vars)
    flat_grads = flax.traverse_util.flatten_dict(jax.device_get(grads))
    groups = method.param_groups()
    ours_g, ref_g = {}, {}
    for key_, p in twin.named_parameters():
        path = keymap[key_]
        group = _group_of("/".join(path[1:]), groups)
        ref = weights.to_jax(det(p.grad) if p.grad is not None else np.zeros(tuple(p.shape),
                             np.float32), flat_grads[path[1:]].shape,
                             twin.flatten_inputs.get(key_), key_.endswith(".weight"))
        ours_g.setdefault(group, {})["/".join(path[1:])] = np.ravel(flat_grads[path[1:]])
        ref_g.setdefault(group, {})["/".join(path[1:])] = np.ravel(ref)
    for group in ours_g:
        o, r = np.concatenate(list(ours_g[group].values())), np.concatenate(
            list(ref_g[group].values()))
        rows.append(row(f"grad norm [{group}]", np.linalg.norm(o), np.linalg.norm(r)))
        rows.append(row(f"grad [{group}]", o, r))
        rows[-1].where = max(ours_g[group], key=lambda k: np.max(np.abs(
            ours_g[group][k] - ref_g[group][k])))
    if train and "batch_stats" in state:
        new = flax.traverse_util.flatten_dict(jax.device_get(state["batch_stats"]))
        sd = twin.state_dict()
        o, r = [], []
        for key_, path in keymap.items():
            if path[0] == "batch_stats":
                o.append(np.ravel(new[path[1:]]))
                r.append(np.ravel(det(sd[key_])))
        rows.append(row("updated batch_stats", np.concatenate(o), np.concatenate(r)))
    return rows, notes


def table(rows: list[Row]) -> str:
    lines = [f"{'output':<34} {'max |ref|':>11} {'max abs diff':>13} {'relative':>10}"]
    lines += [f"{r.name:<34} {r.ref_max:>11.4g} {r.abs_diff:>13.3g} {r.rel:>10.2e}"
              + (f"  (largest at {r.where})" if r.where else "") for r in rows]
    return "\n".join(lines)
