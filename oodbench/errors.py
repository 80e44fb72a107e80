"""Errors a user can fix. The CLI prints their message without a traceback and exits with status 2."""


class OodbenchError(Exception):
    """Base class: the message says what went wrong and what to do about it."""


class ConfigError(OodbenchError):
    """An unknown option value, an incompatible combination of options, or a bad run directory."""


class UnknownNameError(ConfigError):
    """A name that is not in a registry (method, data set, threat model, architecture)."""


class DataError(OodbenchError):
    """A data set that is missing, truncated or in an unexpected layout."""


class CheckpointError(OodbenchError):
    """A checkpoint that is unreadable, truncated, or belongs to another method / architecture / head size."""


class ScoreError(OodbenchError):
    """A detector produced non-finite scores; no metric is computed from them."""


class FeatureError(OodbenchError):
    """A model whose features cannot be found: no final nn.Linear classifier head, or no submodule of a given name."""


class NotFittedError(OodbenchError):
    """A post-hoc detector asked to score before it was fitted (or its fitted state loaded)."""
