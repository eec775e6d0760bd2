"""A run's training curves as one PNG, `<workdir>/curves.png`, drawn from
`<workdir>/metrics.jsonl`: the training loss (and its terms), the learning rate of each
parameter group, and the accuracies of the periodic evaluation (the validation split, or the
test split when the run has none). Written at the end of a run and by `evaluate`."""

from __future__ import annotations

import json
import os
import re

FILE = "curves.png"
METRICS = "metrics.jsonl"
#: The evaluation metrics drawn: the combined prediction's (and its EMA's) accuracies.
_ACCURACY = re.compile(r"^(val|test)/(ema/)?(top1|top5|mean_class)/combined$")


def read(workdir: str) -> dict[str, tuple[list[int], list[float]]]:
    """{metric: (steps, values)} of `<workdir>/metrics.jsonl`, the last value of each step
    (a resumed run logs some steps again); {} if there is no file."""
    path = os.path.join(workdir, METRICS)
    if not os.path.exists(path):
        return {}
    by_key: dict[str, dict[int, float]] = {}
    with open(path) as f:
        for line in f:
            try:
                row = json.loads(line)
            except ValueError:  # a line cut by a crash
                continue
            step = int(row.pop("step", -1))
            for k, v in row.items():
                by_key.setdefault(k, {})[step] = float(v)
    return {k: (sorted(v), [v[s] for s in sorted(v)]) for k, v in by_key.items()}


def panels(series: dict) -> dict[str, list[str]]:
    """{panel title: metrics drawn in it}: loss, learning rate, evaluation accuracy."""
    evaluated = sorted(k for k in series if _ACCURACY.match(k))
    split = "val" if any(k.startswith("val/") for k in evaluated) else "test"
    # The test split evaluated at the end only (one point) is not a curve of the run.
    evaluated = [k for k in evaluated if k.startswith(split + "/") and len(series[k][0]) > 1]
    out = {
        "training loss": sorted(k for k in series if k.startswith("train/loss")),
        "learning rate": sorted(k for k in series if k.startswith("lr/")),
        f"{split} accuracy (%)": evaluated,
    }
    return {title: keys for title, keys in out.items() if keys}


def write(workdir: str, out_dir: str | None = None) -> str | None:
    """Draw the curves of `workdir` into `<out_dir or workdir>/curves.png`; its path, or None
    when the run has logged nothing yet."""
    series = read(workdir)
    drawn = panels(series)
    if not drawn:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(drawn), figsize=(5 * len(drawn), 4), squeeze=False)
    for ax, (title, keys) in zip(axes[0], drawn.items()):
        for k in keys:
            steps, values = series[k]
            ax.plot(steps, values, marker="." if len(steps) < 30 else None, label=k)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(os.path.basename(os.path.abspath(workdir)))
    fig.tight_layout()
    path = os.path.join(out_dir or workdir, FILE)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
