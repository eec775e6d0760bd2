"""A run's recipe: config + class count → the method, its input shapes, variable shapes,
optimizer, train-state layout, batch sizes and EMA setting. Pure: it reads no dataset and no
file, so every entry point stands on it — the trainer (`loop.experiment.Experiment` = recipe +
data), `--mode eval`, the tools, `aot`, `compare` and bench/ — and each setting is derived
here once. The jitted steps: `recipe.train_step(tx, mesh)`, `recipe.eval_step(mesh)`.

Input shapes: the network is defined at the train crop C (`image_shape`); host training
batches are S×S when they are cropped on the device (the decoded cache), else C×C
(`train_batch_size_px`); evaluation batches are the eval crop (`eval_image_shape`).
"""

from __future__ import annotations

import functools

import jax.numpy as jnp
import ml_collections
import optax

from fgvc_jax.data import cache, pipeline, preprocess
from fgvc_jax.methods import registry
from fgvc_jax.methods.base import IMAGENET_MEAN, IMAGENET_STD
from fgvc_jax.recipe import lengths, optim
from fgvc_jax.recipe import train_state as state
from fgvc_jax.runtime import parallel

#: The compute dtypes (`config.train.dtype`); parameters always stay float32.
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
#: Metric families of an evaluation, each reported per score (every head and 'combined').
METRICS = ("top1", "top5", "mean_class")


def compute_dtype(config: ml_collections.ConfigDict):
    """The run's compute dtype, from `config.train.dtype`."""
    name = config.train.dtype
    if name not in DTYPES:
        raise ValueError(f"config.train.dtype={name!r}; valid: {', '.join(DTYPES)}")
    return DTYPES[name]


#: `config.data.normalization` → per-channel (mean, std) in [0, 1] units: 'imagenet', the
#: statistics of the backbones' ImageNet pretraining; 'half', mean = std = 0.5 (x ↦ 2x − 1,
#: as FBSD's code normalises).
NORMALIZATIONS = {"imagenet": (IMAGENET_MEAN, IMAGENET_STD), "half": ((0.5,) * 3, (0.5,) * 3)}


def normalization(config: ml_collections.ConfigDict) -> tuple[tuple, tuple]:
    """(mean, std) of `config.data.normalization` (configs written before the field:
    'imagenet'), what the method's images are normalised with."""
    name = config.data.get("normalization", "imagenet")
    if name not in NORMALIZATIONS:
        raise ValueError(f"config.data.normalization={name!r}; valid: {', '.join(NORMALIZATIONS)}")
    return NORMALIZATIONS[name]


#: `config.train.batch_norm`: train-mode BatchNorm statistics over the global batch, or over
#: each device's shard (PyTorch DDP's default; `fgvc_jax.backbones.batch_norm.per_device`).
BATCH_NORMS = ("global", "per_device")


def batch_norm(config: ml_collections.ConfigDict) -> str:
    """`config.train.batch_norm` ('global' for configs without the field)."""
    how = config.train.get("batch_norm", "global") if "train" in config else "global"
    if how not in BATCH_NORMS:
        raise ValueError(f"config.train.batch_norm={how!r}; valid: {', '.join(BATCH_NORMS)}")
    return how


def batch_norm_groups(config: ml_collections.ConfigDict, mesh) -> int:
    """How many slices of the batch train-mode BatchNorm takes its statistics over: 1
    ('global') or the device count of `mesh` ('per_device')."""
    return mesh.devices.size if batch_norm(config) == "per_device" else 1


def ema_decay(config: ml_collections.ConfigDict) -> float:
    """`config.train.ema_decay`; 0 = no EMA of the weights."""
    return float(config.train.get("ema_decay", 0.0))


def eval_batch_size(config: ml_collections.ConfigDict) -> int:
    """`config.train.eval_batch_size`, 0 meaning the train batch size."""
    return int(config.train.get("eval_batch_size", 0) or config.train.batch_size)


def init_source(config: ml_collections.ConfigDict) -> None:
    """At most one start: `init.resume_from` (a whole train state) excludes the weight
    sources `init.pretrained` and `init.from_workdir`."""
    init = config.get("init") or {}
    if init.get("resume_from") and (init.get("pretrained") or init.get("from_workdir")):
        given = [k for k in ("pretrained", "from_workdir") if init.get(k)]
        raise ValueError(
            f"config.init.resume_from goes on from another run's whole train state; "
            f"config.init.{given[0]} would be overwritten by it: leave it empty."
        )


