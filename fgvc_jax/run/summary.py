"""What a finished run reached, from its `eval.json`: `python -m fgvc_jax.run.summary DIR
[HOW_TO_START_A_NEW_ONE]` (`make quickstart` on a finished run prints it instead of
evaluating the run again). Exit code 1 if DIR holds no finished run."""

from __future__ import annotations

import json
import os
import sys


def finished(workdir: str, new_run: str = "") -> str | None:
    """Lines saying `workdir` is finished, its test top-1 (last and best checkpoint) and how
    to start a new run (`new_run`, else the generic command) or evaluate it again; None if
    it has no eval.json."""
    path = os.path.join(workdir, "eval.json")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        result = json.load(f)
    step, total = result.get("step"), result.get("num_steps", result.get("step"))
    top1 = result.get("metrics", {}).get("top1/combined")
    best = result.get("test_best") or {}
    best_top1 = (best.get("metrics") or {}).get("top1/combined")
    line = f"{workdir} is a finished run (step {step}/{total}): test top-1 {top1:.2f}%"
    if best_top1 is not None and best.get("step") not in (None, step):
        line += f" (best checkpoint, step {best['step']}: {best_top1:.2f}%)"
    new_run = new_run or (
        "python -m fgvc_jax.main --config configs/<method>.py:<dataset> --workdir runs/<new>"
    )
    return (
        f"{line}; the report is {path}.\n"
        f"To start a new run: {new_run} (or delete {workdir}).\n"
        f"To evaluate it again: python -m fgvc_jax.main --workdir {workdir} --mode eval"
    )


if __name__ == "__main__":
    text = finished(sys.argv[1], " ".join(sys.argv[2:]))
    print(text or f"{sys.argv[1]}: no finished run (no eval.json).")
    sys.exit(0 if text else 1)
