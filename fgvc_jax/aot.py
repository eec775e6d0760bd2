"""Compile a config's train and eval steps for an H100 or a TPU without the device:
`python -m fgvc_jax.aot --config configs/<method>.py:<dataset> --target h100x8 [--json]`.

XLA compiles for a device it does not have ("deviceless" ahead-of-time compilation): the
GPU target is described by a GpuTargetConfigProto text file (`fgvc_jax/targets/`), a TPU by
libtpu's own topology. The compile is the real one (PTX + cubin for an H100, the libtpu
compiler a TPU VM runs), so it shows before the GPUs are booked whether a run compiles and
fits: XLA's memory analysis per device, the FLOPs of one step (XLA's HLO cost analysis of the
unoptimised module: on the optimised GPU module cuBLAS/cuDNN calls count as zero), the
collectives of the compiled program, and a roofline bound (FLOPs / the target's dense bf16
peak). The step is built and jitted exactly as the trainer does (`step.make_train_step`);
the dataset is never read: its class count is the dataset's published one (`data.config.known_num_classes`) or
--num_classes.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import sys
import tempfile
import time

from absl import app, flags
from ml_collections import config_flags

_FLAGS: dict = {}


def _define_flags() -> None:
    """The CLI's flags (defined when it runs, so that importing this module defines none)."""
    _FLAGS["config"] = config_flags.DEFINE_config_file(
        "config", None, "configs/<method>.py:<dataset>"
    )
    _FLAGS["target"] = flags.DEFINE_string(
        "target",
        "h100",
        "h100 | h100x8 | h100x16 | tpu-<gen>:<topology> (tpu-v5e:2x2, "
        "tpu-v5e:1x1, tpu-v5p:4x4x4, tpu-v6e:2x2, tpu-v4:2x2x1).",
    )
    _FLAGS["steps"] = flags.DEFINE_enum(
        "steps", "both", ["both", "train", "eval"], "Which steps to compile."
    )
    _FLAGS["num_classes"] = flags.DEFINE_integer(
        "num_classes",
        0,
        "Classes of the dataset (default: the known count of "
        "config.data.name; required for 'folder').",
    )
    _FLAGS["strict"] = flags.DEFINE_boolean(
        "strict", False, "GPU: never retry with Triton GEMM off."
    )
    _FLAGS["json"] = flags.DEFINE_boolean(
        "json", False, "Print one JSON object instead of the report."
    )
    flags.mark_flags_as_required(["config"])


#: GPU targets: (target config file, topology "partitions x hosts x GPUs per host").
GPU_TARGETS = {
    "h100": ("h100_sxm.txtpb", "1x1x1"),
    "h100x8": ("h100_sxm.txtpb", "1x1x8"),
    "h100x16": ("h100_sxm.txtpb", "1x2x8"),
}
#: Dense (no sparsity) bf16 matrix peak per device, TFLOP/s. H100 SXM: NVIDIA's H100 datasheet
#: (989.4 with sparsity off). TPU per chip: Google Cloud TPU docs, "TPU v4 / v5e / v5p /
#: Trillium (v6e)" system-architecture pages.
PEAK_BF16_TFLOPS = {"h100": 989.0, "v4": 275.0, "v5e": 197.0, "v5p": 459.0, "v6e": 918.0}
#: Where the aot-gpu / aot-tpu wheels live when `make dev` installs them beside the venv's
#: site-packages (kept off the default path: an installed CUDA plugin or libtpu makes every
#: CPU-only `import jax` print its failed initialisation).
SIDE_DIRS = {"gpu": os.path.join(sys.prefix, "aot-gpu"), "tpu": os.path.join(sys.prefix, "aot-tpu")}
_TILE_ERROR = "Couldn't find output tile sizes"
_COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")
_COLLECTIVE_OP = re.compile(r"\b(" + "|".join(_COLLECTIVES) + r")(?:-start)?\(")
_CHANNEL = re.compile(r"\bchannel_id=(\d+)")
GIB = 2.0**30


