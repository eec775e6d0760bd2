"""Configs: the same-recipe baseline of CRA-SMRA, SwinFC's recipe choices, and configs that
import without any sys.path entry."""

import importlib
import subprocess
import sys

import pytest

from tests.train import cli


def _config(name, arg):
    return importlib.import_module(f"configs.{name}").get_config(arg)


def test_cra_smra_same_recipe_baseline():
    base, method = _config("baseline_resnet", "cub,cra_smra"), _config("cra_smra", "cub")
    assert base.method.name == "baseline_resnet" and base.method.backbone == "resnet50"
    for section in ("data", "optim", "train"):
        assert base[section].to_dict() == method[section].to_dict(), section
    assert _config("baseline_resnet", "cub").train.batch_size == 16  # MA-EA's by default
    with pytest.raises(ValueError, match="unknown recipe 'fbsd'; valid: cra_smra"):
        _config("baseline_resnet", "cub,fbsd")


def test_swinfc_recipe_choices():
    cub, nabirds = _config("swinfc", "cub"), _config("swinfc", "nabirds")
    assert cub.train.num_steps == nabirds.train.num_steps == 15_000
    assert (cub.optim.warmup_steps, cub.optim.clip_norm) == (0, 0.0)
    assert dict(cub.optim.lr) == {"backbone": 2e-3, "new": 5e-3}
    assert (nabirds.optim.warmup_steps, nabirds.optim.clip_norm) == (500, 1.0)
    assert dict(nabirds.optim.lr) == {"backbone": 3e-2, "new": 3e-2}


def test_configs_import_from_anywhere(tmp_path):
    """A config file is loaded by path from another working directory (no sys.path edit)."""
    code = (
        "import importlib.util, sys; spec = importlib.util.spec_from_file_location('c', "
        f"'{cli.ROOT}/configs/baseline_swin.py'); m = importlib.util.module_from_spec(spec);"
        " spec.loader.exec_module(m); print(m.get_config('cub').train.num_steps)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=cli.env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("15000")
