"""A run's folder: its lock and config history, orbax checkpoints, metrics log and model card."""
