"""`--config.train.profile_steps=K`: a tiny CPU run writes a jax.profiler trace of K steps
after the first log window into <workdir>/profile/, each step under its
StepTraceAnnotation and the host work under named TraceAnnotations."""

import glob
import os

import ml_collections

from fgvc_jax.loop import profile
from fgvc_jax.run import workdir as workdir_lib
from tests.train import cli


def _events(path):
    """{event name: [step_num stat of each event, or None]} of every plane of an xplane.pb."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    with open(path, "rb") as f:
        space.ParseFromString(f.read())
    out = {}
    for plane in space.planes:
        step_stat = [k for k, m in plane.stat_metadata.items() if m.name == "step_num"]
        for line in plane.lines:
            for e in line.events:
                stats = {s.metadata_id: s for s in e.stats}
                step = next(
                    (
                        stats[k].int64_value or stats[k].uint64_value
                        for k in step_stat
                        if k in stats
                    ),
                    None,
                )
                out.setdefault(plane.event_metadata[e.metadata_id].name, []).append(step)
    return out


def test_profile_steps_traces_the_steps_after_the_first_log_window(tmp_path):
    workdir = tmp_path / "w"
    out = cli.run(
        cli.tiny_args(
            "attention_cnn",
            workdir,
            tmp_path / "tfds",
            "--config.train.num_steps=8",
            "--config.train.log_every=3",
            "--config.train.profile_steps=3",
            "--config.train.checkpoint_every=5",
            "--config.train.eval_every_steps=5",
        )
    )
    assert out.returncode == 0, out.stderr[-4000:]
    (trace,) = glob.glob(str(workdir / "profile" / "**" / "*.xplane.pb"), recursive=True)
    data = open(trace, "rb").read()
    for name in (profile.STEP, profile.DATA, profile.LOG, profile.EVAL, profile.CHECKPOINT):
        assert name.encode() in data, name  # the names, as strings in the protobuf
    events = _events(trace)
    # Steps 4-6: the first log window is steps 1-3 (log_every=3); step 4 fetches step 3's
    # metrics, step 5 evaluates and checkpoints.
    assert sorted(events[profile.STEP]) == [4, 5, 6]
    assert len(events[profile.DATA]) == 3
    assert len(events[profile.LOG]) >= 1
    assert len(events[profile.EVAL]) == 1 and len(events[profile.CHECKPOINT]) == 1
    assert "profile of steps 4-6 written to " + os.path.join(str(workdir), "profile") in (
        out.stderr
    )


def test_a_resume_may_turn_profiling_on(tmp_path):
    config = lambda k: ml_collections.ConfigDict(
        {"method": {"name": "tiny"}, "train": {"num_steps": 8, "profile_steps": k}}
    )
    workdir_lib.record_start(str(tmp_path), config(0), resuming=False)
    assert workdir_lib.record_start(str(tmp_path), config(5), resuming=True) == {}
