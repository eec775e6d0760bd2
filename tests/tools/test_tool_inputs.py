"""The tools' inputs and outputs at the edges: a symbolic link loop among the images is named
like any unreadable image (and skipped by --skip_unreadable), control characters in file
names are escaped in predict's text output, an export into a read-only folder is one line."""

from __future__ import annotations

import os
import re
import subprocess

import ml_collections
import pytest
from PIL import Image

from fgvc_jax import data, export, predict
from fgvc_jax.run.trained import ToolError
from fgvc_jax.tools import image_files


def _config():
    return ml_collections.ConfigDict({"data": data.default_config()})


def test_symlink_loop_is_named_and_skipped(tmp_path):
    good = tmp_path / "good.png"
    Image.new("RGB", (64, 64), (200, 10, 10)).save(good)
    loop = tmp_path / "loop.jpg"
    os.symlink(loop, loop)
    dangling = tmp_path / "gone.jpg"
    os.symlink(tmp_path / "nothing.jpg", dangling)
    paths = image_files.expand_paths([str(good), str(loop), str(dangling)])
    assert paths == [str(good), str(loop), str(dangling)]  # not "no such file"
    assert image_files.expand_paths([str(tmp_path)]) == [str(dangling), str(good), str(loop)]
    with pytest.raises(ToolError) as e:
        image_files.load_images(paths, _config())
    assert re.search(
        rf"{re.escape(str(loop))} \([^)]*Too many levels of symbolic links", str(e.value)
    )
    assert re.search(rf"{re.escape(str(dangling))} \([^)]*No such file or directory", str(e.value))
    images, ok, bad = image_files.load_images(paths, _config(), skip_unreadable=True)
    assert ok == [str(good)] and len(images) == 1 and len(bad) == 2


def test_control_characters_in_file_names_are_escaped_in_text_output():
    assert predict.printable("a\nb\tc\x1b d é.jpg") == "a\\nb\\tc\\x1b d é.jpg"
    assert "\n" not in predict.printable("x\r\n.jpg")


def test_export_to_a_read_only_folder_is_one_line(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)], capture_output=True
    )
    if mounted.returncode != 0:
        os.chmod(ro, 0o500)
        if os.access(ro, os.W_OK):
            pytest.skip("neither a read-only mount nor a read-only folder is possible here")
    try:
        with pytest.raises(ToolError) as e:
            export.check_args(str(ro / "model"), 0, ("cpu",))
        assert str(e.value) == (
            f"--out {ro / 'model'} cannot be written: {ro} is read-only or not writable by "
            "this user; choose another folder."
        )
    finally:
        if mounted.returncode == 0:
            subprocess.run(["umount", "-l", str(ro)], capture_output=True)
        os.chmod(ro, 0o700)
