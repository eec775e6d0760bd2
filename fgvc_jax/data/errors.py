"""The one exception type for user mistakes in data configuration or files."""


class DataError(ValueError):
    """A dataset is missing, malformed or misconfigured; the message says what to fix."""
