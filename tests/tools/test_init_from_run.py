"""`config.init.from_workdir`: a run starts from exactly the weights of an earlier run; a run of
another method, or weights of another shape, give one named error."""

from __future__ import annotations

import importlib

import jax
import numpy as np
import pytest

from fgvc_jax.loop.experiment import Experiment
from fgvc_jax.run import trained
from tests.tools import conftest


def _leaves(variables):
    return {
        jax.tree_util.keystr(k): np.asarray(v)
        for k, v in jax.tree_util.tree_leaves_with_path(jax.device_get(variables))
    }


def test_init_from_workdir_loads_exactly_its_weights(trained_run, tmp_path):
    config = conftest.make_config(str(tmp_path.parent / "unused"))
    config.data = trained_run.config.data
    config.init.from_workdir = trained_run.workdir
    config.seed = 123  # another init: every loaded weight must come from the run
    got = _leaves(Experiment(config).initial_variables())
    want = _leaves(trained.load(trained_run.workdir, trained_run.config, "best").variables)
    assert got.keys() == want.keys()
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)

    config.init.dont_load = "fc2"  # all but the head: fc2 keeps this run's initialisation
    partial = _leaves(Experiment(config).initial_variables())
    for k in want:
        same = np.array_equal(partial[k], want[k])
        assert same != ("fc2" in k), k


def test_init_from_another_method_or_shape_is_named(trained_run):
    config = importlib.import_module("configs.baseline_resnet").get_config("synthetic")
    config.data = trained_run.config.data
    config.init.from_workdir = trained_run.workdir
    with pytest.raises(
        ValueError, match="is a 'attention_cnn' run; this run's method is 'baseline_resnet'"
    ):
        Experiment(config).initial_variables()

    config = conftest.make_config("unused")
    config.data = trained_run.config.data
    config.method.hidden = 32  # fc1/fc2 change shape
    config.init.from_workdir = trained_run.workdir
    with pytest.raises(
        ValueError,
        match=r"params/fc1/kernel: run .* shape \(\d+, 64\), "
        r"method shape \(\d+, 32\)",
    ):
        Experiment(config).initial_variables()
