"""The test tiers. `make test-fast` runs the unit tier: every test not marked `slow` (paper
size), `aot` (compiles for H100/TPU) or `long`. `long` is given here, in one place, to the
tests that run the trainer or a tool end to end, start other processes, inject faults into
runs, or train whole methods beside their PyTorch twins, and to the unit tests that cost more
than ~15 s on 2 cores and repeat what a cheaper fast test already covers (named below, each
with the fast test that stands for it); `make test` (CI) runs every tier."""

import pytest

#: Test files (or folders) whose tests are all `long`.
LONG_FILES = (
    "tests/aot/",
    "tests/tools/",
    "tests/methods/test_registry.py",
    "tests/convert/test_pretrained_sources.py",
    "tests/data/test_changed_data.py",
    "tests/train/test_checkpoint_integrity.py",
    "tests/train/test_cli.py",
    "tests/train/test_early_stop.py",
    "tests/train/test_console.py",
    "tests/train/test_fault_injection.py",
    "tests/train/test_first_run.py",
    "tests/train/test_help.py",
    "tests/train/test_messages.py",
    "tests/train/test_parallel.py",
    "tests/train/test_pretrained_start.py",
    "tests/train/test_profile.py",
    "tests/train/test_quickstart.py",
    "tests/train/test_resume.py",
    "tests/train/test_selection.py",
    "tests/train/test_slurm_script.py",
    "tests/train/test_resume_from.py",
    "tests/train/test_two_process.py",
    "tests/train/test_wandb.py",
)
#: Test names that are `long` wherever they are: whole methods trained beside their twins.
LONG_NAMES = (
    "train_mode",
    "wrong_choice",
    "cra_smra_densenet",
    # CRA-SMRA on DenseNet-121 (98 s): test_cra_smra_on_densenet; the ResNet CPU variant is fast
    "on_densenet",
    # FBSD's BN momentum over 3 steps beside PyTorch (42 s); the eval-mode twins are fast
    "convlayer_bn_momentum",
    # logit_sum through the whole twin (70 s for 3 methods); the rule: test_combine_default_is_unchanged_and_logit_sum_is_fbsds_rule
    "combine_logit_sum",
    # 4-device shard_map beside 4 PyTorch BNs (17 s); the BN layer twins are fast
    "per_device_batch_norm",
    # every weight through torch and back (50 s); the eval-mode twins load the same map
    "weight_map_round_trip",
    # Swin's drop-path statistics over many samples (17 s) and SwinFC's trunk vs Swin (21 s)
    "stochastic_depth_drops",
    "trunk_equals_plain_swin",
)


def _cost_rank(item) -> int:
    """0: paper size or a compile for H100/TPU (30-250 s each), 1: long, 2: the unit tier."""
    marks = {m.name for m in item.iter_markers()}
    return 0 if marks & {"slow", "aot"} else 1 if "long" in marks else 2


def pytest_collection_modifyitems(items):
    for item in items:
        if item.nodeid.startswith(LONG_FILES) or any(n in item.name for n in LONG_NAMES):
            item.add_marker(pytest.mark.long)
    # The costliest tests first, so that under `-n 2 --maxschedchunk 1` (make test) the two
    # workers take them in turn and end together on the short ones; a 250 s test dealt last
    # would leave one worker idle for its length. The sort is stable: files stay together.
    items.sort(key=_cost_rank)
