"""Backbone speed, JAX next to PyTorch in one run: forward and SGD train step of ResNet-50 and
Swin-T at 224, batch 8, fp32. Medians of repeats; compile time reported separately.

    python bench/backbones.py                    # the table (BENCHMARKS.md)
    python bench/backbones.py --sweep            # JAX ResNet-50 train step under XLA CPU flag sets
    python bench/backbones.py --breakdown        # where the ResNet-50 train step's time goes
    python bench/backbones.py --small-maps --batch 32   # convs whose kernel reaches past the map
    python bench/backbones.py --profile --repeats 3     # the JAX train steps' XLA work by kind

Device: JAX's default backend (CPU here; a GPU when jax[cuda] is installed: then add --bf16
to compare bf16 JAX with torch AMP).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

MODELS = {"resnet50": "resnet50", "swin_t": "swin_tiny_patch4_window7_224"}


def median_time(fn, repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def interleaved_medians(fns: dict, repeats: int, warmup: int) -> dict:
    """Median seconds of each callable, the repeats alternating between them so that any
    load on the machine falls on all of them alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def prepare_jax(arch: str, batch: int, size: int, bf16: bool) -> dict:
    """Compiled forward and train-step callables (blocking) and their compile times."""
    import jax
    import jax.numpy as jnp
    import optax

    from fgvc_jax.convert import build

    dtype = jnp.bfloat16 if bf16 else jnp.float32
    model = build(arch, 1000, dtype=dtype, **({"drop_path_rate": 0.1} if "swin" in arch else {}))
    x = jnp.asarray(np.random.default_rng(0).standard_normal((batch, size, size, 3)), jnp.float32)
    y = jnp.arange(batch) % 1000
    variables = model.init(jax.random.PRNGKey(0), x)
    params, stats = variables["params"], variables.get("batch_stats", {})
    tx = optax.sgd(0.01, momentum=0.9)
    opt_state = tx.init(params)

    def forward(params, stats, x):
        return model.apply({"params": params, "batch_stats": stats}, x, train=False)

    def train_step(params, stats, opt_state, x, y, rng):
        def loss_fn(p):
            logits, new = model.apply(
                {"params": p, "batch_stats": stats},
                x,
                train=True,
                mutable=["batch_stats"],
                rngs={"dropout": rng},
            )
            return optax.softmax_cross_entropy_with_integer_labels(
                logits.astype(jnp.float32), y
            ).mean(), new

        (loss, new), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), new.get("batch_stats", stats), opt_state, loss

    out = {}
    t0 = time.perf_counter()
    fwd = jax.jit(forward).lower(params, stats, x).compile()
    out["forward_compile_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    step = (
        jax.jit(train_step, donate_argnums=(0, 1, 2))
        .lower(params, stats, opt_state, x, y, jax.random.PRNGKey(1))
        .compile()
    )
    out["train_compile_s"] = time.perf_counter() - t0
    state = [params, stats, opt_state]  # the train step donates its inputs: always use the latest
    out["forward"] = lambda: fwd(state[0], state[1], x).block_until_ready()

    def run_step():
        p, s, o, loss = step(*state, x, y, jax.random.PRNGKey(1))
        state[:] = [p, s, o]
        loss.block_until_ready()

    out["train"] = run_step
    return out


def bench_jax(arch: str, batch: int, size: int, repeats: int, warmup: int, bf16: bool) -> dict:
    j = prepare_jax(arch, batch, size, bf16)
    t = interleaved_medians({"forward_s": j["forward"], "train_s": j["train"]}, repeats, warmup)
    return {
        **t,
        "forward_compile_s": j["forward_compile_s"],
        "train_compile_s": j["train_compile_s"],
    }