def _extra_advice(kind: str) -> str:
    """How to install a missing aot extra: `make dev` puts it beside the venv (in site-packages
    it would break every CPU-only `import jax`)."""
    return f"run `make dev` (it installs the aot-{kind} extra into .venv/aot-{kind})."


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def parse_target(name: str) -> dict:
    """{'kind': 'gpu'|'tpu', 'peak': TFLOP/s per device, ...} of a --target name."""
    if name in GPU_TARGETS:
        file, topology = GPU_TARGETS[name]
        return dict(
            kind="gpu", name=name, file=file, topology=topology, peak=PEAK_BF16_TFLOPS["h100"]
        )
    m = re.fullmatch(r"tpu-(v\d+[a-z]?):(\d+(?:x\d+){1,2})", name)
    if m and m.group(1) in PEAK_BF16_TFLOPS:
        return dict(
            kind="tpu",
            name=name,
            topology=f"{m.group(1)}:{m.group(2)}",
            peak=PEAK_BF16_TFLOPS[m.group(1)],
        )
    tpus = ", ".join(f"tpu-{g}:<topology>" for g in PEAK_BF16_TFLOPS if g != "h100")
    raise ValueError(f"--target={name!r}; valid: {', '.join(GPU_TARGETS)}, {tpus}")


def prepare_environment(argv: list[str]) -> None:
    """Before jax is imported: CPU as the runtime platform (the target is only compiled for),
    and for a GPU target the CUDA plugin found without a CUDA driver."""
    name = next(
        (
            a.split("=", 1)[1] if "=" in a else (argv[i + 1] if i + 1 < len(argv) else "")
            for i, a in enumerate(argv)
            if a == "--target" or a.startswith("--target=")
        ),
        "h100",
    )
    try:
        kind = parse_target(name)["kind"]
    except ValueError as e:
        _fail(str(e))
    os.environ["JAX_PLATFORMS"] = "cpu"
    side = SIDE_DIRS[kind]
    if os.path.isdir(side) and side not in sys.path:
        sys.path.insert(0, side)
    if kind == "gpu":
        os.environ["JAX_SKIP_CUDA_CONSTRAINTS_CHECK"] = "1"
        if importlib.util.find_spec("jax_cuda12_plugin") is None:
            _fail(f"--target={name} needs the CUDA 12 compiler plugin: {_extra_advice('gpu')}")
    else:
        if importlib.util.find_spec("libtpu") is None:
            _fail(f"--target={name} needs libtpu: {_extra_advice('tpu')}")
        # libtpu's one-process-per-TPU lock file guards a device; there is none here.
        os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")


@contextlib.contextmanager
def _without_missing_device_notices():
    """fd 2 held back while the backends start: the CUDA plugin and libtpu, loaded on a
    machine without their device, print C++ notices about it ("Could not find cuda
    drivers", libtpu's TPU_WORKER_HOSTNAMES and "No jellyfish device" lines) that no setting
    hides. aot only compiles for the target, so they are dropped; if the start fails,
    everything held back is printed before the error."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            caught.seek(0)
            sys.stderr.write(caught.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def num_classes_of(data_config, override: int = 0) -> int:
    """The class count of the config's dataset without reading it (--num_classes wins)."""
    if override:
        return override
    from fgvc_jax.data import config as data_config_lib  # imports jax: after the platform

    known = data_config_lib.known_num_classes(data_config)
    if known is None:
        raise ValueError(
            f"config.data.name={data_config.name!r}: its class count is unknown before the "
            "dataset is prepared; pass --num_classes"
        )
    return known


def target_devices(target: dict) -> list:
    """The devices of the target's topology (no device is needed)."""
    from jax.experimental import topologies

    if target["kind"] == "gpu":
        path = os.path.join(os.path.dirname(__file__), "targets", target["file"])
        with open(path) as f:
            topo = topologies.get_topology_desc(
                platform="cuda", target_config=f.read(), topology=target["topology"]
            )
    else:
        dims = [int(d) for d in target["topology"].split(":")[1].split("x")]
        kw = {}
        if len(dims) == 2 and dims[0] * dims[1] < 4:  # fewer chips than one host holds
            kw["chips_per_host_bounds"] = dims + [1]
        topo = topologies.get_topology_desc(target["topology"], "tpu", **kw)
    return list(topo.devices)


