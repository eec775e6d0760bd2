"""A process of a multi-process run that died under the others: one line, not JAX's abort.

When a peer dies, the survivors' next collective fails (gloo: "Connection reset by peer";
NCCL or the coordination service: an error naming heartbeats or unhealthy tasks). Left
alone, the error's traceback is followed, at exit, by `jax.distributed.shutdown()` waiting
at a barrier for the dead peer and then aborting the process with a C++ stack trace (rc -6).
`is_lost_peer` recognises the error; `mute_stderr` silences the runtime's own threads, which
go on logging the lost peer (an RPC line could otherwise come after ours); `lost_line` says
who is gone, where the run can resume and what to do; `exit_now` prints it and leaves at
once (os._exit: nothing is left to save, every checkpoint write needs all processes, and the
exit handlers would abort).
A survivor blocked in a collective that never fails (possible with NCCL) is ended by the
coordination service after its heartbeat timeout with JAX's own message.
"""

from __future__ import annotations

import os
import sys
import time

import jax
from jax._src import distributed  # the client of jax.distributed.initialize

#: Lower-case fragments of the runtime errors a dead peer causes in a survivor.
PEER_ERRORS = (
    "gloo",
    "connection reset by peer",
    "connection refused",
    "broken pipe",
    "heartbeat",
    "unhealthy",
    "coordination service",
    "nccl",
)
EXIT_CODE = 1


def is_lost_peer(error: BaseException) -> bool:
    """Whether `error` is a collective or the coordination service failing because another
    process of a multi-process run is gone."""
    return (
        jax.process_count() > 1
        and isinstance(error, jax.errors.JaxRuntimeError)
        and any(p in str(error).lower() for p in PEER_ERRORS)
    )


def dead_processes(wait_s: float = 10.0) -> list[int]:
    """The processes the coordination service no longer counts as live (polled up to
    `wait_s`: it notices a dead peer only after the heartbeat timeout); [] if it cannot say
    (e.g. the coordinator itself is gone)."""
    client, n = distributed.global_state.client, jax.process_count()
    deadline = time.monotonic() + wait_s
    while True:
        try:
            live = client.get_live_nodes(list(range(n)))
        except Exception:  # the coordinator is unreachable: it may be the dead one
            return []
        dead = sorted(set(range(n)) - set(live))
        if dead or time.monotonic() >= deadline:
            return dead
        time.sleep(1.0)


def lost_line(error: BaseException, resume_step: int | None, workdir: str) -> str:
    """The one line: which process saw it, who is gone, the cause, where the run resumes."""
    me, n = jax.process_index(), jax.process_count()
    dead = dead_processes()
    who = (
        f"process(es) {', '.join(map(str, dead))} of {n} stopped"
        if dead
        else f"another of the {n} processes stopped or became unreachable"
    )
    cause = str(error).strip().splitlines()[0]
    cause = cause.split("] ", 1)[-1] if "] " in cause else cause  # gloo's source location
    resume = (
        f"the run resumes from checkpoint {resume_step} in {workdir}"
        if resume_step is not None
        else "no checkpoint was written yet: the run starts again"
    )
    return (
        f"error: process {me} of {n}: {who} ({cause}); restart all {n} processes with the "
        f"same command: {resume}."
    )


def mute_stderr() -> int:
    """Point file descriptor 2 at /dev/null (the C++ runtime's threads log the lost peer on
    it at any moment) and return a duplicate of the real stderr for `exit_now`."""
    sys.stderr.flush()
    real = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    return real


def exit_now(line: str, stderr_fd: int = 2) -> None:
    """Write `line` to `stderr_fd` and leave without the exit handlers (see the module doc)."""
    sys.stdout.flush()
    os.write(stderr_fd, (line + "\n").encode())
    os._exit(EXIT_CODE)
