"""The test tiers. `make test-fast` runs the unit tier: every test not marked `slow` (paper
size), `aot` (compiles for H100/TPU) or `long`. `long` is given here, in one place, to the
tests that run the trainer or a tool end to end, start other processes, inject faults into
runs, or train whole methods beside their PyTorch twins; `make test` (CI) runs every tier."""

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
    "tests/train/test_two_process.py",
)
#: Test names that are `long` wherever they are: whole methods trained beside their twins.
LONG_NAMES = ("train_mode", "wrong_choice", "cra_smra_densenet")


def pytest_collection_modifyitems(items):
    for item in items:
        if item.nodeid.startswith(LONG_FILES) or any(n in item.name for n in LONG_NAMES):
            item.add_marker(pytest.mark.long)