def _steps(config, mesh, num_classes: int):
    """{'train': (jitted step, abstract args), 'eval': (...)} of the run's recipe, built the
    trainer's way (`fgvc_jax.recipe.Recipe`): train batches of the recipe's host batch size
    (uncropped S×S when augmented on the device, else C×C), eval batches of eval crops.

    The learning-rate schedule is built for one step an epoch (the dataset's size is not
    read): its length changes constants of the program, not its shapes, memory or FLOPs."""
    import jax  # jax only after `prepare_environment` (it chooses the platform)
    import jax.numpy as jnp

    from fgvc_jax.recipe import Recipe
    from fgvc_jax.runtime import parallel

    recipe = Recipe(config, num_classes)
    tx = recipe.optimizer(steps_per_epoch=1)
    dat = parallel.data_sharded(mesh)

    def batch(n, size, **extra):
        b = {
            "image": jax.ShapeDtypeStruct((n, size, size, 3), jnp.uint8, sharding=dat),
            "label": jax.ShapeDtypeStruct((n,), jnp.int32, sharding=dat),
        }
        return b | {k: jax.ShapeDtypeStruct((n,), v, sharding=dat) for k, v in extra.items()}

    train_state = recipe.abstract_state(tx, mesh)
    eval_size = recipe.eval_image_shape[0]
    return {
        "train": (
            recipe.train_step(tx, mesh),
            (train_state, batch(recipe.batch_size, recipe.train_batch_size_px)),
        ),
        "eval": (
            recipe.eval_step(mesh),
            (train_state.variables(), batch(recipe.eval_batch_size, eval_size, mask=jnp.bool_)),
        ),
    }


def hlo_flops(lowered) -> float:
    """FLOPs of the whole (global) program: XLA's HLO cost analysis of the unoptimised
    module (before partitioning and fusion; library calls are still dots/convolutions)."""
    import jax
    from jax._src.lib import xla_client

    module = lowered.compiler_ir("hlo").get_hlo_module()
    cost = xla_client._xla.hlo_module_cost_analysis(jax.devices("cpu")[0].client, module)
    return float(cost["flops"])


def collectives(hlo_text: str) -> dict[str, int]:
    """Count of each collective op in a compiled module's text (async '-start' forms too).
    Instructions sharing a channel_id are one collective: libtpu copies an async one into
    every fusion that overlaps it (SwinFC's one all-gather appears 92 times)."""
    found = {}
    for line in hlo_text.splitlines():
        op = _COLLECTIVE_OP.search(line)
        if op:
            channel = _CHANNEL.search(line)
            found.setdefault(op.group(1), set()).add(channel.group(1) if channel else line)
    return {k: len(found[k]) for k in _COLLECTIVES if k in found}


def memory(compiled) -> dict[str, float]:
    """XLA's memory analysis of one device, GiB; peak = arguments + outputs + temporaries
    + code - aliased (donated buffers counted once)."""
    m = compiled.memory_analysis()
    out = {
        "arguments": m.argument_size_in_bytes,
        "outputs": m.output_size_in_bytes,
        "temporaries": m.temp_size_in_bytes,
        "aliased": m.alias_size_in_bytes,
        "code": m.generated_code_size_in_bytes,
    }
    out["peak"] = (
        out["arguments"] + out["outputs"] + out["temporaries"] + out["code"] - out["aliased"]
    )
    return {k: v / GIB for k, v in out.items()}


class DoesNotFit(ValueError):
    """The compiler refused the step: it needs more memory than the device has (the
    compiler's own message)."""


def compile_step(fn, args, target: dict, strict: bool) -> dict:
    """Lower and compile one step for the target; its figures."""
    start = time.perf_counter()
    lowered = fn.lower(*args)
    lower_s = time.perf_counter() - start
    note = ""
    start = time.perf_counter()
    try:
        compiled = lowered.compile()
    except Exception as e:  # XLA reports its errors as XlaRuntimeError / RuntimeError
        if "RESOURCE_EXHAUSTED" in str(e):  # libtpu refuses a program above the chip's HBM
            raise DoesNotFit(str(e).split("RESOURCE_EXHAUSTED: ")[-1].splitlines()[0]) from e
        if target["kind"] != "gpu" or strict or _TILE_ERROR not in str(e):
            raise
        note = (
            f"Triton GEMM turned off (--xla_gpu_enable_triton_gemm=false): deviceless, "
            f'it failed with "{_TILE_ERROR}" after {time.perf_counter() - start:.1f} s '
            "(a device's autotuner picks the tiles)"
        )
        start = time.perf_counter()  # the compile time reported is the one that succeeded
        compiled = lowered.compile(compiler_options={"xla_gpu_enable_triton_gemm": False})
    compile_s = time.perf_counter() - start
    return {
        "lower_s": lower_s,
        "compile_s": compile_s,
        "memory_gib": memory(compiled),
        "flops": hlo_flops(lowered),
        "collectives": collectives(compiled.as_text()),
        "triton_gemm": "off" if note else "default",
        "note": note,
    }


