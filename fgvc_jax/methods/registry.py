"""Methods by name, and each method's config fields with the METHODS.md defaults.

`default_config(name, size)` gives `size='full'` (the paper: ResNet-50 at 448, Swin-B at 384)
or `size='cpu'` (the same code at 64 px with a ResNet-18 or a small Swin: embed 32, depths
2-2-2-2, heads 1-2-4-8, window 4), for the quick start and the tests."""
from __future__ import annotations

import ml_collections

from fgvc_jax.methods.attention_cnn import AttentionCNNMethod
from fgvc_jax.methods.base import Method
from fgvc_jax.methods.baseline import Baseline
from fgvc_jax.methods.cra_smra import CRASMRA
from fgvc_jax.methods.ma_ea import MAEAMethod
from fgvc_jax.methods.swinfc import SwinFC

METHODS = {
    "baseline_resnet": Baseline,
    "baseline_swin": Baseline,
    "ma_ea": MAEAMethod,
    "cra_smra": CRASMRA,
    "swinfc": SwinFC,
    "attention_cnn": AttentionCNNMethod,
}
SIZES = ("full", "cpu")

_CPU_SWIN = dict(embed_dim=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8), window_size=4)


def _resnet(size: str, **fields) -> dict:
    full = size == "full"
    return dict(backbone="resnet50" if full else "resnet18", image_size=448 if full else 64,
                stem_pool="max", dilate_conv5=False, **fields)


def _swin(size: str, **fields) -> dict:
    full = size == "full"
    return dict(backbone="swin_base_patch4_window12_384" if full else "swin_tiny_patch4_window7_224",
                image_size=384 if full else 64, drop_path_rate=0.0,
                backbone_overrides={} if full else dict(_CPU_SWIN), **fields)


def _fields(name: str, size: str) -> dict:
    full = size == "full"
    if name == "baseline_resnet":
        return _resnet(size)
    if name == "baseline_swin":
        return _swin(size)
    if name == "ma_ea":
        f = _resnet(size, ma_stages=("conv4_x", "conv5_x"), ma_reduction=16, ma_residual=True,
                    erase="soft", erase_theta=0.8, erase_rounds=1, ma_in_trunk=False,
                    branch_weight=1.0)
        f["stem_pool"] = "multiscale"
        return f
    if name == "cra_smra":
        return _resnet(size, cram_reduction=16, cram_mid=512 if full else 64,
                       cram_out=1024 if full else 128, head_hidden=512 if full else 64,
                       omega=0.5, delta=0.9, suppress_at_eval=False, alpha=2.0, beta=1.0,
                       gamma=1.0)
    if name == "swinfc":
        return _swin(size, proj_dim=1024 if full else 64, ea_memory=64 if full else 16,
                     use_ea=True, use_ca=True, use_ffm=True, use_fsm=True,
                     stage_weights=(0.4, 0.6, 0.8), con_margin=0.4, con_weight=1.0)
    if name == "attention_cnn":  # one size: it is the CPU model
        return dict(image_size=64, widths=(64, 128, 256), hidden=512, dropout=0.5)
    raise AssertionError(name)


def _check_name(name: str) -> None:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; valid methods: {', '.join(sorted(METHODS))}")


def default_config(name: str, size: str = "full") -> ml_collections.ConfigDict:
    """The config of method `name` with every METHODS.md choice at its default."""
    _check_name(name)
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r} for method {name!r}; valid: {', '.join(SIZES)}")
    return ml_collections.ConfigDict(dict(name=name, size=size, dtype="float32",
                                          label_smoothing=0.0, **_fields(name, size)))


def create(config: ml_collections.ConfigDict, num_classes: int) -> Method:
    """The Method named by `config.name`. Fields the method does not know are an error."""
    name = config.get("name", None)
    _check_name(name)
    known = set(default_config(name, config.get("size", "full")))
    extra = sorted(set(config) - known)
    if extra:
        raise ValueError(f"method {name!r} has no config field(s) {extra}; "
                         f"valid fields: {', '.join(sorted(known))}")
    return METHODS[name](config, num_classes)
