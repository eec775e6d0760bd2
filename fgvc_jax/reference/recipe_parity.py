"""A method's whole training recipe for N steps, ours against PyTorch's: the same config, the
same initial weights (our init copied to the twin), the same host batches in the same order.

Ours is what the trainer runs: `Recipe(config, K)`'s optimizer (`recipe.optim`: parameter
groups, SGD or AdamW, weight-decay mask, warm-up + cosine, global clipping) and its jitted
train step (`loop.step`: micro-batch accumulation, BatchNorm statistics, EMA of the weights).
PyTorch's side is the method's twin (`reference/<method>.py`) trained with PyTorch's own
components, not transcriptions of ours:

- `torch.optim.SGD` (momentum, Nesterov, weight decay added to the gradient) or
  `torch.optim.AdamW` (decoupled decay), one param group per `Method.param_groups` entry with
  its peak learning rate; a group's parameters are found by matching the group regexes
  against our parameter path of each twin parameter (`reference.weights.pairs`).
- Weight decay from the twin's own modules, not from our regex: `config.optim.wd_mask` '.*'
  decays every parameter; `NO_NORM_NO_BIAS` ('kernel$': our conv/dense kernels) decays the
  `weight` of every `torch.nn` convolution and `Linear` only (no norm weight, no bias, no
  free parameter such as Swin's relative position bias table), by module type; any other
  mask is refused. A mask of ours that selects other parameters therefore shows.
- The schedule through `torch.optim.lr_scheduler`: `LambdaLR(s / w)` for the linear warm-up
  from 0 (`LinearLR` cannot start at 0: its start_factor must be > 0, and our first update
  has lr 0), then `CosineAnnealingLR(T_max=T − w, eta_min=end_factor · peak)` in a
  `SequentialLR` with the milestone w ('constant': `LambdaLR(min(s / w, 1))`). Ours
  (`optim.make_schedule`) is optax's linear schedule 0 → peak over w steps joined with its
  cosine decay over T − w steps, evaluated at the optimizer's update count s (0 for the first
  update): lr(s) = peak · s / w for s < w, then end + (peak − end) · (1 + cos(π (s − w) /
  (T − w))) / 2. PyTorch's optimizer uses the group's lr set after s `scheduler.step()`
  calls, LambdaLR's base · λ(s) and CosineAnnealingLR's (recursive) form of the same cosine
  from base at s = w: the same numbers to rounding. T is the config's run length
  (`Recipe.num_steps`; an epoch is the comparison's N batches), w its warm-up.
- `torch.nn.utils.clip_grad_norm_` over all parameters (when `optim.clip_norm` > 0): each
  gradient times min(1, max_norm / (norm + 1e-6)), as ours (`optim.clip_by_global_norm`).
- The loss: the twin's (`torch.nn.functional.cross_entropy`, with the method's
  `label_smoothing`).
- `optim.accumulate` = k: micro-batch j holds rows j, j + k, ... of the batch (our split),
  each loss / k backpropagated, then one `step()`; BatchNorm sees the micro-batches in turn.
- EMA (`train.ema_decay` > 0): `torch.optim.swa_utils.AveragedModel` with
  `get_ema_multi_avg_fn(decay)`, updated once before training (it copies the weights: ours
  starts at them too) and after every step.
- BatchNorm momentum: each twin module's own (the method's config sets the twin's as ours).

The batches: uint8 images and labels drawn once on the host (seeded), the same ones fed to
both; each side normalises them in its compute dtype (ours: `data.preprocess.normalize`).
`augment='off'`: images at the crop, our step does no augmentation (`data.cache='none'`: it
takes ready-cropped batches); `augment='host'`: S×S images (S = crop + crop/8) with a random
crop and flip per example drawn on the host, the crops fed to both. Dropout and stochastic
depth are switched off on both sides (their masks cannot be matched; `notes` says so).

PyTorch against itself (`self_check`, float64): its run again from weights a few roundings
apart (`SELF_PERTURBATION`). Where the recipe amplifies rounding errors (thresholds, high
learning rates on batches of 4) PyTorch parts from itself within N steps, and no
implementation can agree with it to 1e-9 after N; `horizon` is the last step where it still
agrees with itself, and both sides run again for that many steps (`Result.at_horizon`).

Rows (the relative difference: max |ours − PyTorch| / max |PyTorch|, `parity.Row`): every
parameter group after N steps, the BatchNorm running mean and variance, the EMA weights per
group, and each group's learning rate over all steps. The loss of every step is printed
beside them (float64 in a float64 run).
"""

