"""<workdir>/curves.png: the training loss, the learning rates and the periodic evaluation's
accuracies of metrics.jsonl, one panel each."""

import json

from PIL import Image

from fgvc_jax.run import curves


def _metrics(path, val: bool):
    rows = []
    for step in range(1, 61):
        rows.append(
            {
                "step": step,
                "train/loss": 7.0 - step / 20,
                "train/loss/ce_main": 6.0 - step / 20,
                "train/grad_norm": 1.0,
                "lr/backbone": 1e-4 * step,
                "lr/new": 1e-3 * step,
            }
        )
        if step % 20 == 0:
            split = "val" if val else "test"
            rows.append({"step": step, f"{split}/top1/combined": step, f"{split}/top1/main": 1})
    rows.append({"step": 60, "test/top1/combined": 70.0, "test/top5/combined": 90.0})
    rows.append({"step": 40, "train/loss": 5.5})  # a resumed run logs step 40 again
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n{cut by a cra")


def test_curves_png_has_loss_learning_rate_and_validation_panels(tmp_path):
    _metrics(tmp_path / "metrics.jsonl", val=True)
    series = curves.read(str(tmp_path))
    assert series["train/loss"][1][39] == 5.5  # the last value logged for step 40
    assert curves.panels(series) == {
        "training loss": ["train/loss", "train/loss/ce_main"],
        "learning rate": ["lr/backbone", "lr/new"],
        "val accuracy (%)": ["val/top1/combined"],  # test: one point at the end, not drawn
    }
    path = curves.write(str(tmp_path))
    assert path == str(tmp_path / "curves.png")
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as im:
        assert im.size == (1500, 400)  # three 5x4-inch panels at 100 dpi


def test_without_a_validation_split_the_test_evaluations_are_drawn(tmp_path):
    _metrics(tmp_path / "metrics.jsonl", val=False)
    drawn = curves.panels(curves.read(str(tmp_path)))
    assert drawn["test accuracy (%)"] == ["test/top1/combined"]


def test_no_metrics_no_png(tmp_path):
    assert curves.write(str(tmp_path)) is None
    assert not (tmp_path / "curves.png").exists()


def test_confusion_title_of_a_long_path_fits_the_figure(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt
    import numpy as np

    from fgvc_jax import evaluate

    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    title = "baseline_resnet, step 40, " + "/home/someone/a/rather/long/path/of/photos" * 3
    evaluate.plot_confusion(np.eye(4, dtype=int), list("abcd"), str(tmp_path / "c.png"), title)
    (fig,) = figures
    fig.canvas.draw()
    box = fig.axes[0].title.get_window_extent()
    assert box.x0 >= 0 and box.x1 <= fig.bbox.x1 and box.y1 <= fig.bbox.y1, (box, fig.bbox)
    assert fig.axes[0].title.get_text().replace("\n", "") == title
