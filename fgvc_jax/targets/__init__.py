"""Device descriptions for compiling without the device (`fgvc_jax.aot`)."""