from __future__ import annotations

import dataclasses
import re

import flax.traverse_util
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from fgvc_jax import recipe as recipe_lib
from fgvc_jax.methods import registry
from fgvc_jax.recipe import lengths
from fgvc_jax.reference import parity, weights
from fgvc_jax.reference import registry as twins
from fgvc_jax.runtime import parallel

#: `config.optim.wd_mask` values PyTorch's side knows: every parameter, or convolution and
#: linear weights only (no norm weights, no biases).
DECAY_ALL = ".*"
NO_NORM_NO_BIAS = "kernel$"
AUGMENTS = ("off", "host")
#: PyTorch's own sensitivity to rounding: its float64 run from weights times (1 + 1e-15 ·
#: N(0, 1)), a few float64 ulps (2^-52 = 2.2e-16), against its unperturbed run.
SELF_PERTURBATION = 1e-15
PERTURBED = "float64, weights ±1e-15"


@dataclasses.dataclass
class Trace:
    """One side's run: per step the loss and each group's learning rate; at the end the
    parameters, the BN statistics and the EMA weights, in our layout
    ({row name: {parameter path: array}})."""

    losses: list[float]
    lrs: dict[str, list[float]]
    final: dict[str, dict[str, np.ndarray]]


def _group_of(path: str, groups: dict) -> str:
    return next((name for name, rx in groups.items() if re.search(rx, path)), "new")


def prepare(config: ml_collections.ConfigDict, augment: str = "off"):
    """(config both sides run, notes): dropout and stochastic depth off, our step fed
    ready-made batches (`data.cache='none'`)."""
    if augment not in AUGMENTS:
        raise ValueError(f"augment={augment!r}; valid: {', '.join(AUGMENTS)}")
    config = ml_collections.ConfigDict(config.to_dict())
    notes = []
    for field in ("dropout", "drop_path_rate"):
        if config.method.get(field, 0.0):
            notes.append(f"{field} {config.method[field]} → 0 on both sides")
            config.method[field] = 0.0
    config.data.cache = "none"
    return config, notes


def host_batches(config, steps: int, batch: int, num_classes: int, seed: int, augment: str):
    """`steps` batches {'image': (B, C, C, 3) uint8, 'label': (B,) int32}, drawn on the host."""
    rng = np.random.default_rng(seed)
    c = int(config.data.crop)
    s = c + c // 8 if augment == "host" else c
    out = []
    for _ in range(steps):
        images = rng.integers(0, 256, (batch, s, s, 3), dtype=np.uint8)
        labels = rng.integers(0, num_classes, (batch,)).astype(np.int32)
        if augment == "host":
            ys, xs = rng.integers(0, s - c + 1, (2, batch))
            flips = rng.random(batch) < 0.5
            images = np.stack(
                [
                    im[y : y + c, x : x + c][:, ::-1] if f else im[y : y + c, x : x + c]
                    for im, y, x, f in zip(images, ys, xs, flips)
                ]
            )
        out.append({"image": np.ascontiguousarray(images), "label": labels})
    return out


def normalized(images: np.ndarray, method, dtype: str) -> np.ndarray:
    """uint8 NHWC → (x/255 − mean)/std computed in `dtype`, as `data.preprocess.normalize`
    (float32, or float64 in a float64 step)."""
    x = images.astype(dtype) / 255.0
    return (x - np.asarray(method.mean, dtype)) / np.asarray(method.std, dtype)


def _final(params, batch_stats, ema, groups) -> dict:
    flat = lambda t: {
        "/".join(k): np.asarray(v) for k, v in flax.traverse_util.flatten_dict(t).items()
    }
    p = flat(params)
    out = {}
    for path in p:
        g = _group_of(path, groups)
        out.setdefault(f"params [{g}]", {})[path] = p[path]
    for path, v in flat(batch_stats).items():
        out.setdefault(f"bn running {path.rsplit('/', 1)[-1]}", {})[path] = v
    for path, v in flat(ema).items():
        out.setdefault(f"ema [{_group_of(path, groups)}]", {})[path] = v
    return out


