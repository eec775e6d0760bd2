"""One command for the day a GPU (or TPU) appears: every method at its paper size and batch,
fgvc_jax next to its PyTorch twin, and the quick start, printed as BENCHMARKS.md rows.

    python bench/device_check.py                  # on whatever accelerator JAX sees (~10 min)
    python bench/device_check.py --torch-compile  # the twins through torch.compile too
    python bench/device_check.py --smoke          # CPU size, batch 2, a few quick-start steps

Per method (`methods.registry`; each in its own process, so that peak memory is the
method's and one failure does not stop the others), at the `cub` config's resolution and
batch, bf16 (`train.dtype`) against the twin (`fgvc_jax.reference`) under AMP bf16
(`torch.autocast`), channels_last for the ResNet-based twins:
- train and inference images/s, medians of interleaved repeats (`bench.backbones`); ours is
  the trainer's jitted train step (`Recipe.train_step`: loss, optimizer, BN statistics) and
  `network.apply(train=False)` + `Method.predict`; the twin's step is its loss, backward and
  SGD with momentum;
- peak device memory measured (`device.memory_stats()['peak_bytes_in_use']`,
  `torch.cuda.max_memory_allocated()`) next to XLA's plan for the same compiled step
  (`fgvc_jax.aot.memory`: what `python -m fgvc_jax.aot` predicts without the device);
- first-step latency (lower + compile + the first step) with an empty persistent compilation
  cache and then warm (in-memory caches cleared, the same program loaded from disk).
Then the quick start (`configs/swinfc.py:synthetic`, `python -m fgvc_jax.main`): wall time
and test top-1 from its eval.json.

On a CPU (`--smoke`, what the suite runs) the figures are only a sign that every part works;
the GPU rows in BENCHMARKS.md come from a run on the device.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # leave room for the twin

import numpy as np  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.backbones import interleaved_medians  # noqa: E402

GIB = 2**30
NUM_CLASSES = 200  # CUB: the paper size
SMOKE_CLASSES = 10


def method_config(name: str, smoke: bool):
    """`configs/<name>.py`, its `cub` variant (`synthetic` with --smoke), bf16, the step fed
    ready-cropped batches (`data.cache='none'`: the network's and optimizer's cost only)."""
    spec = importlib.util.spec_from_file_location(
        f"_cfg_{name}", os.path.join(ROOT, "configs", f"{name}.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config("synthetic" if smoke else "cub")
    if smoke:
        config.train.batch_size = 2
    config.optim.accumulate = 1
    config.train.dtype = "bfloat16"
    config.data.cache = "none"
    return config


def jax_side(config, num_classes: int) -> dict:
    """Our compiled train step and inference (blocking callables), first-step latencies with
    an empty and a warm compilation cache, XLA's memory plan."""
    import jax

    from fgvc_jax import aot
    from fgvc_jax.data import preprocess
    from fgvc_jax.recipe import Recipe
    from fgvc_jax.runtime import parallel

    recipe = Recipe(config, num_classes)
    method, size, batch = recipe.method, recipe.image_shape[0], config.train.batch_size
    mesh = parallel.make_mesh()
    tx = recipe.optimizer(steps_per_epoch=100)  # the schedule's length does not change the cost
    state = recipe.create_state(tx, recipe.init_variables(), mesh)
    rng = np.random.default_rng(0)
    host = {
        "image": rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8),
        "label": (np.arange(batch) % num_classes).astype(np.int32),
    }
    data = parallel.host_to_global(host, mesh)
    step_fn = recipe.train_step(tx, mesh)

    def first_step():
        """Seconds from lowering to the first step's loss on the host; the compiled step."""
        start = time.perf_counter()
        compiled = step_fn.lower(state, data).compile()
        _, metrics = compiled(jax.tree.map(lambda x: x.copy(), state), data)  # donation
        float(metrics["loss"])
        return time.perf_counter() - start, compiled

    cold_s, step = first_step()
    jax.clear_caches()
    warm_s, step = first_step()

    def infer(variables, images):
        images = preprocess.normalize(images, method.mean, method.std, recipe.dtype)
        return method.predict(method.network.apply(variables, images, train=False))

    infer_c = jax.jit(infer).lower(state.variables(), data["image"]).compile()
    box = [state]

    def train():
        box[0], metrics = step(box[0], data)
        metrics["loss"].block_until_ready()

    def forward():
        infer_c(box[0].variables(), data["image"]).block_until_ready()

    return {
        "train": train,
        "forward": forward,
        "size": size,
        "batch": batch,
        "first_step_cold_s": cold_s,
        "first_step_warm_s": warm_s,
        "planned_gib": aot.memory(step)["peak"],
    }


