"""Per-epoch bookkeeping shared by both trainers (SGD in mf.py, Adam in _adam.py): kept apart so
that neither trainer imports the other."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from movierec.errors import ModelError
from movierec.models.train_data import TrainData

if TYPE_CHECKING:  # pragma: no cover
    from movierec.models.mf import MatrixFactorization

log = logging.getLogger("movierec.models.mf")

MIN_EPOCHS = 10


@dataclass
class History:
    train_rmse: list[float] = field(default_factory=list)
    val_rmse: list[float] = field(default_factory=list)
    best_epoch: int = 0


class EpochTracker:
    """Per-epoch bookkeeping shared by both trainers: training and validation RMSE, the
    best state so far, and early stopping (restoring the best state at the end)."""

    def __init__(self, model: "MatrixFactorization", data: TrainData, va: np.ndarray) -> None:
        from movierec.progress import Progress

        self.model, self.data, self.va = model, data, va
        self.history = History()
        self.best, self.best_state, self.bad = np.inf, None, 0
        self.progress = Progress(model.epochs, f"training ({model.optimizer})", unit="epoch")

    def end_epoch(self, epoch: int, sse: float, n_train: int, val_sse: float | None = None) -> bool:
        """Record the epoch; True when training should stop. ``val_sse``: the validation
        squared error summed by the caller (else computed over the validation ratings)."""
        m, hist = self.model, self.history
        if not np.isfinite(sse):
            self.progress.close()
            raise ModelError(f"training diverged in epoch {epoch + 1} (loss is not finite); lower "
                             "model.learning_rate or raise model.reg / model.reg_features")
        hist.train_rmse.append(float(np.sqrt(sse / max(1, n_train))))
        m._record_validation(hist, self.data, self.va, epoch, val_sse)
        shown = {"train_rmse": f"{hist.train_rmse[-1]:.4f}"}
        if hist.val_rmse:
            shown["val_rmse"] = f"{hist.val_rmse[-1]:.4f}"
        self.progress.update(1, **shown)
        if not len(self.va):
            hist.best_epoch = epoch
            return False
        v = hist.val_rmse[-1]
        if v < self.best - 1e-5:
            self.best, self.best_state, self.bad, hist.best_epoch = v, m._state(), 0, epoch
            return False
        self.bad += 1
        # factors start small and validation RMSE can plateau before it falls:
        # never stop in the first few epochs
        if self.bad >= m.patience and epoch + 1 >= MIN_EPOCHS:
            log.info("early stopping after epoch %d (best %d, validation RMSE %.4f)",
                     epoch + 1, hist.best_epoch + 1, self.best)
            return True
        return False

    def finish(self) -> History:
        self.progress.close()
        if self.best_state is not None:
            self.model._restore(self.best_state)
        return self.history
