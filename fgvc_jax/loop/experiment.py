"""What a run is: its recipe (`fgvc_jax.recipe`, pure) with the prepared dataset, the
device mesh and the run lengths in steps; its iterators, optimizer and initial variables.
The trainer's loop and `--mode eval` start from here."""

from __future__ import annotations

import jax
import ml_collections
import optax
from jax.experimental import multihost_utils

from fgvc_jax import data
from fgvc_jax import recipe as recipe_lib
from fgvc_jax.convert.pretrained import load_pretrained, merge_variables
from fgvc_jax.data import datasets, splits
from fgvc_jax.recipe import lengths
from fgvc_jax.run import trained
from fgvc_jax.runtime import parallel


def _prepare_data(data, config: ml_collections.ConfigDict):
    """`data.prepare` on process 0 first (it may build the dataset into a shared data_dir),
    then on the others once it is there."""
    if jax.process_count() == 1:
        return data.prepare(config)
    info = data.prepare(config) if jax.process_index() == 0 else None
    multihost_utils.sync_global_devices("fgvc_jax:prepare_data")
    return info if info is not None else data.prepare(config)


class Experiment:
    """The run of `config`: its `recipe` (method, shapes, optimizer: `fgvc_jax.recipe`) with
    the prepared dataset (`info`, `splits`), the device `mesh` and the run lengths in steps
    (`steps_per_epoch`, `num_steps`, `eval_every`; 0 = never)."""

    def __init__(self, config: ml_collections.ConfigDict):
        recipe_lib.check(config)  # dtype and augmentation: before any work
        self.config, self.data = config, data
        self.mesh = parallel.make_mesh()
        recipe_lib.check_batch_sizes(config, self.mesh)
        self.info = _prepare_data(data, config.data)
        self.recipe = recipe_lib.Recipe(config, self.info.num_classes)
        self.method = self.recipe.method
        self.batch_size, self.eval_batch_size = self.recipe.batch_size, self.recipe.eval_batch_size
        self.splits = splits.resolve(config.data)
        self.fit_size = splits.size(
            self.splits.fit,
            self.info.num_examples,
            lambda: datasets.data_source(config.data, self.splits.fit),
        )
        self.steps_per_epoch = lengths.steps_per_epoch(self.fit_size, self.batch_size)
        self.num_steps = self.recipe.num_steps(self.steps_per_epoch)
        self.eval_every = lengths.steps("eval_every", config.train, self.steps_per_epoch)

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

    def initial_variables(self) -> dict:
        """Fresh variables, with what `config.init` names: an earlier run of this library
        (`from_workdir`: all its weights but those `dont_load` matches, strictly by name and
        shape) or a pretrained backbone (`pretrained`)."""
        variables = self.recipe.init_variables()
        init = self.config.init
        source = init.get("from_workdir") or ""
        if source:
            try:
                their = trained.load(source)
            except trained.ToolError as e:
                raise ValueError(f"config.init.from_workdir={source!r}: {e}") from None
            ours, theirs = self.config.method.name, their.config.method.name
            if theirs != ours:
                raise ValueError(
                    f"config.init.from_workdir={source!r} is a {theirs!r}"
                    f" run; this run's method is {ours!r}: its weights do not fit."
                )
            return merge_variables(
                jax.device_get(variables),
                jax.device_get(their.variables),
                dont_load=init.get("dont_load", ""),
                source_name=f"run {source}",
            )
        if init.get("pretrained"):
            variables = load_pretrained(
                variables,
                init.pretrained,
                arch=self.method.backbone_arch,
                dont_load=init.get("dont_load", ""),
                backbone_kwargs=self.method.backbone_kwargs,
            )
        return variables

    def optimizer(self) -> optax.GradientTransformation:
        """The recipe's optimizer over this run's length."""
        return self.recipe.optimizer(self.steps_per_epoch)
