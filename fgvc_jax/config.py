"""What every config shares: the layout (seed, method, data, optim, train, init), the dataset
argument of `configs/<method>.py:<arg>`, and the CPU-sized `synthetic` variant (big_vision's
`runlocal`).

A method's file (`configs/<method>.py`, the user-facing path) calls
`make_config(method, arg, recipe)` with its paper's recipe; `arg` is a dataset name or
`synthetic` (the CPU-sized model on `synthetic_fgvc`, minutes on a laptop).
"""

from __future__ import annotations

import importlib.util
import os

import ml_collections

from fgvc_jax import data as data_lib
from fgvc_jax.methods import registry
from fgvc_jax.suggest import did_you_mean

# Config argument → data.NAMES entry. `synthetic` also picks the method's CPU size.
DATASETS = {
    "synthetic": "synthetic_fgvc",
    **{n: n for n in data_lib.NAMES if n != "synthetic_fgvc"},
}


def dataset_name(arg: str | None, method: str) -> str:
    """The data name of a config argument, or one clear error listing the valid ones."""
    if arg is None:
        raise ValueError(
            f"--config configs/{method}.py needs a dataset: --config "
            f"configs/{method}.py:<dataset>, <dataset> one of {', '.join(DATASETS)}."
        )
    if arg not in DATASETS:
        raise ValueError(
            f"configs/{method}.py: unknown dataset {arg!r}; valid: "
            f"{', '.join(DATASETS)} (e.g. --config configs/{method}.py:cub)."
            + did_you_mean(arg, DATASETS)
        )
    return DATASETS[arg]


def sibling(config_file: str, name: str):
    """The config module `<name>.py` beside `config_file` (e.g. baseline_swin uses swinfc's
    recipe), loaded by path: configs need no sys.path entry."""
    path = os.path.join(os.path.dirname(os.path.abspath(config_file)), f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"fgvc_jax_config_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def optim_config(**overrides) -> ml_collections.ConfigDict:
    """Optimizer defaults: SGD momentum 0.9 (PyTorch semantics), cosine, no warmup."""
    c = dict(
        name="sgd",
        momentum=0.9,
        nesterov=False,
        b1=0.9,
        b2=0.999,
        eps=1e-8,
        weight_decay=5e-4,
        wd_mask=r".*",  # regex of parameter paths that get weight decay
        lr={"backbone": 1e-3, "new": 1e-2},  # peak lr per Method.param_groups() group
        schedule="cosine",
        end_factor=0.0,
        warmup_steps=0,
        warmup_epochs=0.0,
        clip_norm=0.0,  # global-norm clipping; 0 = off
        # no update of the groups `freeze_groups` (Method.param_groups names) in the first
        # `freeze_steps` steps: PyTorch's requires_grad=False (timm.utils.freeze, the FGVC
        # repos' frozen-backbone warm-up); no momentum/Adam moments nor weight decay for them
        # until then (then a fresh optimizer state); the lr schedules count on; BatchNorm
        # statistics still update (timm.utils.freeze also freezes those by default). 0 = off
        freeze_steps=0,
        freeze_groups=("backbone",),
        accumulate=1,
    )  # micro-batches per step (paper batch on fewer devices)
    c.update(overrides)
    return ml_collections.ConfigDict(c)


def train_config(**overrides) -> ml_collections.ConfigDict:
    c = dict(
        batch_size=32,  # global batch over all devices of all processes
        eval_batch_size=0,  # 0 = batch_size
        num_epochs=100.0,
        num_steps=0,  # > 0 overrides num_epochs
        eval_every_epochs=10.0,
        eval_every_steps=0,  # > 0 overrides eval_every_epochs
        log_every=50,
        checkpoint_every=1000,
        keep=3,
        dtype="float32",  # compute dtype: float32 | bfloat16 (params stay float32)
        # train-mode BatchNorm statistics: "global" (the global batch) | "per_device" (each
        # device's shard, PyTorch DDP's default; docs/running_at_scale.md)
        batch_norm="global",
        ema_decay=0.0,  # EMA of the weights (e.g. 0.9998); 0 = off. Evaluated
        # as 'ema/...' next to the raw weights; the tools use it
        best_metric="top1/combined",
        # > 0: stop after that many evaluations in a row whose `best_metric` (on the split the
        # best checkpoint is chosen on) is not above the best so far + `early_stop_min_delta`,
        # then evaluate as at the end (eval.json's `early_stopped_at`); Keras'/Lightning's
        # EarlyStopping(patience, min_delta). 0 = off
        early_stop_patience=0,
        early_stop_min_delta=0.0,
        # a Weights & Biases project to log every scalar to beside TensorBoard ('' = off);
        # WANDB_MODE=offline writes <workdir>/wandb/ without an account (run/wandb_writer.py)
        wandb_project="",
        profile_steps=0,  # > 0: a jax.profiler trace of that many steps after the first log
        # window into <workdir>/profile/ (fgvc_jax/loop/profile.py)
    )
    c.update(overrides)
    return ml_collections.ConfigDict(c)


#: The `synthetic` run's length and logging (overridable per method by `synthetic['train']`).
SYNTHETIC_TRAIN = dict(
    batch_size=32,
    num_steps=300,
    eval_every_steps=0,
    eval_every_epochs=0.0,
    log_every=25,
    checkpoint_every=100,
)


def make_config(
    method: str,
    arg: str | None,
    *,
    data: dict,
    optim: dict,
    train: dict,
    synthetic: dict | None = None,
    method_fields: dict | None = None,
    dont_load: str = "",
) -> ml_collections.ConfigDict:
    """The full config of `method` on dataset `arg` with the given recipe.

    `data`/`optim`/`train`: the paper's recipe (overrides of the defaults above);
    `synthetic`: overrides for the CPU-sized variant ({'data':..., 'optim':..., 'train':...}),
    on top of `SYNTHETIC_TRAIN`.
    """
    name = dataset_name(arg, method)
    cpu = arg == "synthetic"
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.method = registry.default_config(method, "cpu" if cpu else "full")
    for k, v in (method_fields or {}).items():
        config.method[k] = v
    config.data = data_lib.default_config(name)
    if not cpu:
        config.data.update(data)
    if "image_size" in config.method:
        config.data.crop = config.method.get_ref("image_size")
        config.data.eval_crop = config.method.get_ref("image_size")
    config.optim = optim_config(**optim)
    config.train = train_config(**train)
    config.init = ml_collections.ConfigDict(
        dict(
            pretrained="",  # file, converted dir, timm:<name>, torchvision:<enum>; "" = scratch
            from_workdir="",  # an earlier run of this library: start from its weights
            # a checkpoint of another workdir (<workdir>/checkpoints/<step>): go on from its
            # step with its weights, optimizer state and EMA (timm's --resume)
            resume_from="",
            dont_load=dont_load,
        )
    )  # regex of paths not to load (e.g. '^backbone/fc/'; with
    # from_workdir, '^(?!backbone/)' loads the backbone only, 'head' all but the heads)
    if cpu:
        config.train.update(SYNTHETIC_TRAIN)
        for section, fields in (synthetic or {}).items():
            config[section].update(fields)
    return config
