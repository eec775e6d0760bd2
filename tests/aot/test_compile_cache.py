"""The persistent compilation cache: a second process compiling the same program loads it."""

import json
import os
import subprocess
import sys

from fgvc_jax.runtime import compile_cache

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Compiles one small program with the cache on; prints the cache events JAX recorded and the
# compile seconds.
_PROGRAM = """
import json, sys, time
from fgvc_jax.runtime import compile_cache
compile_cache.enable(sys.argv[1])
import jax, jax.numpy as jnp
events = []
jax.monitoring.register_event_listener(lambda name, **kw: events.append(name))
def f(x, w):
    for _ in range(4):
        x = jnp.tanh(x @ w)
    return jax.grad(lambda x: jnp.sum(x ** 2))(x)
t = time.perf_counter()
jax.jit(f).lower(jnp.ones((64, 64)), jnp.ones((64, 64))).compile()
print(json.dumps({"events": events, "compile_s": time.perf_counter() - t}))
"""


def _compile(workdir) -> dict:
    env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
    out = subprocess.run(
        [sys.executable, "-c", _PROGRAM, str(workdir)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_second_process_hits_the_cache(tmp_path):
    first = _compile(tmp_path)
    cache = tmp_path / compile_cache.SUBDIR
    files = [p for p in cache.iterdir() if p.is_file()]
    assert files, f"no cache entry written under {cache}"
    hits = "/jax/compilation_cache/cache_hits"
    assert hits not in first["events"]
    assert "/jax/compilation_cache/cache_misses" in first["events"]
    second = _compile(tmp_path)
    assert hits in second["events"], second
    print(f"compile {first['compile_s']:.3f} s cold, {second['compile_s']:.3f} s from the cache")


def test_cache_dir_defaults(monkeypatch, tmp_path):
    monkeypatch.delenv(compile_cache.ENV_VAR, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert compile_cache.cache_dir() == str(tmp_path / ".cache" / "fgvc_jax" / "jax_cache")
    monkeypatch.setenv(compile_cache.ENV_VAR, str(tmp_path / "c"))
    assert compile_cache.cache_dir() == str(tmp_path / "c")
    assert compile_cache.cache_dir(str(tmp_path / "run")) == str(tmp_path / "run" / "jax_cache")