def run_ours(
    config, num_classes: int, variables: dict, batches: list, steps_per_epoch: int, x64: bool
):
    """Our recipe's optimizer and jitted train step over `batches` → Trace."""
    with jax.enable_x64(x64):
        recipe = recipe_lib.Recipe(config, num_classes)
        if x64:  # the same network computing in float64 (configs offer float32/bfloat16)
            recipe.method = registry.create(config.method, num_classes, jnp.float64)
        dtype = jnp.float64 if x64 else jnp.float32
        variables = jax.tree.map(lambda a: jnp.asarray(a, dtype), variables)
        mesh = parallel.make_mesh()
        tx = recipe.optimizer(steps_per_epoch)
        state = recipe.create_state(tx, variables, mesh)
        step = recipe.train_step(tx, mesh)
        losses, lrs = [], {}
        for b in batches:
            state, metrics = step(state, parallel.host_to_global(b, mesh))
            metrics = jax.device_get(metrics)
            losses.append(float(metrics["loss"]))
            for k, v in metrics.items():
                if k.startswith("lr/"):
                    lrs.setdefault(k[3:], []).append(float(v))
        state = jax.device_get(state)
        groups = recipe.method.param_groups()
        final = _final(state.params, state.batch_stats, state.ema_params, groups)
        return Trace(losses, lrs, final)


def _decays(twin, policy: str) -> set[str]:
    """Names of the twin's parameters that get weight decay, from its own modules."""
    import torch

    names = [k for k, _ in twin.named_parameters()]
    if policy == DECAY_ALL:
        return set(names)
    if policy == NO_NORM_NO_BIAS:
        kinds = (torch.nn.modules.conv._ConvNd, torch.nn.Linear)
        return {
            f"{m}.weight" if m else "weight"
            for m, module in twin.named_modules()
            if isinstance(module, kinds) and getattr(module, "weight", None) is not None
        }
    raise ValueError(
        f"config.optim.wd_mask={policy!r}: the PyTorch side knows {DECAY_ALL!r} (every "
        f"parameter) and {NO_NORM_NO_BIAS!r} (convolution and linear weights only)"
    )


def _scheduler(opt, config, total: int, warmup: int):
    """The warm-up + cosine (or constant) schedule of `config.optim` in torch's classes."""
    from torch.optim import lr_scheduler as S

    if warmup >= total:
        raise ValueError(f"warm-up {warmup} steps is not shorter than the run ({total} steps)")
    peaks = {g["lr"] for g in opt.param_groups}
    end = float(config.get("end_factor", 0.0))
    if config.schedule == "constant":
        return S.LambdaLR(opt, lambda s: min(s / warmup, 1.0)) if warmup else None
    if end and len(peaks) > 1:
        raise ValueError("end_factor > 0 with several peak lrs: CosineAnnealingLR has one eta_min")
    cosine = S.CosineAnnealingLR(opt, T_max=total - warmup, eta_min=end * max(peaks))
    if not warmup:
        return cosine
    warm = S.LambdaLR(opt, lambda s: s / warmup)
    return S.SequentialLR(opt, [warm, cosine], milestones=[warmup])


