"""Run a method and its PyTorch twin with the same weights on the same batch and measure the
difference of every stage, head, the combined prediction, auxiliary output, loss term, the
gradients and the updated BN statistics.

Each row: max |ref| (the twin), max |ours − ref| and the relative difference
(max abs diff / max |ref|). Gradients per parameter group (the method's `param_groups`):
their norm and, element-wise, the whole group.

`dtype` is ours (float32, bfloat16 or float64), `twin_dtype` the twin's (float32 or float64).
Both float64 (the same float32-valued weights and batch, so
nothing but the arithmetic changes): the check that the two compute the same function. In
float32 it is not: in training mode the ResNet methods' gradients are ill-conditioned, and
PyTorch's own float32 gradients differ from its float64 ones by ~1e-2 relative (ResNet-18,
128 px, batch 16; ours by ~1e-3), so no float32 implementation can match another to 1e-5
there."""

from __future__ import annotations

import dataclasses
import re

import flax.traverse_util
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from fgvc_jax.methods import registry
from fgvc_jax.reference import registry as twins
from fgvc_jax.reference import weights


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
    return (module.name == "backbone" and method_name in ("stem", "embed", "stage")) or (
        module.name == "attention" and method_name == "__call__"
    )


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


class Pair:
    """A method and its twin, built (and our step compiled) once: `outputs(seed, twin_dtype)`
    runs both on the weights and batch of `seed` and returns every compared quantity of each
    side, {row name: array, or {parameter path: array} for a gradient group}.

    `dtype` is our compute dtype (float32, bfloat16 or float64); `twin_dtype` the twin's
    ('float32' or 'float64'). The weights and the batch are float32 values on both sides
    whatever the dtypes, so only the arithmetic differs. `twin_overrides`: fields set on the
    twin's config only (to show that a difference between the two is detected)."""

    def __init__(
        self,
        config: ml_collections.ConfigDict,
        num_classes: int,
        *,
        train: bool,
        dtype=jnp.float32,
        batch: int = 2,
        twin_overrides: dict | None = None,
    ):
        self.x64 = jnp.dtype(dtype) == jnp.float64
        config = ml_collections.ConfigDict(config.to_dict())
        self.notes = []
        if train and config.get("dropout", 0.0):
            self.notes.append(
                f"dropout {config.dropout} → 0 on both sides (masks cannot be matched)"
            )
            config.dropout = 0.0
        if train and config.get("drop_path_rate", 0.0):
            self.notes.append(f"drop_path_rate {config.drop_path_rate} → 0 on both sides")
            config.drop_path_rate = 0.0
        self.config, self.num_classes, self.train, self.batch = config, num_classes, train, batch
        self.dtype = dtype
        self.method = registry.create(config, num_classes, dtype)
        twin_config = ml_collections.ConfigDict(config.to_dict())
        twin_config.update(twin_overrides or {})
        self.twin = twins.build(twin_config, num_classes)
        size, network = config.image_size, self.method.network
        self._init = jax.jit(
            lambda key: network.init(
                {"params": key, "dropout": key},
                jnp.zeros((2, size, size, 3), jnp.float32),
                train=True,
                mutable=["params", "batch_stats"],  # nothing of the forward: compiles faster
            )
        )
        mutable = ["metrics", "intermediates"] + (["batch_stats"] if train else [])

        def loss_fn(params, batch_stats, x, y, key):
            v = {"params": params, **({"batch_stats": batch_stats} if batch_stats else {})}
            out, state = network.apply(
                v,
                x,
                train=train,
                mutable=mutable,
                capture_intermediates=_capture,
                rngs={"dropout": key},
            )
            total, terms = self.method.loss(out, y)
            return total, (out, terms, state)

        self._step = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))

    def batch_of(self, seed: int):
        rng = np.random.default_rng(seed)
        size, batch, k = self.config.image_size, self.batch, self.num_classes
        images = rng.standard_normal((batch, size, size, 3)).astype(np.float32)
        labels = np.asarray([0, 0] + list(range(1, batch - 1)))[:batch] % k
        return images, (np.asarray([0, 1 % k]) if batch == 2 else labels)

    def outputs(self, seed: int = 0, twin_dtype: str = "float32") -> tuple[dict, dict]:
        """(ours, twin's) for the weights and batch of `seed`."""
        if twin_dtype not in ("float32", "float64"):
            raise ValueError(f"twin_dtype={twin_dtype!r}; expected 'float32' or 'float64'")
        with jax.enable_x64(self.x64):
            variables = self.variables(seed)
            images, labels = self.batch_of(seed)
            twin = self._twins(variables, images, labels, twin_dtype)
            return self._ours(variables, images, labels, seed, list(twin)), twin

    def variables(self, seed: int) -> dict:
        variables = self._init(jax.random.key(seed))
        return randomized(
            {k: v for k, v in variables.items() if k in ("params", "batch_stats")}, seed
        )

    def _ours(self, variables, images, labels, seed, names) -> dict:
        """Ours, with the twin's row `names` (its stages and suppression counts)."""
        method = self.method
        acc = jnp.promote_types(self.dtype, jnp.float32)
        v = jax.tree.map(lambda a: jnp.asarray(a, acc), variables)
        (total, (out, terms, state)), grads = self._step(
            v["params"],
            v.get("batch_stats", {}),
            jnp.asarray(images, acc),
            jnp.asarray(labels),
            jax.random.key(seed),
        )
        out, terms, state, grads = jax.device_get((out, terms, state, grads))
        scores = jax.device_get(method.scores(out))
        got = dict(
            zip([n for n in names if n.startswith("stage ")], _jax_stages(state["intermediates"]))
        )
        got.update({f"logits {k}": scores[k] for k in out.logits})
        got["combined prediction"] = scores["combined"]
        got.update({f"aux {k}": out.aux[k] for k in ("smram", "fsm") if k in out.aux})
        metrics = state.get("metrics", {})
        for row_name in [n for n in names if n.startswith("suppressed channels ")]:
            name = row_name.split()[-1]
            got[row_name] = jax.tree.leaves(metrics[name])[0] if name in metrics else 0.0
        got.update({f"loss {k}": x for k, x in terms.items()})
        got["loss total"] = total
        flat_grads = flax.traverse_util.flatten_dict(grads)
        groups = method.param_groups()
        for path in self._param_paths(variables):
            group = _group_of("/".join(path[1:]), groups)
            got.setdefault(f"grad [{group}]", {})["/".join(path[1:])] = flat_grads[path[1:]]
        if self.train and "batch_stats" in state:
            new = flax.traverse_util.flatten_dict(state["batch_stats"])
            got["updated batch_stats"] = {
                "/".join(path[1:]): new[path[1:]] for path in self._stat_paths(variables)
            }
        return got

    def _twins(self, variables, images, labels, twin_dtype) -> dict:
        import torch

        twin = self.twin.to(getattr(torch, twin_dtype))
        weights.jax_to_torch(variables, twin)
        twin.zero_grad(set_to_none=True)
        twin.train(self.train)
        x = torch.from_numpy(images.transpose(0, 3, 1, 2).astype(twin_dtype))
        logits, aux = twin(x)
        total, terms = twin.loss(logits, aux, torch.from_numpy(labels).long())
        total.backward()
        det = lambda t: t.detach().cpu().numpy()
        got = {f"stage {name}": det(x) for name, x in twin.stages.items()}
        got.update({f"logits {k}": det(x) for k, x in logits.items()})
        got["combined prediction"] = det(twin.predict(logits))
        got.update({f"aux {k}": det(aux[k]) for k in ("smram", "fsm") if k in aux})
        got.update(
            {
                f"suppressed channels {name}": det(c)
                for name, c in getattr(twin, "suppressed", {}).items()
            }
        )
        got.update({f"loss {k}": det(x) for k, x in terms.items()})
        got["loss total"] = det(total)
        flat = flax.traverse_util.flatten_dict(variables)
        keymap = weights.pairs(twin, flat)
        groups = self.method.param_groups()
        for key, p in twin.named_parameters():
            path = keymap[key]
            grad = det(p.grad) if p.grad is not None else np.zeros(tuple(p.shape))
            got.setdefault(f"grad [{_group_of('/'.join(path[1:]), groups)}]", {})[
                "/".join(path[1:])
            ] = weights.to_jax(
                grad, flat[path].shape, twin.flatten_inputs.get(key), key.endswith(".weight")
            )
        if self.train and "batch_stats" in variables:
            sd = twin.state_dict()
            got["updated batch_stats"] = {
                "/".join(path[1:]): det(sd[key])
                for key, path in keymap.items()
                if path[0] == "batch_stats"
            }
        return got

    def _param_paths(self, variables) -> list:
        keymap = weights.pairs(self.twin, flax.traverse_util.flatten_dict(variables))
        return [keymap[k] for k, _ in self.twin.named_parameters()]

    def _stat_paths(self, variables) -> list:
        keymap = weights.pairs(self.twin, flax.traverse_util.flatten_dict(variables))
        return [path for path in keymap.values() if path[0] == "batch_stats"]


