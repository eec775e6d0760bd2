"""The runtime: device mesh and jax.distributed, precision rules, the compilation cache, processes."""
