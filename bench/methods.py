"""Every method's training and inference throughput, JAX next to the PyTorch reference model of
the same backbone (torchvision ResNet-50 / timm Swin-B, plain classifier) in one run.

JAX side: the trainer's own jitted train step (`step.make_train_step`: the method's loss,
its optimizer from `configs/<method>.py:cub`, BN statistics, donation) and its inference
(`network.apply(train=False)` + `Method.predict`), at the paper resolution (448 ResNet, 384
Swin) on uint8 images. PyTorch side: `bench.backbones.prepare_torch` (SGD momentum step,
cross-entropy; AMP bf16 with --bf16). Medians of interleaved repeats; compile time of the
JAX train step and inference; peak memory (GPU: allocator peak of each side; CPU: XLA's
planned bytes (arguments + outputs + temporaries) of the compiled JAX train step, PyTorch
n/a).

    python bench/methods.py                          # paper batch of each method
    python bench/methods.py --batch 2 --repeats 3    # CPU-sized run
    python bench/methods.py --bf16 --methods swinfc,baseline_swin
"""

import argparse
import os
import platform
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.backbones import interleaved_medians, prepare_torch  # noqa: E402

# method → (paper batch, torch reference arch); resolution from the method's full config.
METHODS = {
    "baseline_resnet": (16, "resnet50"),
    "ma_ea": (16, "resnet50"),
    "cra_smra": (20, "resnet50"),
    "baseline_swin": (32, "swin_base_patch4_window12_384"),
    "swinfc": (32, "swin_base_patch4_window12_384"),
}
NUM_CLASSES = 200  # CUB


def method_config(name: str, batch: int, bf16: bool):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        f"_cfg_{name}", os.path.join(ROOT, "configs", f"{name}.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config("cub")
    config.train.batch_size = batch
    config.optim.accumulate = 1
    config.train.dtype = "bfloat16" if bf16 else "float32"
    config.data.cache = "none"  # the step is fed ready-cropped batches (network cost only)
    return config


def _planned_bytes(compiled) -> int | None:
    try:
        m = compiled.memory_analysis()
        return int(
            m.argument_size_in_bytes
            + m.output_size_in_bytes
            + m.temp_size_in_bytes
            - m.alias_size_in_bytes
        )
    except Exception:
        return None


def prepare_jax(name: str, batch: int, bf16: bool) -> dict:
    """Compiled train step and inference of method `name` (blocking callables), compile
    seconds and memory."""
    import jax

    from fgvc_jax.data import preprocess
    from fgvc_jax.recipe import Recipe
    from fgvc_jax.runtime import parallel

    config = method_config(name, batch, bf16)
    recipe = Recipe(config, NUM_CLASSES)
    method, dtype, size = recipe.method, recipe.dtype, recipe.image_shape[0]
    mesh = parallel.make_mesh()
    tx = recipe.optimizer(steps_per_epoch=100)  # the schedule's length does not change the cost
    state = recipe.create_state(tx, recipe.init_variables(), mesh)
    rng = np.random.default_rng(0)
    batch_host = {
        "image": rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8),
        "label": (np.arange(batch) % NUM_CLASSES).astype(np.int32),
    }
    data = parallel.host_to_global(batch_host, mesh)

    step_fn = recipe.train_step(tx, mesh)
    t0 = time.perf_counter()
    step = step_fn.lower(state, data).compile()
    train_compile = time.perf_counter() - t0

    def infer(variables, images):
        images = preprocess.normalize(images, method.mean, method.std, dtype)
        out = method.network.apply(variables, images, train=False)
        return method.predict(out)

    t0 = time.perf_counter()
    infer_c = jax.jit(infer).lower(state.variables(), data["image"]).compile()
    infer_compile = time.perf_counter() - t0
    box = [state]

    def run_train():
        s, metrics = step(box[0], data)
        box[0] = s
        metrics["loss"].block_until_ready()

    def run_infer():
        infer_c(box[0].variables(), data["image"]).block_until_ready()

    return {
        "train": run_train,
        "forward": run_infer,
        "size": size,
        "train_compile_s": train_compile,
        "forward_compile_s": infer_compile,
        "planned_train_bytes": _planned_bytes(step),
    }


def gpu_peaks() -> tuple[int | None, int | None]:
    """(JAX peak bytes in use, torch max allocated) on a GPU; (None, None) elsewhere."""
    import jax

    from fgvc_jax.convert.torch_reference import torch

    jp = tp = None
    stats = jax.devices()[0].memory_stats() if jax.default_backend() == "gpu" else None
    if stats:
        jp = stats.get("peak_bytes_in_use")
    if torch.cuda.is_available():
        tp = torch.cuda.max_memory_allocated()
    return jp, tp


def _gib(b) -> str:
    return f"{b / 2**30:.2f}" if b else "n/a"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--batch", type=int, default=0, help="0 = each method's paper batch")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--bf16", action="store_true", help="bf16 JAX compute vs torch AMP bf16")
    args = p.parse_args()

    import jax

    from fgvc_jax.convert.torch_reference import torch

    dev = jax.devices()[0]
    print(
        f"# machine: {platform.node()} {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs; jax {jax.__version__} on {dev.device_kind} "
        f"x{jax.device_count()} ({jax.default_backend()}); torch {torch.__version__} "
        f"({'cuda' if torch.cuda.is_available() else f'cpu, {torch.get_num_threads()} threads'})"
        f"; {'bf16 / AMP bf16' if args.bf16 else 'fp32'}; median of {args.repeats}, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    head = (
        "| method | res | batch | mode | JAX img/s | PyTorch img/s | JAX/PyTorch | "
        "JAX compile s | JAX peak GiB | PyTorch peak GiB |"
    )
    print(head)
    print("|" + "---|" * 10)
    for name in args.methods.split(","):
        if name not in METHODS:
            sys.exit(f"unknown method {name!r}; valid: {', '.join(METHODS)}")
        paper_batch, arch = METHODS[name]
        batch = args.batch or paper_batch
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        j = prepare_jax(name, batch, args.bf16)
        t = prepare_torch(arch, batch, j["size"], args.bf16)
        med = interleaved_medians(
            {("jax", m): j[m] for m in ("train", "forward")}
            | {("torch", m): t[m] for m in ("train", "forward")},
            args.repeats,
            args.warmup,
        )
        jpeak, tpeak = gpu_peaks()
        jpeak = jpeak or j["planned_train_bytes"]
        for mode in ("train", "forward"):
            js, ts = med[("jax", mode)], med[("torch", mode)]
            print(
                f"| {name} | {j['size']} | {batch} | {'inference' if mode == 'forward' else mode}"
                f" | {batch / js:.3g} | {batch / ts:.3g} | {ts / js:.2f} | "
                f"{j[f'{mode}_compile_s']:.1f} | {_gib(jpeak) if mode == 'train' else ''} | "
                f"{_gib(tpeak) if mode == 'train' else ''} |",
                flush=True,
            )
        del j, t


if __name__ == "__main__":
    main()
