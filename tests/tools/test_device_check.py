"""`bench/device_check.py --smoke` (the one-command device check at the CPU size) runs every
part, so it does not rot before a GPU appears: a method's row on both sides, the XLA plan,
both first-step latencies, the quick start."""

import json
import math

import pytest

from bench import device_check


def test_device_check_smoke_reports_every_figure(tmp_path, capsys):
    out = tmp_path / "check.json"
    device_check.main(["--smoke", "--methods", "baseline_resnet", "--out", str(out)])
    report = json.loads(out.read_text())
    (row,) = report["methods"]
    assert "error" not in row, row
    assert (row["method"], row["batch"]) == ("baseline_resnet", 2)
    for key in (
        "jax_train_img_s",
        "torch_train_img_s",
        "jax_forward_img_s",
        "torch_forward_img_s",
        "planned_gib",
        "first_step_cold_s",
        "first_step_warm_s",
    ):
        assert math.isfinite(row[key]) and row[key] > 0, (key, row[key])
    quick = report["quickstart"]
    assert quick["steps"] == 4 and 0 <= quick["top1"] <= 100, quick
    printed = capsys.readouterr().out
    assert "| baseline_resnet | 64 | 2 |" in printed
    assert "quick start (configs/swinfc.py:synthetic, 4 steps)" in printed


def test_unknown_method_names_the_valid_ones(capsys):
    with pytest.raises(SystemExit, match="unknown method 'swinfx'; valid: .*swinfc"):
        device_check.main(["--smoke", "--methods", "swinfx"])
