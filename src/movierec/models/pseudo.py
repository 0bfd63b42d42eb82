"""Pseudo-ratings: ratings inferred from reviews that come without stars (a text -> rating
map fitted on the rated reviews of the training part), used by training."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from movierec.sentiment.cache import features_from_bytes

log = logging.getLogger(__name__)


@dataclass
class PseudoRatings:
    table: pd.DataFrame  # user_idx, movie_idx, rating, weight
    calibration: dict  # the map (fit_rating_map's description) and how many reviews it was fitted on


RIDGE_ALPHAS = np.logspace(-3, 3, 13)


def fit_rating_map(sent: np.ndarray, y: np.ndarray, lo: float, hi: float,
                   feats: np.ndarray | None = None) -> tuple[Callable, dict]:
    """Fit a map (sentiment score[, text features]) -> rating on rated reviews.

    With ``feats``: ridge regression (alpha by leave-one-out) on features + score; without:
    a monotone (isotonic) map of the score. Returns ``predict(sent, feats) -> ratings`` (in
    [lo, hi]) and a description (method, and for ridge its alpha and leave-one-out RMSE).
    """
    if feats is not None:
        from sklearn.linear_model import RidgeCV

        reg = RidgeCV(alphas=RIDGE_ALPHAS).fit(np.hstack([feats, sent[:, None]]), y)
        info = {"method": "ridge on text embedding", "alpha": float(reg.alpha_),
                "loo_rmse": round(float(np.sqrt(-reg.best_score_)), 4), "rating_std": round(float(y.std()), 4)}
        return (lambda s, f: np.clip(reg.predict(np.hstack([f, s[:, None]])), lo, hi)), info
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(out_of_bounds="clip", increasing=True).fit(sent, y)
    grid = np.linspace(-1, 1, 9)
    info = {"method": "isotonic on sentiment", "sentiment": grid.round(2).tolist(),
            "rating": iso.predict(grid).round(3).tolist()}
    return (lambda s, f=None: iso.predict(s)), info


def pseudo_ratings(review_sentiment: pd.DataFrame | None, ratings: pd.DataFrame, train: pd.DataFrame,
                   weight: float, min_pairs: int = 20, max_fit: int = 200_000, seed: int = 0) -> PseudoRatings | None:
    """Ratings inferred from reviews that come without stars.

    A map text -> rating (:func:`fit_rating_map`) is fitted on the reviews whose (user,
    movie) pair has a rating in ``train`` (never a test rating), then applied to the reviews
    whose pair has no rating at all in ``ratings``: a real rating, in either part of the
    split, is never replaced or duplicated. Each pseudo-rating carries ``weight`` (< 1), so
    it counts less than a real one.

    The map reads each review's embedding as well as its score when the reviews carry text
    features (``sentiment.text_features``) and at least 50 of them have a training rating:
    it learns the platform's own way of writing a 4 against a 5, which one polarity score
    cannot tell apart. Otherwise it maps the score alone.
    """
    if review_sentiment is None or review_sentiment.empty or weight <= 0:
        return None
    from movierec.data.schemas import pair_key

    rs = review_sentiment.drop_duplicates(["user_idx", "movie_idx"], keep="last")
    tr = pd.Series(train["rating"].to_numpy(np.float32), index=pair_key(train))
    tr = tr[~tr.index.duplicated(keep="last")]
    rk = pair_key(rs)
    both = np.isin(rk, tr.index.to_numpy())
    if both.sum() < min_pairs:
        log.info("pseudo-ratings: only %d reviews with a training rating; none made", int(both.sum()))
        return None
    unrated = ~np.isin(rk, pair_key(ratings))
    y = tr.reindex(rk[both]).to_numpy(np.float64)
    lo, hi = float(train["rating"].min()), float(train["rating"].max())
    sent = rs["sentiment"].to_numpy(np.float64)
    fit, todo = np.flatnonzero(both), np.flatnonzero(unrated)
    # reviews with text features (sentiment.model's embedding; a review another scorer read,
    # in another language, has none and goes through the isotonic map of its score)
    has = (rs["features"].map(lambda b: isinstance(b, bytes) and len(b) > 0).to_numpy(bool)
           if "features" in rs.columns else np.zeros(len(rs), bool))
    use_feats = bool(has[fit].sum() >= 50)
    blobs = rs["features"].to_numpy(object) if use_feats else None

    def feats(rows: np.ndarray) -> np.ndarray | None:  # decoded only for the rows in use
        return features_from_bytes(blobs[rows]) if use_feats else None

    fit_f = fit[has[fit]] if use_feats else fit
    y_f = y[has[fit]] if use_feats else y
    if use_feats and len(fit_f) > max_fit:  # the ridge map needs tens of thousands of reviews at most
        keep = np.sort(np.random.default_rng(seed).choice(len(fit_f), max_fit, replace=False))
        fit_f, y_f = fit_f[keep], y_f[keep]
    predict, info = fit_rating_map(sent[fit_f], y_f, lo, hi, feats(fit_f))
    pred = np.zeros(len(todo))
    with_f = has[todo] if use_feats else np.zeros(len(todo), bool)
    rows_f = todo[with_f]
    chunks = np.array_split(np.arange(len(rows_f)), max(1, len(rows_f) // 100_000)) if len(rows_f) else []
    pred[with_f] = np.concatenate([predict(sent[rows_f[c]], feats(rows_f[c])) for c in chunks] or [np.zeros(0)])
    if (~with_f).any():
        if use_feats:  # featureless reviews (other languages): a monotone map of the score alone
            iso, iso_info = fit_rating_map(sent[fit], y, lo, hi)
            info["featureless"] = {"reviews": int((~with_f).sum()), **iso_info}
        else:
            iso = predict
        pred[~with_f] = iso(sent[todo[~with_f]])
    calib = {"fitted_on": int(both.sum()), "pseudo_ratings": int(unrated.sum()), **info}
    sub = rs[unrated]
    table = pd.DataFrame({
        "user_idx": sub["user_idx"].to_numpy(np.int32),
        "movie_idx": sub["movie_idx"].to_numpy(np.int32),
        "rating": pred.astype(np.float32),
        "weight": np.full(len(sub), min(float(weight), 0.999), np.float32),
    })
    log.info("pseudo-ratings: %d from unrated reviews (%s, fitted on %d rated reviews%s)", len(table),
             calib["method"], int(both.sum()),
             f"; leave-one-out RMSE {calib['loo_rmse']:.3f} vs rating spread {calib['rating_std']:.3f}"
             if "loo_rmse" in calib else "")
    return PseudoRatings(table, calib)