def torch_side(config, num_classes: int, size: int, batch: int, compile_: bool) -> dict:
    """The method's twin: its loss, backward and an SGD step under AMP bf16; inference with
    its prediction rule."""
    from fgvc_jax import reference
    from fgvc_jax.convert.torch_reference import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    twin = reference.twin(config.method, num_classes).to(device)
    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.arange(batch, device=device) % num_classes
    if config.method.backbone.startswith(("resnet", "densenet")):
        twin, x = (
            twin.to(memory_format=torch.channels_last),
            x.contiguous(memory_format=torch.channels_last),
        )
    run = torch.compile(twin) if compile_ else twin
    opt = torch.optim.SGD(twin.parameters(), lr=1e-3, momentum=0.9)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def train():
        twin.train()
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=torch.bfloat16):
            logits, aux = run(x)
            loss, _ = twin.loss(logits, aux, y)
        loss.backward()
        opt.step()
        sync()

    def forward():
        twin.eval()
        with torch.no_grad(), torch.autocast(device, dtype=torch.bfloat16):
            twin.predict(run(x)[0])
        sync()

    return {"train": train, "forward": forward}


def measure_method(name: str, smoke: bool, repeats: int, compile_: bool) -> dict:
    """One method's row (run in a process of its own)."""
    import jax

    from fgvc_jax.convert.torch_reference import torch
    from fgvc_jax.runtime import compile_cache

    compile_cache.enable(tempfile.mkdtemp(prefix="device_check_"))  # empty: the cold start
    config = method_config(name, smoke)
    k = SMOKE_CLASSES if smoke else NUM_CLASSES
    j = jax_side(config, k)
    t = torch_side(config, k, j["size"], j["batch"], compile_)
    med = interleaved_medians(
        {
            (side, m): fns[m]
            for side, fns in (("jax", j), ("torch", t))
            for m in ("train", "forward")
        },
        repeats,
        warmup=2,
    )
    stats = jax.devices()[0].memory_stats() or {}
    batch = j["batch"]
    return {
        "method": name,
        "size": j["size"],
        "batch": batch,
        **{f"{side}_{m}_img_s": batch / med[(side, m)] for side, m in med},
        "jax_peak_gib": stats["peak_bytes_in_use"] / GIB if "peak_bytes_in_use" in stats else None,
        "torch_peak_gib": torch.cuda.max_memory_allocated() / GIB
        if torch.cuda.is_available()
        else None,
        "planned_gib": j["planned_gib"],
        "first_step_cold_s": j["first_step_cold_s"],
        "first_step_warm_s": j["first_step_warm_s"],
    }


def quickstart(smoke: bool) -> dict:
    """The quick start as a user runs it: wall time and test top-1 (eval.json)."""
    workdir = tempfile.mkdtemp(prefix="device_check_quickstart_")
    cmd = [sys.executable, "-m", "fgvc_jax.main", "--config", "configs/swinfc.py:synthetic"]
    cmd += ["--workdir", workdir]
    if smoke:
        cmd += ["--config.train.num_steps=4", "--config.train.log_every=2"]
    start = time.perf_counter()
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if out.returncode:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr else "failed"}
    with open(os.path.join(workdir, "eval.json")) as f:
        result = json.load(f)
    top1 = result["metrics"]["top1/combined"]  # in percent
    return {"wall_s": wall, "top1": top1, "steps": result["step"]}


