"""python -m fgvc_jax.convert --arch swin_base_patch4_window12_384 --src FILE --out DIR [--check]

Converts torchvision (ResNet, DenseNet) / timm / official-Swin weights to an orbax checkpoint
of flax variables. With --check (needs torch) it also prints the per-stage max abs difference
against the PyTorch model on a random input."""

import argparse
import importlib.util
import sys
import time

import numpy as np

from fgvc_jax.convert import store
from fgvc_jax.convert.archs import ARCHS, build, convert_state_dict, densenet_key
from fgvc_jax.convert.source import ConversionError, read_state_dict


def check(arch: str, sd: dict, variables: dict, num_classes: int, img_size: int) -> None:
    import torch

    from fgvc_jax.convert import torch_reference as ref

    tmodel = ref.torch_model(arch, num_classes=num_classes or 1000).eval()
    if num_classes == 0:
        if hasattr(tmodel, "reset_classifier"):
            tmodel.reset_classifier(0)
        else:
            name = "classifier" if arch.startswith("densenet") else "fc"
            setattr(tmodel, name, torch.nn.Identity())
    if arch.startswith("densenet"):
        sd = {densenet_key(k): v for k, v in sd.items()}
    missing, unexpected = tmodel.load_state_dict(
        {
            k: torch.from_numpy(v)
            for k, v in ref.timm.models.swin_transformer.checkpoint_filter_fn(sd, tmodel).items()
        }
        if arch.startswith("swin")
        else {k: torch.from_numpy(v) for k, v in sd.items()},
        strict=False,
    )
    x = np.random.default_rng(0).standard_normal((2, img_size, img_size, 3)).astype(np.float32)
    theirs = ref.torch_stages(tmodel, x)
    ours = ref.jax_stages(build(arch, num_classes), variables, x)
    print(f"{'output':8s} {'shape':>22s} {'max|ref|':>10s} {'max abs diff':>13s} {'relative':>10s}")
    for k, v in theirs.items():
        d = float(np.max(np.abs(np.asarray(ours[k]) - v)))
        print(
            f"{k:8s} {str(v.shape):>22s} {np.max(np.abs(v)):10.4g} {d:13.3e} {d / np.max(np.abs(v)):10.3e}"
        )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m fgvc_jax.convert",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--arch", required=True, choices=ARCHS)
    p.add_argument("--src", required=True, help="torchvision/timm/official .pth or .safetensors")
    p.add_argument("--out", required=True, help="output directory (orbax checkpoint)")
    p.add_argument(
        "--num_classes",
        default="keep",
        help="'keep' the checkpoint's classifier, or 0 to drop it (default: keep)",
    )
    p.add_argument(
        "--check", action="store_true", help="compare with the PyTorch model (needs torch)"
    )
    args = p.parse_args(argv)
    if args.check and importlib.util.find_spec("torch") is None:
        print("error: --check needs torch, torchvision and timm: run `make dev`.", file=sys.stderr)
        return 2
    num_classes = None if args.num_classes == "keep" else int(args.num_classes)
    t0 = time.time()
    try:
        sd = read_state_dict(args.src)
        variables = convert_state_dict(args.arch, sd, num_classes)
    except ConversionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    params = variables["params"]
    head = params.get("fc") or params.get("classifier") or params.get("head", {}).get("fc")
    n = 0 if head is None else int(head["kernel"].shape[1])
    out = store.save(args.out, variables, {"arch": args.arch, "src": args.src, "num_classes": n})
    print(f"wrote {out} ({len(sd)} source tensors, {n} classes) in {time.time() - t0:.1f} s")
    if args.check:
        model = build(args.arch, n)
        check(args.arch, sd, variables, n, getattr(model, "img_size", 224))
    return 0


if __name__ == "__main__":
    sys.exit(main())
