"""Errors the CLI turns into one clear line and a non-zero exit (never a traceback)."""


class EdgecxrError(Exception):
    """A problem the user can fix: bad input, missing data, a model that does not match its metadata."""


class ImageError(EdgecxrError):
    """One image cannot be used; batch jobs skip it and report why."""


class MetadataError(EdgecxrError):
    """A model's metadata file is missing, invalid, or does not match the model file."""


class MissingDependencyError(EdgecxrError):
    """An optional package (an extra, or an inference runtime) is not installed."""
