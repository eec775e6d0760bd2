"""fgvc_jax.run.workdir: the run lock (holder named, stale lock of a dead process taken over, other
hosts never), the config record (first start kept, every start in config_history/, a changed
config stops listing the keys unless accepted) and one-line errors for unusable workdirs and
corrupt config files."""

import errno
import json
import os
import socket
import subprocess
import sys

import ml_collections
import pytest

from fgvc_jax.run import trained, workdir


def _config(**train):
    return ml_collections.ConfigDict(
        {
            "seed": 0,
            "method": {"name": "swinfc"},
            "data": {"name": "synthetic", "data_dir": "/a", "num_workers": 4},
            "optim": {"lr": {"backbone": 1e-4, "new": 1e-3}},
            "train": {"num_steps": 40, "batch_size": 8, "log_every": 10, **train},
        }
    )


def _lock_record(path, **kw):
    record = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "mode": "train",
        "started": "2025-01-01 00:00:00",
        "token": "x",
        **kw,
    }
    (path / "run.lock").write_text(json.dumps(record))


def test_second_lock_fails_naming_the_holder_and_release_frees_it(tmp_path):
    with workdir.RunLock(str(tmp_path), "train"):
        holder = json.loads((tmp_path / "run.lock").read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        with pytest.raises(workdir.WorkdirInUse) as e:
            with workdir.RunLock(str(tmp_path), "--mode eval"):
                pass
        assert (
            f"workdir {tmp_path} is in use by train (PID {os.getpid()} on host "
            f"{socket.gethostname()}, since "
        ) in str(e.value)
        assert "\n" not in str(e.value)
    assert not (tmp_path / "run.lock").exists()
    with workdir.RunLock(str(tmp_path), "--mode eval"):
        assert (tmp_path / "run.lock").exists()


def test_stale_lock_of_a_dead_process_is_taken_over_with_a_message(tmp_path, capsys):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    ).stdout.strip()
    _lock_record(tmp_path, pid=int(dead))
    with workdir.RunLock(str(tmp_path), "train"):
        assert json.loads((tmp_path / "run.lock").read_text())["pid"] == os.getpid()
    err = capsys.readouterr().err
    assert f"took over the lock of train (PID {dead} on host {socket.gethostname()}" in err
    assert "which is no longer running" in err


def test_lock_of_a_reused_pid_is_stale_but_another_hosts_is_not(tmp_path):
    _lock_record(tmp_path, proc_start="1")  # this PID, but started at another time
    with workdir.RunLock(str(tmp_path), "train"):
        pass
    _lock_record(tmp_path, host="elsewhere", pid=1)
    with pytest.raises(
        workdir.WorkdirInUse,
        match=r"in use by train \(PID 1 on host elsewhere"
        r".*if that process is gone, delete .*run.lock",
    ):
        with workdir.RunLock(str(tmp_path), "train"):
            pass


def test_eval_lock_does_not_create_a_missing_workdir(tmp_path):
    with workdir.RunLock(str(tmp_path / "nope"), "--mode eval", create=False):
        pass
    assert not (tmp_path / "nope").exists()


def test_unusable_workdirs_are_one_line(tmp_path, monkeypatch):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(workdir.WorkdirError, match=f"^workdir {f} is a file, not a folder"):
        workdir.create(str(f))
    with pytest.raises(
        workdir.WorkdirError, match=f"^workdir {f}/run cannot be created: {f} is a file.$"
    ):
        workdir.create(str(f / "run"))
    ro = tmp_path / "ro"
    ro.mkdir()
    real_open = open

    def read_only(path, *a, **kw):  # a read-only mount, also as root (chmod is not enough)
        if str(path).startswith(str(ro)) and (a[:1] in (("w",), ("a",))):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, *a, **kw)

    monkeypatch.setattr(workdir, "open", read_only, raising=False)
    with pytest.raises(
        workdir.WorkdirError, match=f"^workdir {ro} is not writable: read-only file system"
    ):
        with workdir.RunLock(str(ro), "train"):
            pass


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_permission_denied_workdir_is_one_line(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    with pytest.raises(workdir.WorkdirError, match="is not writable: permission denied"):
        workdir.create(str(ro))


def test_config_record_first_start_kept_and_changes_listed(tmp_path):
    w = str(tmp_path)
    workdir.record_start(w, _config(), resuming=False)
    first = (tmp_path / "config.json").read_text()
    assert json.loads(first)["train"]["num_steps"] == 40
    # Only where files are / how often to log: no stop.
    assert workdir.record_start(w, _config(log_every=1), resuming=True) == {}
    # A key another version of the library added or removed: listed, no stop.
    newer = _config()
    newer.data.train_crop = "random"
    del newer.data["num_workers"]
    assert workdir.record_start(w, newer, resuming=True) == {}
    changed = _config(num_steps=10, batch_size=16)
    changed.optim.lr.new = 0.1
    changed.data.num_workers = 1
    with pytest.raises(workdir.ConfigChanged) as e:
        workdir.record_start(w, changed, resuming=True)
    assert e.value.keys == ["optim.lr.new", "train.batch_size", "train.num_steps"]
    assert (
        "changed: optim.lr.new 0.001 -> 0.1; train.batch_size 8 -> 16; train.num_steps 40 -> 10. "
    ) in str(e.value)
    assert "--allow_config_change" in str(e.value) and "\n" not in str(e.value)
    accepted = workdir.record_start(w, changed, resuming=True, allow_change=True)
    assert sorted(accepted) == e.value.keys
    assert (tmp_path / "config.json").read_text() == first  # the first start's, kept
    history = sorted(os.listdir(tmp_path / "config_history"))
    assert history == ["1.json", "2.json", "3.json", "4.json"]
    last = json.loads((tmp_path / "config_history" / "4.json").read_text())
    assert last["resuming"] and last["config"]["train"]["num_steps"] == 10
    assert "train.num_steps" in last["changed"] and last["accepted"] == e.value.keys
    # The run's config is now the accepted one: resuming with it again does not stop.
    assert workdir.record_start(w, changed, resuming=True) == {}
    assert workdir.run_config(w)["train"]["num_steps"] == 10


def test_corrupt_config_json_is_one_line_naming_it(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{"seed": 0, "method": {"na')
    with pytest.raises(workdir.WorkdirError, match=f"^{path} is corrupt \\("):
        workdir.record_start(str(tmp_path), _config(), resuming=True)
    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(trained.ToolError, match=f"^{path} is corrupt \\(") as e:
        trained.read_config(str(tmp_path))
    assert "\n" not in str(e.value)


def test_resuming_past_the_new_end_stops(tmp_path):
    workdir.check_length(40, 40, str(tmp_path))  # a finished run evaluated again: fine
    with pytest.raises(
        workdir.WorkdirError,
        match="resumes at step 24, past the new length of 10 steps: nothing to train",
    ):
        workdir.check_length(24, 10, str(tmp_path))
