"""A first start as a new user sees it: at most ~25 lines before the first step line (which
comes whatever log_every is), none of the libraries' start-up chatter."""

import re

from tests.train import cli

#: Library chatter that must not reach the console of a first start.
CHATTER = (
    "Unable to initialize backend",
    "oneDNN",
    "Could not find cuda drivers",
    "Downloading and preparing dataset",
    "| Name ",  # the parameter table (it goes to <workdir>/parameters.txt)
    "Generating splits",
)


def _before_first_step(text: str) -> list[str]:
    lines = text.splitlines()
    first = next(i for i, line in enumerate(lines) if re.match(r"step +1/2 ", line))
    return lines[:first]


def test_first_start_console_is_short_and_quiet(tmp_path):
    # stdout and stderr in the order written (one pipe); the dataset prepared by this run
    args = cli.tiny_args(
        "baseline_resnet",
        tmp_path / "w",
        tmp_path / "tfds",
        "--config.train.num_steps=2",
        "--config.train.log_every=100",
    )
    out = cli.subprocess.run(
        args,
        cwd=cli.ROOT,
        env=cli.env(),
        stdout=cli.subprocess.PIPE,
        stderr=cli.subprocess.STDOUT,
        text=True,
        timeout=400,
    )
    assert out.returncode == 0, out.stdout[-3000:]
    before = _before_first_step(out.stdout)  # the step-1 line is there whatever log_every is
    assert len(before) <= 25, "\n".join(before)
    for line in before:
        assert not any(c in line for c in CHATTER), line
    assert any(line.startswith("Preparing dataset synthetic_fgvc") for line in before), before
    assert any(line.startswith("Decoded cache") for line in before), before
    table = (tmp_path / "w" / "parameters.txt").read_text()
    assert "backbone/conv1/kernel" in table


def test_eta_has_units():
    from fgvc_jax.runtime.progress import eta

    assert [eta(s) for s in (None, 0.4, 45, 185, 3600 + 125, 26 * 3600)] == [
        "--",
        "0s",
        "45s",
        "3m05s",
        "1h02m",
        "26h00m",
    ]


def test_progress_line_has_count_rate_and_eta(capsys, monkeypatch):
    from fgvc_jax.runtime import progress

    clock = iter([100.0, 110.0, 110.0])  # start; after 10 s: 50 of 200 done
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
    bar = progress.Progress("Building the decoded cache train_square_64", 200, every=5.0)
    bar.update(50)
    assert capsys.readouterr().out == (
        "Building the decoded cache train_square_64: 50/200 images (25%), 5 images/s, ETA 30s\n"
    )


def test_dataset_preparation_line_has_progress_and_eta(capsys, monkeypatch):
    from fgvc_jax.data import datasets
    from fgvc_jax.data.builders import synthetic_fgvc
    from fgvc_jax.runtime import progress

    builder = synthetic_fgvc.SyntheticFGVC(
        params=synthetic_fgvc.Params(num_classes=2, train_per_class=2, test_per_class=1),
        data_dir="/nonexistent",
    )
    generators = builder._split_generators(None)
    assert {s: len(g) for s, g in generators.items()} == {"train": 4, "test": 2}
    clock = iter(range(0, 1000, 30))  # 30 s between two readings: every update is printed
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
    tqdm = datasets._split_progress("synthetic_fgvc")
    examples = tqdm(generators["train"], desc="Generating train examples...", total=None)
    assert len(list(examples)) == 4
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "Preparing synthetic_fgvc train: 1/4 images (25%), 0 images/s, ETA 3m00s"
    assert len(lines) == 4 and lines[-1].endswith("ETA 0s")
    splits = tqdm([1, 2], desc="Generating splits...")  # TFDS's other bars: silent
    assert list(splits) == [1, 2] and capsys.readouterr().out == ""
