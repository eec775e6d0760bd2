"""Train or evaluate a method: `python -m fgvc_jax.main --config configs/<method>.py:<dataset>
--workdir DIR [--config.key=value ...] [--mode train|eval]`.

Deliberately short (like flax examples/imagenet): it parses flags and calls
`train.train_and_evaluate` or `train.evaluate_checkpoint`. User mistakes (unknown method,
dataset or config key) end in one clear message, not a traceback.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import re
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # no TensorFlow start-up chatter
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # nor its oneDNN notice (TF only reads data)

import jax  # noqa: E402
from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from fgvc_jax import recipe  # noqa: E402
from fgvc_jax.convert import pretrained  # noqa: E402
from fgvc_jax.loop import train  # noqa: E402
from fgvc_jax.run import checkpoints, trained, wandb_writer  # noqa: E402
from fgvc_jax.run import workdir as workdir_lib  # noqa: E402
from fgvc_jax.runtime import compile_cache, peers  # noqa: E402
from fgvc_jax.suggest import did_you_mean  # noqa: E402
from fgvc_jax.tools import cli_common  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "configs/<method>.py:<dataset> (--mode eval: default the workdir's config.json)"
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints, metrics and eval.json go here.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval"], "Train (resuming) or evaluate.")
_CHECKPOINT = flags.DEFINE_enum(
    "checkpoint",
    "best",
    ["best", "latest"],
    "--mode eval: which checkpoint of the workdir to evaluate.",
)
_ALLOW_CONFIG_CHANGE = flags.DEFINE_bool(
    "allow_config_change",
    False,
    "Resume a workdir with a config that differs from its run's (the changed keys are "
    "listed and recorded; a changed length rebuilds the learning-rate schedule for it).",
)


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def check_command_line(argv: list[str]) -> None:
    """Validate --config and its --config.* overrides before absl parses them."""
    spec = next(
        (
            a.split("=", 1)[1] if "=" in a else (argv[i + 1] if i + 1 < len(argv) else "")
            for i, a in enumerate(argv)
            if a == "--config" or a.startswith("--config=")
        ),
        None,
    )
    if not spec:
        return  # absl reports the missing flag
    path, _, arg = spec.partition(":")
    if not os.path.isfile(path):
        here = os.path.dirname(path) or "configs"
        methods = sorted(
            os.path.basename(p)[:-3]
            for p in glob.glob(os.path.join(here, "*.py"))
            if not os.path.basename(p).startswith(("_", "common"))
        )
        paths = [f"{here}/{m}.py" for m in methods]
        _fail(
            f"unknown method config {path!r}; valid: "
            + (", ".join(paths) or "(no configs in " + here + ")")
            + "."
            + did_you_mean(path, paths)
        )
    try:
        module_spec = importlib.util.spec_from_file_location("_fgvc_config", path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
        config = module.get_config(*([arg] if arg else []))
    except ValueError as e:
        _fail(str(e))
    for a in argv:
        m = re.match(r"--(?:no)?config\.([^=]+)", a)
        if not m:
            continue
        node, parts = config, m.group(1).split(".")
        for i, key in enumerate(parts):
            if not hasattr(node, "keys") or key not in node:
                where = "config." + ".".join(parts[:i]) if i else "config"
                keys = sorted(node.keys()) if hasattr(node, "keys") else []
                _fail(
                    f"unknown config key 'config.{m.group(1)}': {where} has no {key!r}; "
                    f"valid: {', '.join(keys) or '(a value)'}." + did_you_mean(key, keys)
                )
            node = node[key]


def _quiet_libraries() -> None:
    """Keep the console to the trainer's own lines: INFO chatter of orbax and JAX (e.g.
    "Unable to initialize backend 'tpu'") is dropped, and TFDS's lines below ERROR (the
    dataset preparation prints its own)."""

    def keep(record) -> bool:
        if "/tensorflow_datasets/" in record.pathname:
            return record.levelno >= 40  # 40: ERROR
        return record.levelno >= 30 or not any(  # 30: WARNING
            p in record.pathname for p in ("/orbax/", "/jax/", "/jaxlib/")
        )

    logging.get_absl_handler().addFilter(keep)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    _quiet_libraries()
    compile_cache.enable()  # a resume or re-evaluation of the same program does not recompile
    config, workdir = _CONFIG.value, _WORKDIR.value
    if not workdir:
        _fail(
            "--workdir is required: the run's folder (checkpoints, metrics, eval.json), "
            "e.g. --workdir runs/swinfc_cub."
        )
    try:
        if _MODE.value == "train":
            if config is None:
                _fail("--config is required to train (e.g. --config configs/swinfc.py:cub).")
            wandb_writer.check(config.train.get("wandb_project", ""))
            if not checkpoints.has_checkpoints(workdir):  # a resume never reads them
                recipe.check(config)  # settings, start source: before any dataset work or workdir
                pretrained.check_source(config)
                if config.init.get("resume_from"):
                    checkpoints.resume_source(config.init.resume_from)
            train.train_and_evaluate(config, workdir, _ALLOW_CONFIG_CHANGE.value)
        else:
            result = train.evaluate_checkpoint(config, workdir, _CHECKPOINT.value)
            print(
                f"{result['checkpoint']} checkpoint (step {result['step']}) on "
                f"{result['split']}: "
                + ", ".join(f"{k} {v:.2f}" for k, v in result["metrics"].items() if k != "count")
                + f"\nwritten to {result['path']}"
            )
    except train.Preempted as e:
        logging.warning("%s", e)
        sys.exit(e.exit_code)
    except jax.errors.JaxRuntimeError as e:
        if not peers.is_lost_peer(e):
            raise
        real_stderr = peers.mute_stderr()
        peers.exit_now(
            peers.lost_line(e, checkpoints.latest_finished_step(workdir), workdir), real_stderr
        )
    except KeyboardInterrupt:  # a second Ctrl-C, or one before training started
        logging.warning("Interrupted (SIGINT): stopped at once; no checkpoint written.")
        sys.exit(130)
    except FloatingPointError as e:
        _fail(str(e))
    except (
        ValueError,
        FileNotFoundError,
        trained.ToolError,
        workdir_lib.WorkdirError,
        checkpoints.CheckpointError,
    ) as e:
        logging.debug("traceback", exc_info=True)
        _fail(str(e))


def run():
    cli_common.exit_if_help(sys.argv)
    check_command_line(sys.argv[1:])
    app.run(main)


if __name__ == "__main__":
    run()
