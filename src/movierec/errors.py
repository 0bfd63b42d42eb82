"""The small set of errors movierec raises on purpose, and their exit codes (product.md)."""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_GATE = 3
EXIT_DATA = 65
EXIT_UNAVAILABLE = 69
EXIT_LOCKED = 75
EXIT_CONFIG = 78


class MovieRecError(Exception):
    """Base class: an expected failure with a message meant for the user."""

    exit_code = EXIT_FAILURE


class ConfigError(MovieRecError):
    """The configuration is invalid: unknown key, wrong type, impossible value."""

    exit_code = EXIT_CONFIG


class DataError(MovieRecError):
    """Input data is invalid: missing file or column, bad encoding, too many bad rows."""

    exit_code = EXIT_DATA


class ModelError(MovieRecError):
    """No usable model: not trained yet, corrupt, or incompatible with the data."""

    exit_code = EXIT_FAILURE


class StorageError(MovieRecError):
    """A file could not be written (disk full, no permission); names the stage and the path."""

    exit_code = EXIT_FAILURE


class ClusterError(MovieRecError):
    """The Ray cluster went away during a run (its head, a node or the connection lost);
    sysexits' EX_UNAVAILABLE: a later try may succeed once the cluster is back."""

    exit_code = EXIT_UNAVAILABLE


class LockError(MovieRecError):
    """Another run holds the workdir lock."""

    exit_code = EXIT_LOCKED


class GateError(MovieRecError):
    """``movierec run``: the new model failed the quality gate; the current one keeps serving."""

    exit_code = EXIT_GATE