def prepare_torch(arch: str, batch: int, size: int, amp: bool, channels_last: bool = False) -> dict:
    """Forward and train-step callables of the PyTorch reference model."""
    from fgvc_jax.convert.torch_reference import torch, torch_model

    device = "cuda" if torch.cuda.is_available() else "cpu"
    kwargs = {"drop_path_rate": 0.1} if "swin" in arch else {}
    model = torch_model(arch, 1000, **kwargs).to(device)
    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.arange(batch, device=device) % 1000
    if channels_last:
        model, x = (
            model.to(memory_format=torch.channels_last),
            x.to(memory_format=torch.channels_last),
        )
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=amp)

    def forward():
        with torch.no_grad(), autocast:
            model.eval()(x)
        sync()

    def train_step():
        model.train()
        opt.zero_grad(set_to_none=True)
        with autocast:
            loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        sync()

    return {"forward": forward, "train": train_step}


def bench_torch(arch: str, batch: int, size: int, repeats: int, warmup: int, amp: bool) -> dict:
    t = prepare_torch(arch, batch, size, amp)
    return interleaved_medians({"forward_s": t["forward"], "train_s": t["train"]}, repeats, warmup)


def table(args) -> None:
    import jax

    from fgvc_jax.convert.torch_reference import torch

    print(
        f"# device: jax {jax.devices()[0].device_kind} x{jax.device_count()}, torch threads "
        f"{torch.get_num_threads()}, batch {args.batch}, {args.size}², {'bf16/AMP' if args.bf16 else 'fp32'}, "
        f"median of {args.repeats}, XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}"
    )
    print(
        f"{'model':10s} {'mode':8s} {'jax ms':>9s} {'torch ms':>9s} {'jax/torch':>9s} {'jax img/s':>10s} "
        f"{'torch img/s':>11s} {'jax compile s':>14s}"
    )
    for name in args.models.split(","):
        arch = MODELS[name]
        j = prepare_jax(arch, args.batch, args.size, args.bf16)
        fns = {}
        for side, prepared in [
            ("jax", j),
            ("torch", prepare_torch(arch, args.batch, args.size, args.bf16)),
        ] + (
            [("torch_cl", prepare_torch(arch, args.batch, args.size, args.bf16, True))]
            if "resnet" in arch and args.channels_last
            else []
        ):
            fns.update({(side, mode): prepared[mode] for mode in ("forward", "train")})
        med = interleaved_medians(fns, args.repeats, args.warmup)
        for side, suffix in [("torch", "")] + (
            [("torch_cl", " (torch channels_last)")] if ("torch_cl", "train") in med else []
        ):
            for mode in ("forward", "train"):
                js, ts = med[("jax", mode)], med[(side, mode)]
                print(
                    f"{name:10s} {mode:8s} {js * 1e3:9.1f} {ts * 1e3:9.1f} {js / ts:9.2f} {args.batch / js:10.1f} "
                    f"{args.batch / ts:11.1f} {j[f'{mode}_compile_s']:14.1f}{suffix}",
                    flush=True,
                )


SWEEP = {
    "default": "",
    "onednn": "--xla_cpu_use_onednn=true",
    "xnnpack": "--xla_cpu_use_xnnpack=true",
    "fast_math": "--xla_cpu_enable_fast_math=true",
    "no_thunk_runtime": "--xla_cpu_use_thunk_runtime=false",
}


def sweep(args) -> None:
    """The JAX ResNet-50 train step under each XLA flag set (fresh process each), torch once."""
    t = bench_torch("resnet50", args.batch, args.size, args.repeats, args.warmup, False)
    print(f"torch train step: {t['train_s'] * 1e3:.1f} ms")
    print(f"{'XLA flags':40s} {'jax train ms':>12s} {'jax/torch':>9s} {'compile s':>9s}")
    for label, flags in SWEEP.items():
        env = dict(os.environ, XLA_FLAGS=flags)
        code = (
            f"import json, sys; sys.path.insert(0, {ROOT!r}); from bench.backbones import bench_jax; "
            f"print(json.dumps(bench_jax('resnet50', {args.batch}, {args.size}, {args.repeats}, {args.warmup}, False)))"
        )
        r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        if r.returncode:
            print(f"{label + ' ' + flags:40s} failed: {r.stderr.strip().splitlines()[-1]}")
            continue
        j = json.loads(r.stdout.strip().splitlines()[-1])
        print(
            f"{label + ' ' + flags:40s} {j['train_s'] * 1e3:12.1f} {j['train_s'] / t['train_s']:9.2f} "
            f"{j['train_compile_s']:9.1f}",
            flush=True,
        )


