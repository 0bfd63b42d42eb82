"""Review content: what reviews *say*, as vectors for movies and viewers, and the map from
that content to the factorization's vectors.

The sentiment stage keeps each review's sentence embedding (``sentiment.text_features``: the
same forward pass that scores it, so reading content costs no second model call). Here:

- a movie's content vector is the mean of the embeddings of every visible review of it, by
  anyone (critics, early viewers), L2-normalised, with two numbers beside it: how many reviews
  it has (log) and their mean sentiment;
- a viewer's content vector is the same over what they wrote.

:class:`ContentMap` is a ridge regression (an L2 weight per output, chosen by
leave-one-out) fitted on the movies (viewers) that have both ratings and content, from their
content to their fitted vectors; it then gives a movie that has reviews and no rating (a
viewer who writes but never rates) a place in the viewers' taste space. The alternative,
the content vectors as item features inside ``q_i + V y_i`` with no map, ranks new movies about
half as well (``benchmarks/results/content_in_features.md``): the free factors absorb what the
features would explain for every movie with ratings, so V learns little from them.

Reviews on test (user, movie) pairs are left out, as in ``fuse``: such a review restates a
rating the model is measured on.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

import numpy as np
import pandas as pd
from movierec._lazy import sp

log = logging.getLogger(__name__)

#: L2 weights tried by leave-one-out when ``model.content_reg`` is unset
ALPHAS = np.logspace(-2, 5, 15)


class ReviewContent(NamedTuple):
    """Content vectors (rows of zeros where a movie / viewer has no review with features)."""

    item: np.ndarray  # n_items x (d + 2): normalised mean embedding, log1p(reviews), mean sentiment
    item_has: np.ndarray  # n_items bool
    user: np.ndarray  # n_users x (d + 2)
    user_has: np.ndarray  # n_users bool


def _means(idx: np.ndarray, emb: np.ndarray, sent: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per index: [L2-normalised mean embedding, log1p(count), mean sentiment], and who has any."""
    m = sp.csr_matrix((np.ones(len(idx), np.float32), (idx, np.arange(len(idx)))), shape=(n, len(idx)))
    count = np.asarray(m.sum(1)).ravel()
    mean = np.asarray(m @ emb)
    norm = np.linalg.norm(mean, axis=1, keepdims=True)
    mean = np.where(norm > 0, mean / np.maximum(norm, 1e-12), 0.0)
    s = np.asarray(m @ sent.astype(np.float32)).ravel() / np.maximum(count, 1)
    out = np.hstack([mean, np.log1p(count)[:, None], s[:, None]]).astype(np.float32)
    return out, count > 0


def review_content(review_sentiment: pd.DataFrame | None, test_pairs: pd.DataFrame | None, n_users: int,
                   n_items: int) -> ReviewContent | None:
    """Content vectors of movies and viewers from the reviews' embeddings (None: no review
    carries one, e.g. ``sentiment.text_features: false`` or every text read by another scorer)."""
    if review_sentiment is None or review_sentiment.empty or "features" not in review_sentiment.columns:
        return None
    from movierec.data.schemas import pair_key
    from movierec.sentiment.cache import features_from_bytes

    rs = review_sentiment
    has = rs["features"].map(lambda b: isinstance(b, bytes) and len(b) > 0).to_numpy(bool, copy=True)
    if test_pairs is not None and len(test_pairs):
        has &= ~np.isin(pair_key(rs), pair_key(test_pairs))
    if not has.any():
        return None
    rs = rs[has]
    emb = features_from_bytes(rs["features"].to_numpy(object))
    sent = rs["sentiment"].to_numpy(np.float32)
    item, item_has = _means(rs["movie_idx"].to_numpy(np.int64), emb, sent, n_items)
    user, user_has = _means(rs["user_idx"].to_numpy(np.int64), emb, sent, n_users)
    return ReviewContent(item, item_has, user, user_has)


class ContentMap:
    """Ridge regression content -> targets, with the two count/sentiment columns standardised
    and an intercept; ``alpha`` None: each target's own L2 weight, chosen by leave-one-out
    (efficient for all alphas at once); ``alpha_`` is their median (for the log)."""

    def __init__(self, alpha: float | None = None) -> None:
        self.alpha = alpha

    def fit(self, X: np.ndarray, T: np.ndarray, w: np.ndarray | None = None) -> "ContentMap":
        from sklearn.linear_model import Ridge, RidgeCV

        X = np.asarray(X, np.float64)
        self.mean_ = X[:, -2:].mean(0)
        self.scale_ = X[:, -2:].std(0) + 1e-6
        Xs = self._scaled(X)
        if self.alpha is None:
            reg = RidgeCV(alphas=ALPHAS, alpha_per_target=True).fit(Xs, T, sample_weight=w)
            self.alpha_ = float(np.median(reg.alpha_))
        else:
            reg = Ridge(alpha=self.alpha).fit(Xs, T, sample_weight=w)
            self.alpha_ = float(self.alpha)
        self.coef_ = np.asarray(reg.coef_, np.float32).reshape(T.shape[1], -1)
        self.intercept_ = np.asarray(reg.intercept_, np.float32).reshape(-1)
        return self

    def _scaled(self, X: np.ndarray) -> np.ndarray:
        X = np.array(X, np.float64, copy=True)
        X[:, -2:] = (X[:, -2:] - self.mean_) / self.scale_
        return X

    def predict(self, X: np.ndarray) -> np.ndarray:
        return (self._scaled(X) @ self.coef_.T.astype(np.float64) + self.intercept_).astype(np.float32)

    def as_array(self) -> np.ndarray:
        """(outputs + 2) x (inputs + 1) float32: [coef | intercept] rows, then the standardising
        mean and scale of the last two inputs (padded): what a model version stores."""
        d = self.coef_.shape[1]
        body = np.hstack([self.coef_, self.intercept_[:, None]])
        extra = np.zeros((2, d + 1), np.float32)
        extra[0, -3:-1], extra[1, -3:-1] = self.mean_, self.scale_
        return np.vstack([body, extra]).astype(np.float32)

    @classmethod
    def from_array(cls, a: np.ndarray) -> "ContentMap":
        m = cls()
        m.coef_, m.intercept_ = a[:-2, :-1], a[:-2, -1]
        m.mean_, m.scale_ = a[-2, -3:-1].astype(np.float64), a[-1, -3:-1].astype(np.float64)
        m.alpha_ = float("nan")
        return m