def run_theirs(
    config,
    num_classes: int,
    variables: dict,
    batches: list,
    steps_per_epoch: int,
    dtype: str,
    perturb: float = 0.0,
):
    """The twin trained with PyTorch's components over `batches` → Trace (see the module).
    `perturb` > 0: every parameter times (1 + perturb · N(0, 1)) after loading (seeded),
    PyTorch's own run from weights a rounding error apart (`SELF_PERTURBATION`)."""
    import torch

    o = config.optim
    method = registry.create(config.method, num_classes)
    groups = method.param_groups()
    twin = twins.build(config.method, num_classes).to(getattr(torch, dtype))
    weights.jax_to_torch(variables, twin)
    if perturb:
        noise = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in twin.parameters():
                p.mul_(1 + perturb * torch.randn(p.shape, generator=noise, dtype=p.dtype))
    twin.train(True)
    flat = flax.traverse_util.flatten_dict(variables)
    keymap = weights.pairs(twin, flat)
    path_of = {k: "/".join(keymap[k][1:]) for k, _ in twin.named_parameters()}
    decay = _decays(twin, o.wd_mask)
    torch_groups = {}
    for key, p in twin.named_parameters():
        g = _group_of(path_of[key], groups)
        wd = float(o.weight_decay) if key in decay else 0.0
        torch_groups.setdefault((g, wd), []).append(p)
    lr = dict(o.lr)
    param_groups = [
        {"params": ps, "lr": float(lr[g]), "weight_decay": wd, "name": g}
        for (g, wd), ps in torch_groups.items()
    ]
    if o.name == "sgd":
        opt = torch.optim.SGD(param_groups, lr=0.0, momentum=o.momentum, nesterov=o.nesterov)
    elif o.name == "adamw":
        opt = torch.optim.AdamW(param_groups, lr=0.0, betas=(o.b1, o.b2), eps=o.eps)
    else:
        raise ValueError(f"config.optim.name={o.name!r}")
    total = max(recipe_lib.Recipe(config, num_classes).num_steps(steps_per_epoch), 1)
    if len(batches) > total:
        raise ValueError(f"{len(batches)} steps is longer than the config's run ({total} steps)")
    sched = _scheduler(opt, o, total, lengths.steps("warmup", o, steps_per_epoch))
    ema = None
    if recipe_lib.ema_decay(config) > 0:
        ema = torch.optim.swa_utils.AveragedModel(
            twin,
            multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(recipe_lib.ema_decay(config)),
        )
        ema.update_parameters(twin)
    k = int(o.accumulate)
    losses, lrs = [], {}
    for b in batches:
        x = torch.from_numpy(normalized(b["image"], method, dtype).transpose(0, 3, 1, 2))
        x, y = x.to(getattr(torch, dtype)), torch.from_numpy(b["label"]).long()
        opt.zero_grad(set_to_none=True)
        loss_sum = 0.0
        for j in range(k):
            logits, aux = twin(x[j::k])
            loss, _ = twin.loss(logits, aux, y[j::k])
            (loss / k).backward()
            loss_sum += loss.item()
        losses.append(loss_sum / k)
        for g in opt.param_groups:  # the lr of this update (a group's are all equal)
            lrs.setdefault(g["name"], {})[len(losses)] = float(g["lr"])
        if o.clip_norm and o.clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(twin.parameters(), o.clip_norm)
        opt.step()
        if sched is not None:
            sched.step()
        if ema is not None:
            ema.update_parameters(twin)

    def ours_layout(key, value):
        return weights.to_jax(
            value.detach().cpu().numpy(),
            flat[keymap[key]].shape,
            twin.flatten_inputs.get(key),
            key.endswith(".weight"),
        )

    params = {}
    for key, p in twin.named_parameters():
        params[keymap[key][1:]] = ours_layout(key, p)
    sd = twin.state_dict()
    stats = {
        path[1:]: ours_layout(key, sd[key])
        for key, path in keymap.items()
        if path[0] == "batch_stats"
    }
    ema_params = (
        {keymap[key][1:]: ours_layout(key, p) for key, p in ema.module.named_parameters()}
        if ema is not None
        else {}
    )
    unflat = flax.traverse_util.unflatten_dict
    final = _final(
        unflat(params),
        unflat(stats) if stats else {},
        unflat(ema_params) if ema_params else {},
        groups,
    )
    return Trace(losses, {g: list(v.values()) for g, v in lrs.items()}, final)


@dataclasses.dataclass
class Result:
    """Our run, PyTorch's run per twin dtype ({'float64': Trace, ...}), and the notes. With
    the self-check: `horizon`, the number of updates after which PyTorch still agrees with
    itself (`horizon()`), and, when that is fewer than the run's, both sides' runs of that
    many steps (`at_horizon`: (ours, PyTorch float64))."""

    ours: Trace
    theirs: dict[str, Trace]
    notes: list[str]
    horizon: int | None = None
    at_horizon: tuple[Trace, Trace] | None = None


#: The largest loss difference at which PyTorch still counts as agreeing with itself (a
#: tenth of the float64 tolerance: ours may round a few times worse than one perturbation).
SELF_AGREEMENT = 1e-10


def horizon(reference: Trace, perturbed: Trace, tol: float = SELF_AGREEMENT) -> int:
    """The number of updates H after which PyTorch still agrees with itself: the losses of
    steps 0..H (step s computed from the weights after s updates) differ by ≤ `tol` between
    its run and its run from weights 1e-15 apart; len(losses) when every step does. A recipe
    that amplifies rounding errors (thresholds, high learning rates on small batches)
    parts from itself within N steps: no implementation can then agree with PyTorch to
    1e-9 after N steps, and the comparison is decided after H."""
    for s, d in enumerate(loss_differences(perturbed, reference)):
        if d > tol:
            return max(s - 1, 0)
    return len(reference.losses)


def values(side: Trace) -> dict:
    """The compared quantities of one side (`parity.compare`'s input)."""
    return {**{f"lr [{g}]": np.asarray(v) for g, v in sorted(side.lrs.items())}, **side.final}


@dataclasses.dataclass
class Inputs:
    """What both sides start from: the config both run (`prepare`), our initial variables of
    its seed, the host batches, and the notes on what was switched off."""

    config: ml_collections.ConfigDict
    variables: dict
    batches: list
    notes: list[str]