def resnet50_convs(size: int) -> list[tuple[int, int, int, int, int]]:
    """(input H, Cin, Cout, kernel, stride) of every convolution of ResNet-50 at `size`."""
    shapes, h, cin = [(size, 3, 64, 7, 2)], size // 4, 64
    for i, n in enumerate((3, 4, 6, 3)):
        planes = 64 * 2**i
        for j in range(n):
            s = 2 if (i > 0 and j == 0) else 1
            shapes += [
                (h, cin, planes, 1, 1),
                (h, planes, planes, 3, s),
                (h // s, planes, planes * 4, 1, 1),
            ]
            if j == 0:
                shapes.append((h, cin, planes * 4, 1, s))
            cin, h = planes * 4, h // s
    return shapes


def breakdown(args) -> None:
    """Where the ResNet-50 train step's time goes: every convolution of the network, every
    BatchNorm+ReLU after one (train mode) and the stem max-pool, each timed alone (forward + input
    grad + weight grad), grouped by kind, JAX next to torch; 1x1 convolutions both as XLA
    convolutions and as the matmul the backbone uses."""
    import jax
    import jax.numpy as jnp

    from fgvc_jax.convert.torch_reference import torch

    def jax_conv(as_matmul, h, ci, co, k, s):
        x, w = jnp.ones((args.batch, h, h, ci)), jnp.full((k, k, ci, co), 0.01)

        def f(x, w):
            if as_matmul:
                return jnp.einsum("nhwc,cd->nhwd", x[:, ::s, ::s], w[0, 0]).sum()
            return jax.lax.conv_general_dilated(
                x, w, (s, s), [(k // 2, k // 2)] * 2, dimension_numbers=("NHWC", "HWIO", "NHWC")
            ).sum()

        g = jax.jit(jax.value_and_grad(f, argnums=(0, 1)))
        return median_time(lambda: jax.block_until_ready(g(x, w)), 3, 1)

    def torch_conv(h, ci, co, k, s):
        x = torch.ones(args.batch, ci, h, h, requires_grad=True)
        conv = torch.nn.Conv2d(ci, co, k, s, k // 2, bias=False)

        def f():
            conv.zero_grad()
            x.grad = None
            conv(x).sum().backward()

        return median_time(f, 3, 1)

    def jax_bn_relu(h, c):  # the backbone's BatchNorm (torch semantics), train mode
        from fgvc_jax.backbones.batch_norm import BatchNorm

        bn, x = BatchNorm(), jnp.ones((args.batch, h, h, c)) * jnp.linspace(0, 1, c)
        v = bn.init(jax.random.key(0), x, True)

        def f(p, x):
            y, _ = bn.apply({"params": p, **v}, x, True, mutable=["batch_stats"])
            return jax.nn.relu(y).sum()

        g = jax.jit(jax.grad(f, argnums=(0, 1)))
        return median_time(lambda: jax.block_until_ready(g(v["params"], x)), 3, 1)

    def torch_bn_relu(h, c):
        bn = torch.nn.BatchNorm2d(c).train()
        x = torch.ones(args.batch, c, h, h) * torch.linspace(0, 1, c)[None, :, None, None]
        x.requires_grad_()

        def f():
            bn.zero_grad()
            x.grad = None
            torch.relu(bn(x)).sum().backward()

        return median_time(f, 3, 1)

    def jax_stem_pool(h, c):
        import flax.linen as nn

        x = jnp.asarray(np.random.default_rng(0).random((args.batch, h, h, c), np.float32))
        pool = lambda x: nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1))).sum()
        g = jax.jit(jax.grad(pool))
        return median_time(lambda: jax.block_until_ready(g(x)), 3, 1)

    def torch_stem_pool(h, c):
        x = torch.rand(args.batch, c, h, h, requires_grad=True)

        def f():
            x.grad = None
            torch.nn.functional.max_pool2d(x, 3, 2, 1).sum().backward()

        return median_time(f, 3, 1)

    rows = {}

    def add(kind, jax_s, torch_s):
        r = rows.setdefault(kind, [0, 0.0, 0.0])
        r[0], r[1], r[2] = r[0] + 1, r[1] + jax_s, r[2] + torch_s

    for h, ci, co, k, s in resnet50_convs(args.size):
        t = torch_conv(h, ci, co, k, s)
        add(f"{k}x{k} conv", jax_conv(False, h, ci, co, k, s), t)
        if k == 1:
            add("1x1 as matmul", jax_conv(True, h, ci, co, k, s), t)
        add("BatchNorm+ReLU (train)", jax_bn_relu(h // s, co), torch_bn_relu(h // s, co))
    h = args.size // 2
    add("stem max-pool 3x3/2", jax_stem_pool(h, 64), torch_stem_pool(h, 64))
    j = bench_jax("resnet50", args.batch, args.size, args.repeats, args.warmup, False)
    t = bench_torch("resnet50", args.batch, args.size, args.repeats, args.warmup, False)
    print(
        f"ResNet-50's layers by kind, each timed alone, forward + input grad + weight grad, "
        f"batch {args.batch}, {args.size}², fp32"
    )
    print(f"{'':24s} {'count':>5s} {'jax ms':>9s} {'torch ms':>9s} {'jax/torch':>9s}")
    for kind, (n, jt, tt) in rows.items():
        print(f"{kind:24s} {n:5d} {jt * 1e3:9.1f} {tt * 1e3:9.1f} {jt / tt:9.2f}")
    print(
        f"{'whole train step':24s} {'':5s} {j['train_s'] * 1e3:9.1f} {t['train_s'] * 1e3:9.1f} "
        f"{j['train_s'] / t['train_s']:9.2f}"
    )


def profile(args) -> None:
    """The JAX train step of each of --models traced with `jax.profiler` over --repeats steps:
    XLA's thunks by kind (the fusion name without its number), time per step and share, from
    the trace's XLA threads. On the CPU: XNNPACK fusions (convolutions, matmuls), layout
    copies and transposes, reductions, elementwise fusions."""
    import collections
    import glob
    import re
    import tempfile

    import jax
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    for arch in args.models.split(","):
        step = prepare_jax(MODELS[arch], args.batch, args.size, args.bf16)["train"]
        for _ in range(args.warmup):
            step()
        folder = tempfile.mkdtemp(prefix="profile-")
        jax.profiler.start_trace(folder)
        for _ in range(args.repeats):
            step()
        jax.profiler.stop_trace()
        space = xplane_pb2.XSpace()
        (path,) = glob.glob(f"{folder}/**/*.xplane.pb", recursive=True)
        space.ParseFromString(open(path, "rb").read())
        ms, count = collections.Counter(), collections.Counter()
        for plane in space.planes:
            names = {k: v.name for k, v in plane.event_metadata.items()}
            for line in plane.lines:
                if line.name == "python":
                    continue
                for ev in line.events:
                    name = names.get(ev.metadata_id, "")
                    if not name or name.startswith(("ThunkExecutor", "$", "SlinkyThreadPool")):
                        continue
                    kind = re.sub(r"[._]\d+$", "", name)
                    ms[kind] += ev.duration_ps / 1e9 / args.repeats
                    count[kind] += 1
        total = sum(ms.values())
        print(
            f"{arch} train step, batch {args.batch}, {args.size}²: {total:.1f} ms of XLA work per step"
        )
        print(f"{'kind':32s} {'ms/step':>9s} {'share':>6s} {'count':>6s}")
        for kind, t in ms.most_common(15):
            print(f"{kind:32s} {t:9.1f} {100 * t / total:5.1f}% {count[kind] // args.repeats:6d}")


def small_maps(args) -> None:
    """Convolutions whose kernel reaches past the input (the CPU-size models' last stages):
    forward + input grad + weight grad through lax's convolution and through
    `backbones.conv` (the taps as matmuls), torch beside; then the whole ResNet-18 train step
    at 64 px with each (the backbone's conv swapped for lax's in one of them)."""
    import jax
    import jax.numpy as jnp

    from fgvc_jax.backbones import conv, resnet
    from fgvc_jax.convert.torch_reference import torch

    def grad_fn(f, h, ci, co, k, d):
        x, w = jnp.ones((args.batch, h, h, ci)), jnp.full((k, k, ci, co), 0.01)
        p = d * (k // 2)

        def loss(x, w):
            return f(
                x,
                w,
                (1, 1),
                [(p, p)] * 2,
                rhs_dilation=(d, d),
                dimension_numbers=("NHWC", "HWIO", "NHWC"),
            ).sum()

        g = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
        return lambda: jax.block_until_ready(g(x, w))

    def torch_fn(h, ci, co, k, d):
        x = torch.ones(args.batch, ci, h, h, requires_grad=True)
        m = torch.nn.Conv2d(ci, co, k, 1, d * (k // 2), dilation=d, bias=False)

        def f():
            m.zero_grad()
            x.grad = None
            m(x).sum().backward()

        return f

    print(
        f"Convolutions on small maps, forward + input grad + weight grad, batch {args.batch}, fp32"
    )
    print(
        f"{'map, kernel':32s} {'lax ms':>8s} {'taps ms':>8s} {'torch ms':>9s} {'lax/taps':>9s} {'taps/torch':>10s}"
    )
    for h, ci, co, k, d in [
        (2, 512, 512, 3, 1),
        (2, 256, 256, 3, 1),
        (4, 512, 512, 3, 2),
        (2, 128, 32, 3, 1),
        (4, 2, 1, 7, 1),
    ]:
        t = interleaved_medians(
            {
                "lax": grad_fn(jax.lax.conv_general_dilated, h, ci, co, k, d),
                "taps": grad_fn(conv.conv_general_dilated, h, ci, co, k, d),
                "torch": torch_fn(h, ci, co, k, d),
            },
            args.repeats,
            args.warmup,
        )
        name = f"{h}x{h}x{ci} -> {co}, {k}x{k}" + (f" dil {d}" if d > 1 else "")
        print(
            f"{name:32s} {t['lax'] * 1e3:8.1f} {t['taps'] * 1e3:8.1f} {t['torch'] * 1e3:9.1f} "
            f"{t['lax'] / t['taps']:9.1f} {t['taps'] / t['torch']:10.2f}"
        )
    steps = {}
    for name, f in (("taps", conv.conv_general_dilated), ("lax", jax.lax.conv_general_dilated)):
        resnet.conv_general_dilated = f  # what the backbone's Conv calls, at trace time
        steps[name] = prepare_jax("resnet18", args.batch, 64, False)["train"]
    resnet.conv_general_dilated = conv.conv_general_dilated
    steps["torch"] = prepare_torch("resnet18", args.batch, 64, False)["train"]
    t = interleaved_medians(steps, args.repeats, args.warmup)
    print(
        f"{'ResNet-18 train step, 64 px':32s} {t['lax'] * 1e3:8.1f} {t['taps'] * 1e3:8.1f} "
        f"{t['torch'] * 1e3:9.1f} {t['lax'] / t['taps']:9.1f} {t['taps'] / t['torch']:10.2f}"
    )


def main():
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--models", default="resnet50,swin_t")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--bf16", action="store_true", help="bf16 JAX vs torch AMP (bf16 autocast)")
    p.add_argument(
        "--channels_last", action="store_true", help="also torch channels_last for ResNet"
    )
    p.add_argument("--sweep", action="store_true")
    p.add_argument("--breakdown", action="store_true")
    p.add_argument("--small-maps", action="store_true")
    p.add_argument("--profile", action="store_true", help="the JAX train step's XLA work by kind")
    args = p.parse_args()
    if args.small_maps:
        return small_maps(args)
    if args.profile:
        return profile(args)
    sweep(args) if args.sweep else breakdown(args) if args.breakdown else table(args)


if __name__ == "__main__":
    main()