def compare(ours: dict, ref: dict) -> list[Row]:
    """Rows of `ours` against `ref` (two `Pair.outputs` dicts, in `ref`'s order); a gradient
    group also gives the difference of its norm, and names its worst parameter."""
    rows = []
    for name, r in ref.items():
        o = ours[name]
        if not isinstance(r, dict):
            rows.append(row(name, o, r))
            continue
        cat = lambda d: np.concatenate([np.ravel(np.asarray(d[k], np.float64)) for k in r])
        if name.startswith("grad "):
            rows.append(
                row(f"grad norm {name[5:]}", np.linalg.norm(cat(o)), np.linalg.norm(cat(r)))
            )
        rows.append(row(name, cat(o), cat(r)))
        rows[-1].where = max(r, key=lambda k: np.max(np.abs(np.asarray(o[k], np.float64) - r[k])))
    return rows


def run(
    config: ml_collections.ConfigDict,
    num_classes: int,
    *,
    train: bool,
    dtype=jnp.float32,
    twin_dtype: str = "float32",
    batch: int = 2,
    seed: int = 0,
    twin_overrides: dict | None = None,
) -> tuple[list[Row], list[str]]:
    """Rows of ours against the twin for `config` (a `config.method`), and notes on what was
    switched off to match (see `Pair`)."""
    pair = Pair(
        config, num_classes, train=train, dtype=dtype, batch=batch, twin_overrides=twin_overrides
    )
    ours, twin = pair.outputs(seed, twin_dtype)
    return compare(ours, twin), pair.notes


def table(rows: list[Row], columns: dict[str, list[Row]] | None = None) -> str:
    """`rows` as max |ref|, max abs diff, relative; `columns` adds the relative difference of
    other comparisons of the same rows, one column each."""
    columns = columns or {}
    lines = [
        f"{'output':<34} {'max |ref|':>11} {'max abs diff':>13} {'relative':>10}"
        + "".join(f" {name:>19}" for name in columns)
    ]
    for i, r in enumerate(rows):
        lines.append(
            f"{r.name:<34} {r.ref_max:>11.4g} {r.abs_diff:>13.3g} {r.rel:>10.2e}"
            + "".join(f" {col[i].rel:>19.2e}" for col in columns.values())
            + (f"  (largest at {r.where})" if r.where else "")
        )
    return "\n".join(lines)
