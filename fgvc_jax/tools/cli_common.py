"""What the tool CLIs (evaluate, predict, explain) share: the --workdir/--config/--checkpoint
flags and entry point, the image arguments, loading the trained model, and one-line errors
for user mistakes."""

from __future__ import annotations

import logging as std_logging
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # no TensorFlow start-up chatter
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # nor its oneDNN notice

import jax  # noqa: E402
from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from fgvc_jax.data.errors import DataError  # noqa: E402
from fgvc_jax.run import trained  # noqa: E402
from fgvc_jax.run.trained import ToolError  # noqa: E402
from fgvc_jax.runtime import compile_cache  # noqa: E402
from fgvc_jax.tools import image_files  # noqa: E402

FLAGS = flags.FLAGS


def define_common_flags() -> None:
    flags.DEFINE_string("workdir", None, "The training run's folder (checkpoints).")
    config_flags.DEFINE_config_file(
        "config",
        None,
        "configs/<method>.py:<dataset> the run was trained with (with the same "
        "--config.* overrides); optional when the workdir has config.json.",
    )
    flags.DEFINE_enum(
        "checkpoint",
        "best",
        ["best", "latest"],
        "Which checkpoint of the workdir (best falls back to latest).",
    )
    flags.DEFINE_string("platform", "", "cpu | gpu | tpu (default: JAX's choice).")


HELP_FLAGS = ("-h", "-?", "--help", "--helpshort")


def exit_if_help(argv: list[str], shared: tuple[str, ...] = ()) -> None:
    """`--help` (`-h`, `--helpshort`): print the command's docstring and its own flags (with
    the `shared` ones defined in other modules, e.g. --workdir) on stdout, exit 0."""
    args = argv[1 : argv.index("--")] if "--" in argv else argv[1:]
    if not any(a in HELP_FLAGS for a in args):
        return
    for name in shared:
        FLAGS.register_key_flag_for_module(sys.argv[0], FLAGS[name])
    app.usage(shorthelp=True, writeto_stdout=True)
    sys.exit(0)


def check_config_args(argv: list[str]) -> None:
    """A missing --config file is one clear error (before absl parses and imports it)."""
    for i, a in enumerate(argv):
        spec = (
            a.split("=", 1)[1]
            if a.startswith("--config=")
            else (argv[i + 1] if a == "--config" and i + 1 < len(argv) else None)
        )
        if spec is not None and not os.path.isfile(spec.partition(":")[0]):
            fail(
                ValueError(
                    f"--config {spec}: no file {spec.partition(':')[0]!r} "
                    "(expected configs/<method>.py:<dataset>)."
                )
            )


def run(main, define_tool_flags) -> None:
    """A tool's entry point: the common flags and the tool's own, --config checked, `main`
    run under absl."""
    define_common_flags()
    define_tool_flags()
    exit_if_help(sys.argv, ("workdir", "config", "checkpoint", "platform"))
    check_config_args(sys.argv[1:])

    def quiet_main(argv):
        quiet()
        return main(argv)

    app.run(quiet_main)


def quiet() -> None:
    """The tools' output is their report: absl, orbax and JAX INFO lines are dropped, and
    TFDS's warnings about the prepared dataset it reads ("Using custom data configuration")."""
    logging.set_verbosity(logging.WARNING)
    for name in ("jax", "orbax", "absl", "tensorflow"):
        std_logging.getLogger(name).setLevel(std_logging.WARNING)
    logging.get_absl_handler().addFilter(
        lambda r: r.levelno >= std_logging.ERROR or "/tensorflow_datasets/" not in r.pathname
    )


def image_paths(argv: list[str], tool: str) -> list[str]:
    """The image files named by the positional arguments (folders expanded); usage if none."""
    if len(argv) < 2:
        raise ToolError(
            f"no images given: python -m fgvc_jax.{tool} --workdir DIR IMAGE_OR_FOLDER..."
        )
    return image_files.expand_paths(argv[1:])


def load_trained():
    if FLAGS.platform:
        jax.config.update("jax_platforms", FLAGS.platform)
    compile_cache.enable()  # the second call of a tool on the same model does not recompile
    return trained.load(FLAGS.workdir, FLAGS.config, FLAGS.checkpoint)


def fail(error: BaseException) -> None:
    """Print a user mistake as `error: ...` and exit 2; re-raise anything else."""
    if isinstance(error, (ToolError, DataError, ValueError, FileNotFoundError)):
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    raise error