def inputs(config, num_classes: int, *, steps: int, batch: int, seed: int = 0, augment="off"):
    """`Inputs` of `config` for a comparison of `steps` steps on batches of `batch`."""
    config, notes = prepare(config, augment)
    variables = jax.device_get(recipe_lib.Recipe(config, num_classes).init_variables())
    batches = host_batches(config, steps, batch, num_classes, seed, augment)
    return Inputs(config, variables, batches, notes)


def run(
    config: ml_collections.ConfigDict,
    num_classes: int,
    *,
    steps: int,
    batch: int,
    x64: bool,
    twin_dtypes: tuple[str, ...] = ("float64",),
    seed: int = 0,
    augment: str = "off",
    ours_config: ml_collections.ConfigDict | None = None,
    self_check: bool = False,
) -> Result:
    """Both sides' N-step runs of `config` (a whole config: method, data, optim, train) on the
    same batches from the same initial weights (our init of the config's seed).

    `x64`: ours in float64 (else the config's dtype); `twin_dtypes`: PyTorch's runs, each
    'float32' or 'float64'. `ours_config` (default: `config`): the config of our side only,
    to show that a difference between the two is detected. `self_check`: also PyTorch's
    float64 run from weights perturbed by `SELF_PERTURBATION` (theirs[`PERTURBED`])."""
    given = inputs(config, num_classes, steps=steps, batch=batch, seed=seed, augment=augment)
    theirs = {
        d: run_theirs(given.config, num_classes, given.variables, given.batches, steps, d)
        for d in twin_dtypes
    }
    if self_check:
        theirs[PERTURBED] = run_theirs(
            given.config,
            num_classes,
            given.variables,
            given.batches,
            steps,
            "float64",
            perturb=SELF_PERTURBATION,
        )
    ours_config = given.config if ours_config is None else prepare(ours_config, augment)[0]
    ours = run_ours(ours_config, num_classes, given.variables, given.batches, steps, x64)
    result = Result(ours, theirs, given.notes)
    if self_check:
        result.horizon = horizon(theirs["float64"], theirs[PERTURBED])
        if result.horizon < steps:  # both sides again, stopped where PyTorch still agrees
            first = given.batches[: result.horizon]
            result.at_horizon = (
                run_ours(ours_config, num_classes, given.variables, first, steps, x64),
                run_theirs(given.config, num_classes, given.variables, first, steps, "float64"),
            )
    return result


def compare(a: Trace, b: Trace) -> list[parity.Row]:
    """Rows of `a` against `b` (the reference)."""
    return parity.compare(values(a), values(b))


def median_rows(runs: list[list[parity.Row]]) -> list[parity.Row]:
    """Per row, the median over runs (seeds) of its relative difference, as a Row whose
    `rel` is that median (max |ref| 1)."""
    return [
        parity.Row(rows[0].name, 1.0, float(np.median([r.rel for r in rows])))
        for rows in zip(*runs)
    ]


def loss_differences(a: Trace, b: Trace) -> list[float]:
    """Per step |loss a − loss b| / |loss b|."""
    return [abs(x - y) / abs(y) if y else abs(x - y) for x, y in zip(a.losses, b.losses)]


def steps_table(ours: Trace, theirs: Trace, perturbed: Trace | None = None) -> str:
    """The loss and every group's learning rate per step, ours beside PyTorch's; with
    `perturbed`, PyTorch's own loss difference from weights 1e-15 apart beside ours."""
    groups = sorted(theirs.lrs)
    head = (
        f"{'step':>4} {'loss ours':>18} {'loss PyTorch':>18} {'rel':>9}"
        + (f" {'PyTorch ±1e-15':>14}" if perturbed else "")
        + "".join(f" {'lr ' + g + ' ours':>16} {'PyTorch':>11}" for g in groups)
    )
    lines = [head]
    own = loss_differences(perturbed, theirs) if perturbed else []
    for i, (lo, lt, rel) in enumerate(
        zip(ours.losses, theirs.losses, loss_differences(ours, theirs))
    ):
        lines.append(
            f"{i:>4} {lo:>18.12g} {lt:>18.12g} {rel:>9.1e}"
            + (f" {own[i]:>14.1e}" if perturbed else "")
            + "".join(f" {ours.lrs[g][i]:>16.6g} {theirs.lrs[g][i]:>11.6g}" for g in groups)
        )
    return "\n".join(lines)
