"""User mistakes end in one line that helps: 'did you mean' for mistyped config keys, method
and dataset names; a config without its dataset and a missing --workdir are one line with exit
code 2; an empty image folder and an unreadable image are named."""

import sys

import pytest

from tests.train import cli


def _check(argv, capsys, monkeypatch) -> str:
    from fgvc_jax import main

    monkeypatch.chdir(cli.ROOT)
    with pytest.raises(SystemExit) as e:
        main.check_command_line(["--workdir", "w", *argv])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    return err.strip()


@pytest.mark.parametrize(
    "argv, suggestion",
    [
        (["--config", "configs/swinfc.py:synthetic", "--config.optim.lrr=1"], "'lr'"),
        (["--config", "configs/swinfc.py:synthetic", "--config.trian.num_steps=1"], "'train'"),
        (["--config", "configs/swinfc.py:cubb"], "'cub'"),
        (["--config", "configs/swinfcc.py:cub"], "'configs/swinfc.py'"),
    ],
)
def test_did_you_mean_for_mistyped_names(argv, suggestion, capsys, monkeypatch):
    assert _check(argv, capsys, monkeypatch).endswith(f"Did you mean {suggestion}?")


def test_did_you_mean_for_method_and_dataset_names():
    from fgvc_jax.data.config import check_name
    from fgvc_jax.methods import registry

    with pytest.raises(ValueError, match=r"Did you mean 'swinfc'\?$"):
        registry.default_config("swin_fc")
    with pytest.raises(ValueError, match=r"Did you mean 'stanford_cars'\?$"):
        check_name("stanford_car")
    with pytest.raises(ValueError) as e:
        check_name("imagenet")  # nothing close: no suggestion
    assert "Did you mean" not in str(e.value)


def test_config_without_its_dataset_lists_the_datasets(capsys, monkeypatch):
    err = _check(["--config", "configs/swinfc.py"], capsys, monkeypatch)
    assert err.startswith("error: --config configs/swinfc.py needs a dataset: ")
    assert "configs/swinfc.py:<dataset>" in err and "synthetic, cub, " in err


def test_missing_workdir_is_one_line_exit_2():
    out = cli.run(
        [sys.executable, "-m", "fgvc_jax.main", "--config", "configs/swinfc.py:synthetic"],
        timeout=120,
    )
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].startswith("error: --workdir is required")
    assert "FATAL" not in out.stderr


def test_empty_image_folder_names_it_and_the_layout(tmp_path):
    from fgvc_jax.tools import image_files

    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "notes.txt").write_text("not an image")
    with pytest.raises(image_files.ToolError) as e:
        image_files.expand_paths([str(tmp_path / "photos")])
    assert str(e.value).startswith(f"folder {tmp_path / 'photos'} has no image files: expected ")
    assert f"{tmp_path / 'photos' / '*.jpg'}" in str(e.value)


def test_unreadable_image_names_its_path_not_a_bytesio(tmp_path):
    from configs import baseline_resnet
    from fgvc_jax.data import images
    from fgvc_jax.data.errors import DataError
    from fgvc_jax.tools import image_files

    bad = tmp_path / "bird.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(image_files.ToolError) as e:
        image_files.load_images([str(bad)], baseline_resnet.get_config("synthetic"))
    assert str(e.value).startswith(f"cannot read image(s): {bad} (")
    assert "BytesIO" not in str(e.value)
    with pytest.raises(DataError) as e:
        images.decode(bad.read_bytes(), name=str(bad))
    assert str(e.value).startswith(f"Cannot read image {bad}: ")
    assert "BytesIO" not in str(e.value)


def test_a_bad_setting_is_one_line_before_any_dataset_work_or_workdir(tmp_path):
    workdir, data_dir = tmp_path / "run", tmp_path / "tfds"
    out = cli.run(
        cli.tiny_args("attention_cnn", workdir, data_dir, "--config.data.sampling=balanced"),
        timeout=120,
    )
    assert out.returncode != 0
    assert out.stderr.strip().splitlines()[-1] == (
        "error: config.data.sampling='balanced'; valid: uniform, class_balanced, sqrt."
    ), out.stderr[-2000:]
    assert not workdir.exists() and not data_dir.exists()
