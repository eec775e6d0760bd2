"""What a run is, built once from its config: the prepared dataset, the method, the device
mesh, the batch sizes and the run lengths in steps; its iterators, optimizer and initial
variables. The trainer's loop, `--mode eval` and the benchmarks start from here."""

from __future__ import annotations

import ml_collections
import optax

from fgvc_jax.data import datasets, splits
from fgvc_jax.loop import lengths, optim, state
from fgvc_jax.run import checkpoints as ckpt_lib
from fgvc_jax.runtime import parallel


def _prepare_data(data, config: ml_collections.ConfigDict):
    """`data.prepare` on process 0 first (it may build the dataset into a shared data_dir),
    then on the others once it is there."""
    import jax

    if jax.process_count() == 1:
        return data.prepare(config)
    from jax.experimental import multihost_utils

    info = data.prepare(config) if jax.process_index() == 0 else None
    multihost_utils.sync_global_devices("fgvc_jax:prepare_data")
    return info if info is not None else data.prepare(config)


class Experiment:
    """The run of `config`: `info` (dataset), `method`, `mesh`, `dtype`, `batch_size`,
    `eval_batch_size`, `steps_per_epoch`, `num_steps`, `eval_every` (steps; 0 = never)."""

    def __init__(self, config: ml_collections.ConfigDict):
        from fgvc_jax import data
        from fgvc_jax.data import preprocess

        self.config, self.data = config, data
        self.dtype = state.compute_dtype(config)
        preprocess.Augment.train(config.data)  # crop/resize/mode checked before any work
        preprocess.Augment.eval(config.data)
        self.mesh = parallel.make_mesh()
        t = config.train
        self.batch_size = t.batch_size
        self.eval_batch_size = t.get("eval_batch_size", 0) or self.batch_size
        parallel.check_batch_size(self.batch_size, self.mesh)
        parallel.check_batch_size(self.eval_batch_size, self.mesh, "train.eval_batch_size")
        if self.batch_size % (config.optim.accumulate * self.mesh.devices.size):
            raise ValueError(
                f"config.train.batch_size={self.batch_size} must be a multiple of "
                f"config.optim.accumulate ({config.optim.accumulate}) x devices "
                f"({self.mesh.devices.size})."
            )
        self.info = _prepare_data(data, config.data)
        self.method = state.create_method(config, self.info.num_classes)
        self.splits = splits.resolve(config.data)
        self.fit_size = splits.size(
            self.splits.fit,
            self.info.num_examples,
            lambda: datasets.data_source(config.data, self.splits.fit),
        )
        self.steps_per_epoch = lengths.steps_per_epoch(self.fit_size, self.batch_size)
        self.num_steps = lengths.steps("num", t, self.steps_per_epoch, round_up=True)
        self.eval_every = lengths.steps("eval_every", t, self.steps_per_epoch)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """The network's input (H, W, 3): the train crop."""
        return (int(self.config.data.crop),) * 2 + (3,)

    def train_iterator(self, start_step: int):
        """Batches of the fit split from `start_step` on."""
        fit = ml_collections.ConfigDict(self.config.data.to_dict())
        fit.train_split = self.splits.fit
        return self.data.train_iterator(
            fit, global_batch_size=self.batch_size, seed=self.config.seed, start_step=start_step
        )

    def eval_iterator(self, which: str = "test"):
        """Padded batches of the 'val' split (the test split when there is none: the papers'
        protocol) or the 'test' split."""
        split = self.splits.val if which == "val" and self.splits.val else self.splits.test
        return self.data.eval_iterator(
            self.config.data, split=split, global_batch_size=self.eval_batch_size
        )

    def variable_shapes(self) -> dict:
        return state.variable_shapes(self.method, self.image_shape, self.config.seed, self.dtype)

    def check_best_metric(self) -> None:
        """`config.train.best_metric` names an evaluation metric of this method (checked at
        the start, not at the first evaluation)."""
        names = state.score_names(self.method, self.image_shape, self.config.seed, self.dtype)
        valid = [f"{m}/{s}" for m in ("top1", "top5", "mean_class") for s in names]
        if self.config.train.get("ema_decay", 0.0) > 0:
            valid += [f"ema/{v}" for v in valid]
        if self.config.train.best_metric not in valid:
            raise ValueError(
                f"config.train.best_metric={self.config.train.best_metric!r}; "
                f"valid: {', '.join(valid)}"
            )

    def initial_variables(self) -> dict:
        """Fresh variables, with what `config.init` names: an earlier run of this library
        (`from_workdir`: all its weights but those `dont_load` matches, strictly by name and
        shape) or a pretrained backbone (`pretrained`)."""
        import jax

        from fgvc_jax.methods.pretrained import merge_variables

        variables = state.init_variables(
            self.method, self.image_shape, self.config.seed, self.dtype
        )
        init = self.config.init
        source = init.get("from_workdir") or ""
        if source:
            loaded, their = state.run_variables(source, self.mesh)
            ours = self.config.method.name
            if their.method.name != ours:
                raise ValueError(
                    f"config.init.from_workdir={source!r} is a {their.method.name!r}"
                    f" run; this run's method is {ours!r}: its weights do not fit."
                )
            return merge_variables(
                jax.device_get(variables),
                jax.device_get(loaded),
                dont_load=init.get("dont_load", ""),
                source_name=f"run {source}",
            )
        if init.get("pretrained"):
            variables = ckpt_lib.load_pretrained(
                variables,
                init.pretrained,
                arch=self.method.backbone_arch,
                dont_load=init.get("dont_load", ""),
                backbone_kwargs=self.method.backbone_kwargs,
            )
        return variables

    def optimizer(self, params) -> optax.GradientTransformation:
        return optim.create_optimizer(
            self.config.optim,
            params,
            self.method.param_groups(),
            total_steps=self.num_steps,
            steps_per_epoch=self.steps_per_epoch,
        )
