"""movierec: a batch recommendation pipeline for movie platforms.

``movierec.load(config)`` gives the Python API (:class:`movierec.service.Service`):
``recommend(user, n)``, ``recommend_new(ratings, n)``, ``similar(movie, n)``,
``feedback(user, movie, rating=...)``.
"""

from movierec._version import __version__
__all__ = ["__version__", "load"]


def load(config=None, overrides=()):
    """The Python API over a config's serving model version (see :func:`movierec.service.load`)."""
    from movierec.service import load as _load  # pandas and the model only when asked for

    return _load(config, overrides)
