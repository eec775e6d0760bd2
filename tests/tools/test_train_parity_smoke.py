"""`bench/train_parity.py` end to end at a few steps: one method (attention_cnn, the cheapest to
compile), one seed, a tiny evaluation; the table, the json and the plot are written, the
accuracies are accuracies, both sides ran the same steps from the same start."""

import json
import math

import pytest

pytest.importorskip("torch")

from bench import train_parity  # noqa: E402

METHOD, STEPS, LIMIT = "attention_cnn", 3, 32


def test_train_parity_writes_table_json_and_plot(tmp_path, capsys):
    argv = ["--methods", METHOD, "--seeds", "1", "--steps", str(STEPS)]
    train_parity.main(
        argv + ["--eval-every", "2", "--eval-limit", str(LIMIT), "--out", str(tmp_path)]
    )

    report = json.loads((tmp_path / "train_parity.json").read_text())
    result = report["methods"][METHOD]
    assert result["steps"] == STEPS
    ours, theirs = (result["runs"][side][0] for side in train_parity.SIDES)
    for run in (ours, theirs):
        assert run["steps"] == len(run["losses"]) == STEPS
        assert all(math.isfinite(x) for x in run["losses"])
        assert list(run["val"]) == ["2", "3"]  # every 2 steps, and the last
        for acc in [run["test_top1"], *run["val"].values()]:
            assert 0.0 <= acc <= 1.0 and acc * LIMIT == round(acc * LIMIT), acc
    # the same initial weights and first batch: the first loss agrees to float32 rounding
    assert ours["losses"][0] == pytest.approx(theirs["losses"][0], rel=1e-4)

    s = result["summary"]
    assert (
        s["fgvc_jax"]["mean"] == ours["test_top1"] and s["pytorch"]["mean"] == theirs["test_top1"]
    )
    assert s["delta"] == pytest.approx(ours["test_top1"] - theirs["test_top1"])
    assert s["fgvc_jax"]["sd"] is None and s["within_1sd"] is None  # one seed: no spread

    table = (tmp_path / "train_parity.md").read_text()
    assert table.startswith("| method | fgvc_jax top-1 | PyTorch top-1 | Δ | Δ/sd | within 1 sd |")
    assert f"| {METHOD} | {100 * ours['test_top1']:.1f} | " in table
    assert table.strip() in capsys.readouterr().out
    assert (tmp_path / f"{METHOD}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_summary_pools_the_seed_spread():
    runs = {
        "fgvc_jax": [{"test_top1": a} for a in (0.80, 0.84, 0.82)],
        "pytorch": [{"test_top1": a} for a in (0.78, 0.80, 0.79)],
    }
    s = train_parity.summary(runs)
    assert s["delta"] == pytest.approx(0.03)
    pooled = math.sqrt((0.02**2 + 0.01**2) / 2)
    assert s["pooled_sd"] == pytest.approx(pooled)
    assert s["delta_over_sd"] == pytest.approx(0.03 / pooled) and s["within_1sd"] is False
