"""Every command's --help lists its own flags and exits 0, with or without the optional extras
(torch for compare, the CUDA plugin for aot); a missing extra is one line naming `make dev`."""

import subprocess
import sys

import pytest

from tests.train import cli

#: The flags each command's --help must list.
FLAGS = {
    "main": ["--config", "--workdir", "--mode", "--checkpoint", "--allow_config_change"],
    "evaluate": ["--workdir", "--config", "--checkpoint", "--platform", "--images", "--flip"],
    "predict": ["--workdir", "--config", "--checkpoint", "--platform", "--top_k"],
    "explain": ["--workdir", "--config", "--checkpoint", "--platform", "--out"],
    "export": ["--workdir", "--config", "--checkpoint", "--platform", "--out"],
    "aot": ["--config", "--target", "--steps", "--num_classes"],
    "compare": ["--config", "--dtype", "--train", "--tolerance"],
    "convert": ["--arch", "--src", "--out", "--check"],
}
#: Modules made unimportable: the extras a fresh `make venv` does not install.
NO_EXTRAS = ("torch", "torchvision", "timm", "jax_cuda12_plugin", "libtpu")


def _run_without_extras(command: str, *args: str) -> subprocess.CompletedProcess:
    code = (
        "import runpy, sys\n"
        f"for m in {NO_EXTRAS!r}: sys.modules[m] = None\n"
        f"sys.argv = ['{command}', *{list(args)!r}]\n"
        f"runpy.run_module('fgvc_jax.{command}', run_name='__main__', alter_sys=True)\n"
    )
    return cli.run([sys.executable, "-c", code], timeout=120)


@pytest.mark.parametrize("command", sorted(FLAGS))
@pytest.mark.parametrize("extras", [True, False], ids=["extras", "no_extras"])
def test_help_lists_the_commands_own_flags_and_exits_0(command, extras):
    if extras:
        out = cli.run([sys.executable, "-m", f"fgvc_jax.{command}", "--help"], timeout=120)
    else:
        out = _run_without_extras(command, "--help")
    assert out.returncode == 0, out.stderr[-2000:]
    for flag in FLAGS[command]:
        boolean = flag.replace("--", "--[no]", 1)  # absl's form of a boolean flag
        assert flag in out.stdout or boolean in out.stdout, (flag, out.stdout)
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize(
    "command, args, message",
    [
        (
            "aot",
            ["--config", "configs/swinfc.py:synthetic", "--target", "h100"],
            "error: --target=h100 needs the CUDA 12 compiler plugin: run `make dev`",
        ),
        (
            "compare",
            ["--config", "configs/swinfc.py:synthetic"],
            "error: compare needs torch, torchvision, timm: run `make dev`.",
        ),
    ],
)
def test_missing_extra_is_one_line_naming_make_dev(command, args, message):
    out = _run_without_extras(command, *args)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), out.stderr[-2000:]
    assert "pip install" not in out.stderr
