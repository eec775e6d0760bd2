"""Where float32 parts from float64, step by step: ours next to PyTorch's (issue 21's finding).

    python bench/float32_steps.py --method attention_cnn --seeds 0,1,2,3 --steps 30

`compare --steps N --dtype float32` decides on the error after N whole steps, where each side's
float32 run has drifted along its own trajectory. This looks at one step at a time instead:
along the float64 trajectory (our recipe's jitted step in float64, which agrees with PyTorch's
float64 run to 1e-13), at every step s the weights after s updates are rounded to float32 and
both sides compute the float32 gradient of that step's batch from them, ours (the method's
network and loss, the input normalised on the device as the train step does) and the twin's
(PyTorch, input normalised in float32 on the host as `recipe_parity` feeds it). Each is
compared with the float64 gradient: relative L2 error per parameter tensor and over all.

An "event" is a step whose whole-gradient error exceeds 1e-6 (attention_cnn's typical rounding
is ~2e-7): a ReLU or max-pool near-tie decided the other way in float32 (a flipped max-pool
window moves a kernel's gradient, not its bias's). Each step starts from the float64 weights,
so the steps are independent draws; a 30-step float32 run is decided by its first event. (In
the CPU-size ResNets, BatchNorm over batch 4 on 2x2 maps puts every step above 1e-6.) Printed: per step both errors, the event steps of each
side, and per parameter the median error over steps of each side and their ratio.
Dropout and stochastic depth are off (`recipe_parity.prepare`), batch 4 at the CPU size.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

import flax
import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fgvc_jax import recipe as recipe_lib  # noqa: E402
from fgvc_jax.data import preprocess  # noqa: E402
from fgvc_jax.methods import registry  # noqa: E402
from fgvc_jax.reference import recipe_parity, weights  # noqa: E402
from fgvc_jax.reference import registry as twins  # noqa: E402
from fgvc_jax.runtime import parallel  # noqa: E402

EVENT = 1e-6
SIDES = (("ours", "ours"), ("PyTorch", "theirs"))
CLASSES, BATCH = 10, 4


def _flat(tree) -> dict[str, np.ndarray]:
    flat = flax.traverse_util.flatten_dict(tree)
    return {"/".join(k): np.asarray(v, np.float64) for k, v in flat.items()}


def _our_grad(method, dtype):
    """Gradient of the method's loss w.r.t. params, from uint8 images as the train step."""

    def loss(params, other, images, labels):
        x = preprocess.normalize(images, method.mean, method.std, dtype)
        out, _ = method.network.apply(
            {"params": params, **other}, x, train=True, mutable=["batch_stats"]
        )
        return method.loss(out, labels)[0]

    return jax.jit(jax.grad(loss))


def _their_grad(twin, keymap, variables32, batch, method) -> dict[str, np.ndarray]:
    import torch

    weights.jax_to_torch(variables32, twin)
    twin.zero_grad(set_to_none=True)
    x = recipe_parity.normalized(batch["image"], method, "float32").transpose(0, 3, 1, 2)
    logits, aux = twin(torch.from_numpy(x))
    twin.loss(logits, aux, torch.from_numpy(batch["label"]).long())[0].backward()
    flat = flax.traverse_util.flatten_dict(variables32)
    out = {}
    for key, p in twin.named_parameters():
        path = keymap[key]
        grad = p.grad.double().numpy()
        shape = flat[path].shape
        out["/".join(path[1:])] = weights.to_jax(
            grad, shape, twin.flatten_inputs.get(key), key.endswith(".weight")
        ).astype(np.float64)
    return out


def _error(grad: dict, exact: dict) -> float:
    num = sum(np.sum((grad[p] - exact[p]) ** 2) for p in exact)
    return float(np.sqrt(num / sum(np.sum(exact[p] ** 2) for p in exact)))