def check(config: ml_collections.ConfigDict) -> None:
    """The settings that need no dataset: compute dtype, crops and resize modes, where the
    run starts from."""
    compute_dtype(config)
    init_source(config)
    normalization(config)
    batch_norm(config)
    preprocess.Augment.train(config.data)
    preprocess.Augment.eval(config.data)
    pipeline.sampling_power(config.data)


def check_batch_sizes(config: ml_collections.ConfigDict, mesh) -> None:
    """Both batch sizes split evenly over the devices of `mesh`, the train batch also into
    the `optim.accumulate` micro-batches."""
    batch = int(config.train.batch_size)
    parallel.check_batch_size(batch, mesh)
    parallel.check_batch_size(eval_batch_size(config), mesh, "train.eval_batch_size")
    accumulate, devices = config.optim.accumulate, mesh.devices.size
    if batch % (accumulate * devices):
        raise ValueError(
            f"config.train.batch_size={batch} must be a multiple of "
            f"config.optim.accumulate ({accumulate}) x devices ({devices})."
        )


class Recipe:
    """What `config` computes with for a dataset of `num_classes` classes (no I/O)."""

    def __init__(self, config: ml_collections.ConfigDict, num_classes: int):
        self.config, self.num_classes = config, int(num_classes)
        check(config)
        self.dtype = compute_dtype(config)
        self.method = registry.create(config.method, self.num_classes, self.dtype)
        self.method.mean, self.method.std = normalization(config)
        t = config.train
        self.batch_size = int(t.batch_size)
        self.eval_batch_size = eval_batch_size(config)
        self.ema = ema_decay(config) > 0
        crop = int(config.data.crop)
        self.image_shape = (crop, crop, 3)
        self.eval_image_shape = (int(config.data.eval_crop),) * 2 + (3,)
        self.train_batch_size_px = int(config.data.resize) if cache.applies(config.data) else crop

    @functools.cached_property
    def variable_shapes(self) -> dict:
        """Shapes and dtypes of the network's variables {'params', ['batch_stats']}."""
        return state.variable_shapes(self.method, self.image_shape, self.config.seed, self.dtype)

    def init_variables(self) -> dict:
        """Fresh variables of the network (the config's seed)."""
        return state.init_variables(self.method, self.image_shape, self.config.seed, self.dtype)

    def metric_names(self) -> list[str]:
        """Every evaluation metric this run reports ('top1/combined', 'ema/top1/main', ...)."""
        scores = state.score_names(self.method, self.image_shape, self.config.seed, self.dtype)
        names = [f"{m}/{s}" for m in METRICS for s in scores]
        return names + [f"ema/{n}" for n in names] if self.ema else names

    def check_best_metric(self) -> None:
        """`config.train.best_metric` names a metric of this run (checked before any work)."""
        best, valid = self.config.train.best_metric, self.metric_names()
        if best not in valid:
            raise ValueError(f"config.train.best_metric={best!r}; valid: {', '.join(valid)}")

    def num_steps(self, steps_per_epoch: int) -> int:
        """The run's length in steps (`train.num_steps`, or `num_epochs` rounded up)."""
        return lengths.steps("num", self.config.train, steps_per_epoch, round_up=True)

    def optimizer(self, steps_per_epoch: int) -> optax.GradientTransformation:
        """The optax chain of `config.optim` with schedules over this run's length."""
        return optim.create_optimizer(
            self.config.optim,
            self.variable_shapes["params"],
            self.method.param_groups(),
            total_steps=max(self.num_steps(steps_per_epoch), 1),
            steps_per_epoch=steps_per_epoch,
        )

    def abstract_state(self, tx: optax.GradientTransformation, mesh) -> state.TrainState:
        """The train state's shapes, dtypes and shardings (what checkpoints restore into)."""
        return state.abstract_state(tx, self.variable_shapes, mesh, self.ema)

    def create_state(self, tx: optax.GradientTransformation, variables: dict, mesh):
        """The train state at step 0 around `variables`, replicated over `mesh`."""
        return state.create_train_state(tx, variables, mesh, self.ema)

    def train_step(self, tx: optax.GradientTransformation, mesh):
        """The trainer's jitted train step (`loop.step.make_train_step`)."""
        from fgvc_jax.loop import step  # the loop stands on the recipe: imported on use

        return step.make_train_step(self.method, tx, self.config, mesh)

    def eval_step(self, mesh):
        """The trainer's jitted eval step (`loop.step.make_eval_step`)."""
        from fgvc_jax.loop import step

        return step.make_eval_step(self.method, mesh)