def _gib(x) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def rows(results: list[dict]) -> list[str]:
    head = (
        "| method | res | batch | train img/s JAX | PyTorch | JAX/PyTorch | inference img/s "
        "JAX | PyTorch | JAX/PyTorch | peak GiB JAX | XLA plan | PyTorch | first step s, "
        "cold cache | warm |"
    )
    out = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for r in results:
        if "error" in r:
            out.append(f"| {r['method']} | failed: {r['error']} |" + " |" * 13)
            continue
        tr, inf = (
            (r["jax_train_img_s"], r["torch_train_img_s"]),
            (
                r["jax_forward_img_s"],
                r["torch_forward_img_s"],
            ),
        )
        out.append(
            f"| {r['method']} | {r['size']} | {r['batch']} | {tr[0]:.4g} | {tr[1]:.4g} | "
            f"{tr[0] / tr[1]:.2f} | {inf[0]:.4g} | {inf[1]:.4g} | {inf[0] / inf[1]:.2f} | "
            f"{_gib(r['jax_peak_gib'])} | {_gib(r['planned_gib'])} | "
            f"{_gib(r['torch_peak_gib'])} | {r['first_step_cold_s']:.1f} | "
            f"{r['first_step_warm_s']:.1f} |"
        )
    return out


def machine() -> str:
    import jax

    from fgvc_jax.convert.torch_reference import torch

    dev = jax.devices()[0]
    return (
        f"{platform.node()}, {os.cpu_count()} CPUs; jax {jax.__version__} on {dev.device_kind} "
        f"x{jax.device_count()} ({jax.default_backend()}); torch {torch.__version__} "
        f"({'cuda ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu'})"
    )


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--methods", default="", help="comma-separated (default: every method)")
    p.add_argument("--smoke", action="store_true", help="CPU size, batch 2, a short quick start")
    p.add_argument("--repeats", type=int, default=0, help="timed repeats (default 10; smoke 1)")
    p.add_argument("--torch-compile", action="store_true", help="the twins via torch.compile")
    p.add_argument("--out", default="", help="also write every figure to this JSON file")
    p.add_argument("--one", default="", help=argparse.SUPPRESS)  # a method, in its own process
    a = p.parse_args(argv)
    repeats = a.repeats or (1 if a.smoke else 10)
    if a.one:
        print(json.dumps(measure_method(a.one, a.smoke, repeats, a.torch_compile)))
        return {}

    from fgvc_jax.methods import registry

    names = a.methods.split(",") if a.methods else sorted(registry.METHODS)
    unknown = [n for n in names if n not in registry.METHODS]
    if unknown:
        sys.exit(f"unknown method {unknown[0]!r}; valid: {', '.join(sorted(registry.METHODS))}")
    print(f"# {time.strftime('%Y-%m-%d')}, {machine()}; load average {os.getloadavg()[0]:.2f}")
    print(f"# bf16 / AMP bf16, median of {repeats}{', torch.compile' if a.torch_compile else ''}")
    results, start = [], time.perf_counter()
    for i, name in enumerate(names):
        cmd = [sys.executable, __file__, "--one", name, "--repeats", str(repeats)]
        cmd += ["--smoke"] * a.smoke + ["--torch-compile"] * a.torch_compile
        out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if out.returncode:
            last = (out.stderr.strip().splitlines() or ["failed"])[-1]
            results.append({"method": name, "error": last})
        else:
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        done = time.perf_counter() - start
        eta = done / (i + 1) * (len(names) - i - 1)
        print(f"# {name}: done ({i + 1}/{len(names)}, {done:.0f} s, ETA {eta:.0f} s)", flush=True)
    print("\n".join(rows(results)))
    quick = quickstart(a.smoke)
    if "error" in quick:
        print(f"quick start: failed: {quick['error']}")
    else:
        print(
            f"quick start (configs/swinfc.py:synthetic, {quick['steps']} steps): "
            f"{quick['wall_s']:.0f} s wall, test top-1 {quick['top1']:.1f}%"
        )
    print(f"# load average after: {os.getloadavg()[0]:.2f}")
    report = {"machine": machine(), "methods": results, "quickstart": quick}
    if a.out:
        with open(a.out, "w") as f:
            json.dump(report, f, indent=2)
    return report


if __name__ == "__main__":
    main()
