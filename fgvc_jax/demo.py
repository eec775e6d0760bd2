"""Forward-pass demo of the backbones (the README's first command until the trainer lands)."""
import time

import jax
import jax.numpy as jnp
import numpy as np

from fgvc_jax.convert import build


def main():
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 224, 224, 3)), jnp.float32)
    for arch in ("resnet50", "swin_tiny_patch4_window7_224"):
        model = build(arch, 1000)
        variables = jax.jit(model.init)(jax.random.PRNGKey(0), x)
        n = sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(variables["params"]))
        t0 = time.perf_counter()
        logits = jax.jit(model.apply)(variables, x).block_until_ready()
        print(f"{arch}: {n / 1e6:.2f} M params, logits {logits.shape}, first call {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
