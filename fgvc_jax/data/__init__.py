"""Datasets (TFDS builders) and input pipelines for fine-grained classification."""

from fgvc_jax.data.config import NAMES, default_config
from fgvc_jax.data.datasets import DatasetInfo, prepare
from fgvc_jax.data.errors import DataError
from fgvc_jax.data.pipeline import eval_iterator, train_iterator
from fgvc_jax.data.preprocess import normalize

__all__ = [
    "NAMES",
    "DataError",
    "DatasetInfo",
    "default_config",
    "eval_iterator",
    "normalize",
    "prepare",
    "train_iterator",
]