def one_seed(config, seed: int, steps: int) -> list[dict]:
    """Per step: {'ours': err, 'theirs': err, 'params': {path: (ours, theirs)}}."""
    given = recipe_parity.inputs(config, CLASSES, steps=steps, batch=BATCH, seed=seed)
    config = given.config
    rows = []
    with jax.enable_x64(True):
        recipe = recipe_lib.Recipe(config, CLASSES)
        recipe.method = registry.create(config.method, CLASSES, jnp.float64)
        ours32 = registry.create(config.method, CLASSES, jnp.float32)
        mesh = parallel.make_mesh()
        tx = recipe.optimizer(steps)
        as64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), given.variables)
        state = recipe.create_state(tx, as64, mesh)
        train_step = recipe.train_step(tx, mesh)
        grad64, grad32 = _our_grad(recipe.method, jnp.float64), _our_grad(ours32, jnp.float32)
        twin = twins.build(config.method, CLASSES).float().train(True)
        keymap = None
        for batch in given.batches:
            v64 = jax.device_get({"params": state.params, "batch_stats": state.batch_stats})
            v64 = {k: v for k, v in v64.items() if v}
            v32 = jax.tree.map(lambda a: np.asarray(a, np.float32), v64)
            other64 = {k: v for k, v in v64.items() if k != "params"}
            other32 = {k: v for k, v in v32.items() if k != "params"}
            exact = _flat(grad64(v64["params"], other64, batch["image"], batch["label"]))
            ours = _flat(grad32(v32["params"], other32, batch["image"], batch["label"]))
            if keymap is None:
                keymap = weights.pairs(twin, flax.traverse_util.flatten_dict(v32))
            theirs = _their_grad(twin, keymap, v32, batch, ours32)
            norm = {p: np.linalg.norm(exact[p]) or 1.0 for p in exact}
            rows.append(
                {
                    "ours": _error(ours, exact),
                    "theirs": _error(theirs, exact),
                    "params": {
                        p: (
                            np.linalg.norm(ours[p] - exact[p]) / norm[p],
                            np.linalg.norm(theirs[p] - exact[p]) / norm[p],
                        )
                        for p in exact
                    },
                }
            )
            state, _ = train_step(state, parallel.host_to_global(batch, mesh))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", default="attention_cnn")
    parser.add_argument("--seeds", default="0,1,2,3", help="comma-separated batch seeds")
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    config = importlib.import_module(f"configs.{args.method}").get_config("synthetic")
    config, _ = recipe_parity.prepare(config)
    runs = {}
    for seed in (int(s) for s in args.seeds.split(",")):
        rows = runs[seed] = one_seed(config, seed, args.steps)
        print(f"seed {seed}: step, whole-gradient float32 error vs float64: ours, PyTorch")
        for s, r in enumerate(rows):
            sides = [name for name, key in SIDES if r[key] > EVENT]
            mark = f"  <- event: {', '.join(sides)}" if sides else ""
            print(f"  {s:3d}  {r['ours']:.2e}  {r['theirs']:.2e}{mark}")
    print(f"\nevents (whole-gradient error > {EVENT:g}), steps per seed:")
    total = dict.fromkeys(SIDES, 0)
    for seed, rows in runs.items():
        for side in SIDES:
            hits = [s for s, r in enumerate(rows) if r[side[1]] > EVENT]
            total[side] += len(hits)
            print(f"  seed {seed} {side[0]:8s} {hits}")
    print("  in all: " + ", ".join(f"{name} {n}" for (name, _), n in total.items()))
    print("\nper parameter, median over steps and seeds of the relative L2 error vs float64:")
    print(f"  {'parameter':40s} {'ours':>9s} {'PyTorch':>9s} {'ratio':>6s}")
    every = [r for rows in runs.values() for r in rows]
    for p in every[0]["params"]:
        o = float(np.median([r["params"][p][0] for r in every]))
        t = float(np.median([r["params"][p][1] for r in every]))
        print(f"  {p:40s} {o:9.2e} {t:9.2e} {o / t if t else float('nan'):6.2f}")


if __name__ == "__main__":
    main()
