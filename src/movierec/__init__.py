"""movierec: a batch recommendation pipeline for movie platforms."""

__version__ = "0.1.0"
__all__ = ["__version__"]
