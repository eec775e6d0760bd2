"""Configs: one file per method (`get_config(arg)`, arg = dataset or `synthetic`)."""
