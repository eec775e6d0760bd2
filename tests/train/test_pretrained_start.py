"""A run whose `config.init.pretrained` cannot be used stops before anything else: one line
naming the source, a non-zero exit within seconds, no dataset prepared and no workdir left."""

from __future__ import annotations

import time

from tests.train import cli


def test_missing_pretrained_file_stops_before_dataset_and_workdir(tmp_path):
    workdir, data_dir = tmp_path / "run", tmp_path / "tfds"
    args = cli.tiny_args("baseline_resnet", workdir, data_dir, "--config.init.pretrained=/nope.pth")
    t0 = time.time()
    out = cli.run(args, timeout=120)
    elapsed = time.time() - t0
    assert out.returncode != 0, out.stderr[-2000:]
    lines = [line for line in out.stderr.splitlines() if "/nope.pth" in line]
    assert lines == ["error: config.init.pretrained='/nope.pth': no such file or directory."], (
        out.stderr[-2000:]
    )
    assert "Traceback" not in out.stderr
    assert not workdir.exists() and not data_dir.exists()
    assert elapsed < 60, elapsed  # the imports only (seconds on an idle machine)
