"""TFDS builders for the datasets the TFDS catalog lacks or cannot download."""
