"""A method from outside the package, added the public way: a method file that calls
`registry.register` and a config file, written into a temporary folder, are all the registry,
the CLI's messages and the trainer need."""

import importlib
import json
import os
import subprocess
import sys

import pytest

from fgvc_jax.methods import registry
from fgvc_jax.reference import registry as twins
from tests.train import cli

METHOD_FILE = """
import flax.linen as nn
import jax.numpy as jnp

from fgvc_jax.methods import losses, registry
from fgvc_jax.methods.base import Method, Outputs


class ToyNet(nn.Module):
    num_classes: int
    width: int
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, images, train: bool = False, explain: bool = False):
        x = nn.Conv(self.width, (3, 3), strides=2, dtype=self.dtype, name="conv")(images)
        x = nn.relu(x).mean(axis=(1, 2))
        logits = {"main": nn.Dense(self.num_classes, dtype=self.dtype, name="head")(x)}
        return Outputs(logits=logits, aux={"maps": {}} if explain else {})


class Toy(Method):
    @classmethod
    def defaults(cls, size):
        return dict(image_size=64, width=8 if size == "cpu" else 32)

    @property
    def network(self):
        return ToyNet(self.num_classes, self.config.width, self.dtype)

    def loss(self, outputs, labels, targets=None):
        ce = losses.cross_entropy(
            outputs.logits["main"], labels, self.config.label_smoothing, targets
        )
        return ce, {"ce_main": ce}

    def param_groups(self):
        return {"new": r".*"}


registry.register("toy", Toy)
"""

CONFIG_FILE = """
import toy_method  # registers 'toy'

from fgvc_jax import config as common


def get_config(arg=None):
    return common.make_config(
        "toy",
        arg,
        data=dict(),
        optim=dict(name="adamw", weight_decay=0.0, lr={"new": 3e-3}),
        train=dict(batch_size=8, num_epochs=1.0),
    )
"""


@pytest.fixture
def toy(tmp_path, monkeypatch):
    """The toy method imported from tmp_path (registered into a copy of the registry, so
    that the other tests' sweeps do not see it); returns the config file's path."""
    (tmp_path / "toy_method.py").write_text(METHOD_FILE)
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "toy.py").write_text(CONFIG_FILE)
    monkeypatch.setattr(registry, "METHODS", dict(registry.METHODS))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "toy_method", raising=False)
    importlib.import_module("toy_method")
    yield tmp_path / "configs" / "toy.py"
    sys.modules.pop("toy_method", None)


def test_a_registered_method_is_known_to_the_registry(toy):
    assert "toy" in registry.METHODS
    cfg = registry.default_config("toy", "cpu")
    assert (cfg.name, cfg.width, cfg.image_size) == ("toy", 8, 64)
    method = registry.create(cfg, 5)
    assert method.network.width == 8 and method.num_classes == 5
    assert registry.has_paper_size("toy")
    with pytest.raises(ValueError, match=r"valid methods: .*\btoy\b"):
        registry.default_config("nope")
    # It has no PyTorch twin: the twin sweep (test_every_method_names_its_twin) would fail.
    with pytest.raises(ValueError, match="no PyTorch twin for method 'toy'"):
        twins.twin_class("toy")


def test_a_name_is_registered_once(toy):
    with pytest.raises(ValueError, match="'toy' is already registered as toy_method.Toy"):
        registry.register("toy", registry.METHODS["baseline_resnet"])
    with pytest.raises(TypeError, match="not a Method subclass"):
        registry.register("other", object)
    registry.register("toy", registry.METHODS["toy"])  # the same class again: no change


def test_the_cli_lists_its_config(toy, capsys):
    from fgvc_jax import main

    with pytest.raises(SystemExit) as e:
        main.check_command_line(["--workdir", "w", "--config", f"{toy.parent}/nope.py:synthetic"])
    assert e.value.code == 2
    assert f"valid: {toy}" in capsys.readouterr().err


def test_the_trainer_runs_it(toy, tmp_path):
    args = cli.tiny_args("toy", tmp_path / "w", tmp_path / "tfds", "--config.train.num_steps=3")
    args[args.index("configs/toy.py:synthetic")] = f"{toy}:synthetic"
    env = cli.env()
    env["PYTHONPATH"] += os.pathsep + str(toy.parent.parent)
    out = subprocess.run(args, cwd=cli.ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    assert sorted(cli.losses(out.stdout)) == [1, 2, 3], out.stderr[-3000:]
    result = json.loads((tmp_path / "w" / "eval.json").read_text())
    assert result["step"] == 3 and result["metrics"]["count"] == 8
