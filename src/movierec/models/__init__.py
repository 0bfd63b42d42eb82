"""The factorization model and its trainers."""

from movierec.models.mf import MatrixFactorization, TrainData

__all__ = ["MatrixFactorization", "TrainData"]
