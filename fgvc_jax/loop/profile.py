"""`--config.train.profile_steps=K`: a `jax.profiler` trace of K train steps into
`<workdir>/profile/` (open it with xprof: docs/running_at_scale.md).

The trace starts after the first log window (the first compiled steps, the first metrics
fetch and log line are behind it): it covers steps F..F+K-1 with F = the first multiple of
`log_every` after the start step, plus one. Each step runs under
`StepTraceAnnotation("train", step_num=s)`; the host work around it under the
`TraceAnnotation`s named here. The annotations cost next to nothing when no trace is active,
so the loop carries them always.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator

import jax
from absl import logging

DIR = "profile"
STEP = "train"  # StepTraceAnnotation name; step_num = the train step
DATA = "data_loading"  # the next host batch from the input pipeline
LOG = "log_metrics"  # fetching the pending metrics from the device and writing them
EVAL = "evaluate"  # evaluation (and the best checkpoint it may save)
CHECKPOINT = "checkpoint_save"  # a periodic checkpoint (its asynchronous start)


def annotation(name: str) -> jax.profiler.TraceAnnotation:
    """`with annotation(name):` marks host work in the trace."""
    return jax.profiler.TraceAnnotation(name)


def annotated(name: str) -> Callable:
    """Decorator: every call of the function under `TraceAnnotation(name)`."""
    return lambda fn: jax.profiler.annotate_function(fn, name=name)


def batches(it: Iterator, name: str = DATA) -> Iterator:
    """The items of `it`, each `next` under `TraceAnnotation(name)`."""
    end = object()
    while True:
        with jax.profiler.TraceAnnotation(name):
            item = next(it, end)
        if item is end:
            return
        yield item


def first_traced_step(start_step: int, log_every: int) -> int:
    return (start_step // max(log_every, 1) + 1) * max(log_every, 1) + 1


def steps(
    steps: Iterable[int],
    workdir: str,
    num_traced: int,
    first: int,
    sync: Callable[[], object],
) -> Iterator[int]:
    """Yield `steps`, each under `StepTraceAnnotation(STEP, step_num=s)`; trace steps
    `first`..`first + num_traced - 1` (none if `num_traced` is 0) into `<workdir>/profile/`.
    `sync()` waits for the device before the trace starts and before it stops, so the trace
    holds the device work of the traced steps and of no other. Close the generator when the loop ends (the trace stops if it runs)."""
    last = first + num_traced - 1
    tracing = started = False
    try:
        for s in steps:
            if num_traced > 0 and s == first:
                sync()  # the earlier steps' device work stays out of the trace
                jax.profiler.start_trace(os.path.join(workdir, DIR))
                tracing = started = True
            with jax.profiler.StepTraceAnnotation(STEP, step_num=s):
                yield s
            if tracing and s == last:
                sync()
                jax.profiler.stop_trace()
                tracing = False
                logging.info(
                    "profile of steps %d-%d written to %s", first, last, os.path.join(workdir, DIR)
                )
        if tracing:  # the run ended inside the traced steps
            sync()
            jax.profiler.stop_trace()
            tracing = False
        if num_traced > 0 and not started:
            logging.warning("profile_steps: the run ends before step %d: nothing traced", first)
    finally:
        if tracing:
            jax.profiler.stop_trace()
