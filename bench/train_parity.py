"""Same recipe, same accuracy: each method trained on synthetic_fgvc by fgvc_jax and by its
PyTorch twin with PyTorch's own training components, over several seeds; test top-1 per side
(mean ± sd), their difference in units of the seed spread, and the curves.

    python bench/train_parity.py --methods baseline_resnet,cra_smra,swinfc --seeds 3
    python bench/train_parity.py --methods baseline_resnet --seeds 1 --steps 30  # a try

The run: `configs/<method>.py:synthetic` (the quick start's CPU size), its length by default
(`train.num_steps`: 300 for the ResNet methods, 600 for SwinFC); `--steps N` shortens it,
the schedule with it (`train.num_steps` = N, the warm-up scaled by N / the default).
Dropout and stochastic depth off on both sides (`recipe_parity.prepare`; 0 in these configs).

- fgvc_jax: what the trainer runs, `Recipe(config, K)`'s optimizer and jitted train step
  (`loop.step`), evaluated by its eval step (`Method.scores()['combined']`).
- PyTorch: the twin (`reference/<method>.py`) trained as `recipe_parity.run_theirs` trains it:
  torch.optim SGD/AdamW with one param group per `Method.param_groups` entry and the
  weight-decay policy from the twin's own modules (`recipe_parity._decays`), the warm-up +
  cosine of `torch.optim.lr_scheduler` (`recipe_parity._scheduler`), clip_grad_norm_, the
  twin's loss (label-smoothing CE), EMA by AveragedModel when `train.ema_decay` > 0;
  evaluated in eval mode by `twin.predict` (the method's prediction rule, METHODS.md: e.g.
  the mean of the heads' softmaxes for CRA-SMRA and SwinFC).

Per seed s (`config.seed` = s) both sides start from the same initial weights, ours at seed s
copied into the twin (as recipe_parity does: the twins have no initialisation of their own
that is the method's, so independent inits would compare the init schemes, not the recipes),
and see the same host batches: the trainer's host pipeline (`data.train_iterator` on the fit
split with the decoded cache off: each example's random crop and flip drawn on the host from
(s, epoch, position), the epoch order from s). So a seed fixes the init, the data order and
the augmentation; the two sides differ only in who computes the recipe. Their first losses
agree; float32 rounding then parts the runs within a few steps at the ResNet methods' learning
rates (BENCHMARKS.md, the recipe against PyTorch's), so each seed gives two runs of the recipe.

Validation top-1 every `--eval-every` steps on the carved validation split (`data.splits`),
test top-1 of the last step's weights (the raw weights, as `top1/combined`; EMA weights are
not evaluated). Δ = mean(fgvc_jax) − mean(PyTorch); Δ/sd = |Δ| / pooled sd, the pooled sd
sqrt((sd₁² + sd₂²) / 2) of the per-seed test top-1s (sample sd; undefined with one seed).
Writes <out>/train_parity.md (the table), <out>/train_parity.json (every number: accuracies
are fractions in [0, 1]) and <out>/<method>.png (training loss and validation top-1, mean
over seeds, shaded ± sd).

Time: on 2026-12-05 our ResNet side ran 13x slower than the twin (quiet, 2026-12-07: 1.35 s
against 0.11 s a step at batch 32): XLA:CPU's generic loop for the 3x3 convs of the 2x2 last
stage at 64 px; `backbones.conv` computes those as matmuls now (BENCHMARKS.md, "Small maps on
CPU"). Quiet, SwinFC's 600 steps take ~75 s on our side and ~50 s on PyTorch's; the whole
3-method, 3-seed run about an hour on the 2-core machine (BENCHMARKS.md, "the same accuracy
as PyTorch").
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import jax
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from fgvc_jax import config as config_lib  # noqa: E402
from fgvc_jax import data  # noqa: E402
from fgvc_jax import recipe as recipe_lib  # noqa: E402
from fgvc_jax.data import datasets, splits  # noqa: E402
from fgvc_jax.methods import registry  # noqa: E402
from fgvc_jax.recipe import lengths  # noqa: E402
from fgvc_jax.reference import recipe_parity  # noqa: E402

SIDES = ("fgvc_jax", "pytorch")
METHODS = ("baseline_resnet", "cra_smra", "swinfc")


def method_config(name: str, steps: int | None):
    """`configs/<name>.py:synthetic` as both sides run it (`recipe_parity.prepare`), `steps`
    long (None: the config's own length), and that length's warm-up."""
    config = config_lib.sibling(os.path.join(ROOT, "configs", "x.py"), name)
    config, _ = recipe_parity.prepare(config.get_config("synthetic"), "host")
    default = int(config.train.num_steps)
    if steps and steps != default:
        config.train.num_steps = steps
        config.optim.warmup_steps = int(round(config.optim.warmup_steps * steps / default))
    return config


class Data:
    """The synthetic_fgvc splits of `config` (prepared once): fit, val and test, as the
    trainer resolves them; the val and test batches read once (`limit`: the first examples
    only, for tries)."""

    def __init__(self, config, limit: int = 0):
        self.config = config
        self.info = data.prepare(config.data)
        self.splits = splits.resolve(config.data)
        self.fit_size = splits.size(
            self.splits.fit, self.info.num_examples, lambda: self._source(self.splits.fit)
        )
        self.batch = int(config.train.batch_size)
        self.steps_per_epoch = lengths.steps_per_epoch(self.fit_size, self.batch)
        eval_batch = recipe_lib.eval_batch_size(config)
        self.val = self._eval(self.splits.val or self.splits.test, eval_batch, limit)
        self.test = self._eval(self.splits.test, eval_batch, limit)

    def _source(self, split):
        return datasets.data_source(self.config.data, split)

    def _eval(self, split: str, batch: int, limit: int) -> list[dict]:
        out, seen = [], 0
        it = data.eval_iterator(self.config.data, split=split, global_batch_size=batch)
        for b in it:
            b["mask"] = b["mask"] & (seen + np.arange(len(b["mask"])) < (limit or math.inf))
            seen += len(b["mask"])
            out.append(b)
            if limit and seen >= limit:
                break
        it.close()
        return out

    def train_batches(self, seed: int, steps: int) -> list[dict]:
        """The first `steps` training batches of seed `seed` (crop and flip drawn here)."""
        fit = self.config.data.copy_and_resolve_references()
        fit.train_split = self.splits.fit
        it = data.train_iterator(fit, global_batch_size=self.batch, seed=seed)
        batches = [next(it) for _ in range(steps)]
        it.close()
        return batches


class Progress:
    """'<what>: step i/N, loss, steps/s, ETA' about ten times per run."""

    def __init__(self, what: str, total: int):
        self.what, self.total, self.t0 = what, total, time.perf_counter()
        self.every = max(1, total // 10)

    def step(self, i: int, loss: float) -> None:
        if i % self.every and i != self.total:
            return
        elapsed = time.perf_counter() - self.t0
        rate = i / elapsed
        print(
            f"  {self.what}: step {i}/{self.total}  loss {loss:.4f}  {rate:.2f} steps/s  "
            f"ETA {(self.total - i) / rate:.0f}s",
            flush=True,
        )


def run_ours(config, d: Data, variables, batches, eval_at: set[int], progress) -> dict:
    """The trainer's recipe (`Recipe`): its optimizer, jitted train and eval steps."""
    from fgvc_jax.loop import step as step_lib
    from fgvc_jax.runtime import parallel

    recipe = recipe_lib.Recipe(config, d.info.num_classes)
    mesh = parallel.make_mesh()
    tx = recipe.optimizer(d.steps_per_epoch)
    state = recipe.create_state(tx, variables, mesh)
    train_step, eval_step = recipe.train_step(tx, mesh), recipe.eval_step(mesh)

    def top1(batches) -> float:
        metrics = step_lib.evaluate(eval_step, state.variables(), iter(batches), mesh)
        return metrics["top1/combined"] / 100.0

    losses, val = [], {}
    for i, b in enumerate(batches, 1):
        state, metrics = train_step(state, parallel.host_to_global(b, mesh))
        losses.append(float(jax.device_get(metrics["loss"])))
        progress.step(i, losses[-1])
        if i in eval_at:
            val[i] = top1(d.val)
    return {"losses": losses, "val": val, "test_top1": top1(d.test)}


def torch_recipe(config, num_classes: int, twin, variables, steps_per_epoch: int):
    """(optimizer, scheduler or None, AveragedModel or None) of `config` for `twin`, built as
    `recipe_parity.run_theirs` builds them."""
    import flax.traverse_util
    import torch

    from fgvc_jax.reference import weights

    o = config.optim
    groups = registry.create(config.method, num_classes).param_groups()
    keymap = weights.pairs(twin, flax.traverse_util.flatten_dict(variables))
    decay = recipe_parity._decays(twin, o.wd_mask)
    by_group = {}
    for key, p in twin.named_parameters():
        g = recipe_parity._group_of("/".join(keymap[key][1:]), groups)
        wd = float(o.weight_decay) if key in decay else 0.0
        by_group.setdefault((g, wd), []).append(p)
    param_groups = [
        {"params": ps, "lr": float(o.lr[g]), "weight_decay": wd, "name": g}
        for (g, wd), ps in by_group.items()
    ]
    if o.name == "sgd":
        opt = torch.optim.SGD(param_groups, lr=0.0, momentum=o.momentum, nesterov=o.nesterov)
    elif o.name == "adamw":
        opt = torch.optim.AdamW(param_groups, lr=0.0, betas=(o.b1, o.b2), eps=o.eps)
    else:
        raise ValueError(f"config.optim.name={o.name!r}")
    total = max(recipe_lib.Recipe(config, num_classes).num_steps(steps_per_epoch), 1)
    sched = recipe_parity._scheduler(opt, o, total, lengths.steps("warmup", o, steps_per_epoch))
    ema = None
    if recipe_lib.ema_decay(config) > 0:
        avg = torch.optim.swa_utils.get_ema_multi_avg_fn(recipe_lib.ema_decay(config))
        ema = torch.optim.swa_utils.AveragedModel(twin, multi_avg_fn=avg)
        ema.update_parameters(twin)
    return opt, sched, ema


def run_theirs(config, d: Data, variables, batches, eval_at: set[int], progress) -> dict:
    """The twin from `variables`, trained with PyTorch's components (`torch_recipe`)."""
    import torch

    from fgvc_jax.reference import registry as twins
    from fgvc_jax.reference import weights

    K = d.info.num_classes
    method = recipe_lib.Recipe(config, K).method  # its normalisation (mean, std)
    twin = twins.build(config.method, K).to(torch.float32)
    weights.jax_to_torch(variables, twin)
    twin.train(True)
    opt, sched, ema = torch_recipe(config, K, twin, variables, d.steps_per_epoch)
    k = int(config.optim.accumulate)

    def tensor(images):
        x = recipe_parity.normalized(images, method, "float32").transpose(0, 3, 1, 2)
        return torch.from_numpy(np.ascontiguousarray(x))

    def top1(batches) -> float:
        twin.train(False)
        hits = count = 0
        with torch.no_grad():
            for b in batches:
                logits, _ = twin(tensor(b["image"]))
                pred = twin.predict(logits).argmax(-1).numpy()
                hits += int(((pred == b["label"]) & b["mask"]).sum())
                count += int(b["mask"].sum())
        twin.train(True)
        return hits / count

    losses, val = [], {}
    for i, b in enumerate(batches, 1):
        x, y = tensor(b["image"]), torch.from_numpy(b["label"]).long()
        opt.zero_grad(set_to_none=True)
        loss_sum = 0.0
        for j in range(k):  # micro-batch j: rows j, j + k, ... (our split)
            logits, aux = twin(x[j::k])
            loss, _ = twin.loss(logits, aux, y[j::k])
            (loss / k).backward()
            loss_sum += loss.item()
        if config.optim.clip_norm and config.optim.clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(twin.parameters(), config.optim.clip_norm)
        opt.step()
        if sched is not None:
            sched.step()
        if ema is not None:
            ema.update_parameters(twin)
        losses.append(loss_sum / k)
        progress.step(i, losses[-1])
        if i in eval_at:
            val[i] = top1(d.val)
    return {"losses": losses, "val": val, "test_top1": top1(d.test)}


def spread(xs) -> tuple[float, float | None]:
    """(mean, sample sd or None with one value)."""
    xs = np.asarray(xs, float)
    return float(xs.mean()), (float(xs.std(ddof=1)) if len(xs) > 1 else None)


def summary(runs: dict) -> dict:
    """Mean ± sd per side of the test top-1, Δ, Δ / pooled sd, and whether |Δ| ≤ 1 sd."""
    out = {}
    for side in SIDES:
        out[side] = dict(zip(("mean", "sd"), spread([r["test_top1"] for r in runs[side]])))
    delta = out["fgvc_jax"]["mean"] - out["pytorch"]["mean"]
    sds = [out[side]["sd"] for side in SIDES]
    pooled = math.sqrt((sds[0] ** 2 + sds[1] ** 2) / 2) if None not in sds else None
    ratio = abs(delta) / pooled if pooled else None
    within = None if pooled is None else (ratio <= 1.0 if pooled else delta == 0)
    return {
        **out,
        "delta": delta,
        "pooled_sd": pooled,
        "delta_over_sd": ratio,
        "within_1sd": within,
    }


def table(results: dict) -> str:
    """The markdown table: top-1 in %, Δ in points."""

    def pct(s):
        return f"{100 * s['mean']:.1f}" + (f" ± {100 * s['sd']:.1f}" if s["sd"] is not None else "")

    rows = [
        "| method | fgvc_jax top-1 | PyTorch top-1 | Δ | Δ/sd | within 1 sd |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        s = r["summary"]
        ratio = "-" if s["delta_over_sd"] is None else f"{s['delta_over_sd']:.2f}"
        within = {None: "n/a (1 seed)", True: "yes", False: "no"}[s["within_1sd"]]
        rows.append(
            f"| {name} | {pct(s['fgvc_jax'])} | {pct(s['pytorch'])} | {100 * s['delta']:+.1f} "
            f"| {ratio} | {within} |"
        )
    return "\n".join(rows)


def plot(name: str, result: dict, path: str) -> None:
    """Training loss and validation top-1 of both sides: mean over seeds, shaded ± sd."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(11, 4))
    for side, color in zip(SIDES, ("tab:blue", "tab:orange")):
        runs = result["runs"][side]
        for ax, ys, xs in (
            (ax_loss, [r["losses"] for r in runs], np.arange(1, len(runs[0]["losses"]) + 1)),
            (ax_val, [list(r["val"].values()) for r in runs], list(runs[0]["val"])),
        ):
            ys = np.asarray(ys, float)
            mean, sd = ys.mean(0), ys.std(0)
            marker = "o" if ax is ax_val else None
            ax.plot(xs, mean, color=color, label=f"{side} (n={len(runs)})", lw=1.2, marker=marker)
            ax.fill_between(xs, mean - sd, mean + sd, color=color, alpha=0.2, lw=0)
    ax_loss.set(title=f"{name}: training loss", xlabel="step", ylabel="loss")
    ax_val.set(title=f"{name}: validation top-1", xlabel="step", ylabel="top-1", ylim=(0, 1))
    for ax in (ax_loss, ax_val):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_method(name: str, seeds: int, steps: int | None, eval_every: int, limit: int) -> dict:
    config = method_config(name, steps)
    d = Data(config, limit)
    n = int(config.train.num_steps)
    every = eval_every or max(1, n // 10)
    eval_at = set(range(every, n + 1, every)) | {n}
    print(
        f"{name}: {seeds} seed(s) x 2 sides, {n} steps of batch {d.batch} "
        f"(fit {d.fit_size}, val {sum(int(b['mask'].sum()) for b in d.val)}, "
        f"test {sum(int(b['mask'].sum()) for b in d.test)}), validation every {every} steps",
        flush=True,
    )
    runs = {side: [] for side in SIDES}
    for seed in range(seeds):
        config.seed = seed
        variables = jax.device_get(recipe_lib.Recipe(config, d.info.num_classes).init_variables())
        batches = d.train_batches(seed, n)
        for side, fn in zip(SIDES, (run_ours, run_theirs)):
            t0 = time.perf_counter()
            r = fn(
                config, d, variables, batches, eval_at, Progress(f"{name} seed {seed} {side}", n)
            )
            r.update(seed=seed, steps=len(r["losses"]), seconds=time.perf_counter() - t0)
            r["val"] = {int(k): v for k, v in sorted(r["val"].items())}
            print(
                f"  {name} seed {seed} {side}: test top-1 {100 * r['test_top1']:.1f}% "
                f"in {r['seconds']:.0f}s",
                flush=True,
            )
            runs[side].append(r)
    return {
        "steps": n,
        "batch": d.batch,
        "warmup_steps": int(config.optim.warmup_steps),
        "eval_every": every,
        "eval_limit": limit,
        "runs": runs,
        "summary": summary(runs),
    }


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--steps", type=int, default=0, help="0: the synthetic config's length")
    p.add_argument("--eval-every", type=int, default=0, help="0: a tenth of the run")
    p.add_argument("--eval-limit", type=int, default=0, help="evaluate on the first N only")
    p.add_argument("--out", default="bench_out/train_parity")
    args = p.parse_args(argv)
    names = [m for m in args.methods.split(",") if m]
    for m in names:
        if m not in registry.METHODS:
            p.error(f"unknown method {m!r}; valid: {', '.join(sorted(registry.METHODS))}")
    os.makedirs(args.out, exist_ok=True)
    results = {}
    for m in names:
        results[m] = run_method(m, args.seeds, args.steps or None, args.eval_every, args.eval_limit)
        plot(m, results[m], os.path.join(args.out, f"{m}.png"))
        report = write(results, args.seeds, args.out)  # after each method: a cut-off keeps them
    print(table(results))
    return report


def write(results: dict, seeds: int, out: str) -> dict:
    """<out>/train_parity.md and .json for the methods finished so far."""
    with open(os.path.join(out, "train_parity.md"), "w") as f:
        f.write(table(results) + "\n")
    report = {"seeds": seeds, "init": "shared (ours copied to the twin)", "methods": results}
    with open(os.path.join(out, "train_parity.json"), "w") as f:
        json.dump(report, f, indent=1)
    return report


if __name__ == "__main__":
    main()