def analyse(
    config, target: dict, num_classes: int, which=("train", "eval"), strict: bool = False
) -> dict:
    """The report of `config` compiled for `target` (see the module docstring)."""
    from fgvc_jax.runtime import parallel

    devices = target_devices(target)
    mesh = parallel.make_mesh(devices)
    n = len(devices)
    batch = int(config.train.batch_size)
    if batch % n:
        raise ValueError(
            f"config.train.batch_size={batch} must be a multiple of the "
            f"{n} devices of --target={target['name']}"
        )
    steps = _steps(config, mesh, num_classes)
    report = {
        "target": target["name"],
        "device": devices[0].device_kind,
        "devices": n,
        "method": config.method.name,
        "dataset": config.data.name,
        "batch_size": batch,
        "image_size": int(config.data.crop),
        "dtype": config.train.dtype,
        "num_classes": num_classes,
        "peak_bf16_tflops_per_device": target["peak"],
        "steps": {},
    }
    for name in which:
        fn, args = steps[name]
        try:
            report["steps"][name] = compile_step(fn, args, target, strict)
        except DoesNotFit as e:
            raise DoesNotFit(
                f"the {name} step at global batch {batch} does not fit on "
                f"{target['name']}: {e} Lower --config.train.batch_size or use "
                "more devices."
            ) from None
    k = int(config.optim.accumulate)
    if k > 1 and "train" in report["steps"]:  # HloCostAnalysis costs a while body once
        s = report["steps"]["train"]
        s["note"] = "; ".join(
            filter(
                None,
                [
                    s["note"],
                    (
                        f"optim.accumulate={k}: the micro-batch loop's FLOPs are counted once, so the "
                        f"FLOPs are ~{k}x too low and the roofline ~{k}x too high"
                    ),
                ],
            )
        )
    if "train" in report["steps"]:
        flops = report["steps"]["train"]["flops"]
        report["train_gflops_per_image"] = flops / batch / 1e9
        report["roofline_images_per_s"] = batch / (flops / (n * target["peak"] * 1e12))
    return report


def format_report(r: dict) -> str:
    lines = [
        f"{r['method']} on {r['dataset']} ({r['num_classes']} classes): batch "
        f"{r['batch_size']} (global), {r['image_size']}px, {r['dtype']}; target "
        f"{r['target']}: {r['devices']} x {r['device']}"
    ]
    for name, s in r["steps"].items():
        m = s["memory_gib"]
        lines += [
            f"{name} step: lowered in {s['lower_s']:.1f} s, compiled in {s['compile_s']:.1f} s",
            f"  memory per device: arguments {m['arguments']:.2f} GiB, outputs "
            f"{m['outputs']:.2f} GiB, temporaries {m['temporaries']:.2f} GiB, aliased "
            f"{m['aliased']:.2f} GiB",
            f"  peak {m['peak']:.2f} GiB per device",
            f"  {s['flops'] / 1e12:.3f} TFLOP per step (all devices)",
            "  collectives: "
            + (", ".join(f"{k} x{v}" for k, v in s["collectives"].items()) or "none"),
        ]
        if s["note"]:
            lines.append(f"  note: {s['note']}")
    if "roofline_images_per_s" in r:
        lines.append(
            f"train: {r['train_gflops_per_image']:.1f} GFLOP per image; roofline at "
            f"{r['peak_bf16_tflops_per_device']:g} TFLOP/s dense bf16 per device: "
            f"at most {r['roofline_images_per_s']:.0f} images/s"
        )
    return "\n".join(lines)


def main(argv):
    import jax

    from fgvc_jax.tools import cli_common

    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    cli_common.quiet()  # no absl/JAX INFO lines ("Unable to initialize backend 'tpu'")
    with _without_missing_device_notices():
        jax.devices()  # the backends and plugins start here
    f = {k: v.value for k, v in _FLAGS.items()}
    config = f["config"]
    try:
        target = parse_target(f["target"])
        which = ("train", "eval") if f["steps"] == "both" else (f["steps"],)
        report = analyse(
            config, target, num_classes_of(config.data, f["num_classes"]), which, f["strict"]
        )
    except ValueError as e:
        _fail(str(e))
    print(json.dumps(report) if f["json"] else format_report(report))


def run():
    from fgvc_jax.tools import cli_common

    _define_flags()
    cli_common.exit_if_help(sys.argv)  # help needs no aot extra
    prepare_environment(sys.argv[1:])
    app.run(main)


if __name__ == "__main__":
    run()
