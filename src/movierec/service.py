"""The Python API: a process that stays running asks for lists and records feedback.

``movierec.load(config)`` gives a :class:`Service`; ``movierec recommend``/``feedback``
and the HTTP service (:mod:`movierec.server`) make their lists and record their events
through the same methods, so there is one implementation of each:

>>> import movierec
>>> svc = movierec.load("configs/default.yaml")
>>> svc.recommend("u00001", n=5)["items"][0]["title"]          # doctest: +SKIP
>>> svc.recommend_new({"m0001": 5, "m0042": 2}, n=5)            # doctest: +SKIP
>>> svc.feedback("u00001", "m0007", rating=4.5)                 # doctest: +SKIP

A service loads the serving version once and, when ``movierec run`` promotes another or
``movierec models rollback`` switches back, loads that one (see :meth:`Service.maybe_reload`;
a call that started on the old version finishes on it). A version that fails to load is
not switched to: the old one keeps serving and :meth:`Service.health` says why. Feedback
recorded since the version was trained is read as it arrives (:class:`FeedbackTail`), so
an event is in that viewer's next list at once.

While ``serve.experiment`` is set, each viewer is assigned one of its two versions by a
stable hash of their id and every list made for a viewer is logged as an exposure
(:mod:`movierec.experiment`).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

import numpy as np
from movierec._lazy import pd

from movierec.config import Config, load_config
from movierec.errors import ConfigError, DataError, ModelError
from movierec.feedback import FeedbackTail, events_frame, rating_scale, record
from movierec.registry import Registry

if TYPE_CHECKING:  # pragma: no cover
    from movierec.ranking import ModelBundle

log = logging.getLogger("movierec")


class NotFound(DataError):
    """An id the model does not know where one must be known (a movie, a --strict viewer)."""


@dataclass
class Served:
    """One loaded version: the bundle, its feedback since training, its catalogue."""

    name: str
    bundle: "ModelBundle"
    tail: FeedbackTail
    scale: tuple[float, float] | None
    loaded: float = field(default_factory=time.time)

    @property
    def movies(self) -> pd.Index:
        """The catalogue feedback is checked against (movie ids)."""
        return self.bundle.movie_ids


def load(config: str | Path | Config | None = None, overrides: Iterable[str] = ()) -> "Service":
    """A :class:`Service` over the config's registry (a path, a loaded Config, or None for
    the defaults), the serving version loaded.

    Raises:
        ConfigError: the config is invalid, or the privacy key differs from the version's;
        ModelError: nothing trained yet, or the serving version cannot be loaded.
    """
    cfg = config if isinstance(config, Config) else load_config(config, tuple(overrides))
    svc = Service(cfg)
    if svc.served is None:
        raise ModelError(svc.health()["error"])
    return svc


class Service:
    """Lists, similar movies and feedback over the serving version of one workdir.

    ``require_model=False`` (the HTTP service) starts without a trained version and picks up
    the first one promoted."""

    def __init__(self, cfg: Config, require_model: bool = False) -> None:
        self.cfg = cfg
        self.registry = Registry.of(cfg)
        self._lock = threading.Lock()
        self._checked = 0.0
        self.served: Served | None = None
        self.error: str | None = None  # why nothing serves (no model yet, a damaged current)
        self.reload_error: dict | None = None  # the last version that failed to load, and why
        self.reloads = 0
        self.started = time.time()
        self.experiment = None
        self._watcher: threading.Thread | None = None
        self._stop = threading.Event()
        try:
            self.served = self._load(self.registry.current_name())
        except ModelError as exc:
            if require_model:
                raise
            self.error = str(exc)
            self.reload_error = {"version": self._current_or_none(), "error": str(exc)}
        self._checked = time.monotonic()
        if cfg.serve.experiment.name:
            from movierec.experiment import Experiment

            self.experiment = Experiment(cfg, self)

    # ------------------------------------------------------------------ versions
    def _current_or_none(self) -> str | None:
        try:
            return self.registry.current_name()
        except ModelError:
            return None

    def _load(self, name: str | None) -> Served:
        """Load a version (its files checked) and check the privacy key against it."""
        from movierec.privacy import check_key

        if name is None:
            raise ModelError(f"no trained model in {self.registry.root.parent}; run `movierec train "
                             "--config ...` first")
        bundle = self.registry.load(name)
        check_key(bundle.meta.get("privacy_key_fingerprint"), self.cfg.privacy, name)
        sc = bundle.meta.get("rating_scale") or {}
        tail = FeedbackTail(self.cfg.workdir, bundle.meta.get("feedback"))
        tail.refresh()
        scale = rating_scale(self.cfg, (sc["min"], sc["max"]) if "min" in sc else None)
        return Served(name, bundle, tail, scale)

    def version(self, name: str) -> Served:
        """A version by name, loaded once (the experiment's arms); ``current``: the serving one."""
        if name == "current":
            return self.require()
        with self._lock:
            cache = self.__dict__.setdefault("_pinned", {})
            if name not in cache:
                cache[name] = self._load(name)
            return cache[name]

    def maybe_reload(self, force: bool = False) -> bool:
        """Follow ``models/current``: at most every ``serve.reload_seconds`` (or now, ``force``),
        load the version it names if that is not the one serving. The swap is one reference:
        a call holding the old :class:`Served` finishes on it. A version that fails to load
        is not switched to and is not tried again until ``current`` changes; True if switched."""
        now = time.monotonic()
        if not force and now - self._checked < self.cfg.serve.reload_seconds:
            return False
        with self._lock:
            if not force and now - self._checked < self.cfg.serve.reload_seconds:
                return False
            self._checked = now
            try:
                name = self.registry.current_name()
            except ModelError as exc:
                self.reload_error = {"version": None, "error": str(exc)}
                return False
            serving = self.served.name if self.served else None
            failed = self.reload_error.get("version") if self.reload_error else None
            if name is None or name == serving or (name == failed and not force):
                return False
            try:
                new = self._load(name)
            except (ModelError, ConfigError, OSError, ValueError) as exc:
                self.reload_error = {"version": name, "error": str(exc), "time": time.time()}
                log.error("serve: version %s failed to load; %s keeps serving: %s", name, serving or "nothing", exc)
                return False
            self.served, self.error, self.reload_error = new, None, None
            self.reloads += 1
            log.info("serve: now serving %s (was %s)", name, serving or "nothing")
            return True

    def watch(self) -> None:
        """Look at ``current`` every ``serve.reload_seconds`` in a background thread, so that a
        request never waits for a version to load (without it, calls look themselves)."""
        if self._watcher is not None:
            return
        self._stop.clear()

        def loop() -> None:
            while not self._stop.wait(self.cfg.serve.reload_seconds):
                try:
                    self.maybe_reload(force=False)
                except Exception:  # noqa: BLE001 - the watcher must outlive any one failure
                    log.exception("serve: looking at models/current failed")

        self._watcher = threading.Thread(target=loop, name="movierec-reload", daemon=True)
        self._watcher.start()

    def stop(self) -> None:
        """Stop the background watcher (see :meth:`watch`)."""
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout=5)
            self._watcher = None

    def require(self) -> Served:
        """The serving version (ModelError when there is none yet)."""
        if self._watcher is None:
            self.maybe_reload()
        served = self.served
        if served is None:
            raise ModelError(self.error or "no model version is serving")
        return served

    def _for_viewer(self, model_user: str) -> tuple[Served, str | None]:
        """The version that serves this viewer (their experiment arm, or the current one)."""
        if self.experiment is not None:
            return self.experiment.served_for(model_user)
        return self.require(), None

    # ------------------------------------------------------------------ lists
    def _n(self, n: int | None) -> int:
        n = self.cfg.recommend.n if n is None else int(n)
        if n < 1:
            raise DataError(f"n must be at least 1, got {n}")
        return n

    def model_id(self, user: str) -> str:
        """The id the model knows a viewer by (a pseudonym where ``privacy.pseudonymize_ids``)."""
        from movierec.privacy import maybe_pseudonym

        return maybe_pseudonym(str(user).strip(), self.cfg.privacy)

    def recommend(self, user: str, n: int | None = None, explain: bool = False,
                  ratings: pd.DataFrame | Mapping[str, float] | None = None, strict: bool = False,
                  where: str = "ratings") -> dict:
        """One viewer's top-n, with the feedback they gave since the version was trained folded in
        (and ``ratings`` given now, joining theirs; a viewer the model does not know is folded in
        from them). An unknown viewer without ratings gets the popularity list (``fallback``:
        ``popularity``), or with ``strict`` a :class:`NotFound`. ``explain``: each movie gets the
        reasons the model had for it. The shape is ``movierec recommend --format json``'s; the
        version and experiment arm are in ``served_by``."""
        n = self._n(n)
        user_id = self.model_id(user)
        served, arm = self._for_viewer(user_id)
        bundle = served.bundle
        mine = served.tail.rows(user_id)
        rows = None if ratings is None else bundle.check_ratings(_ratings_frame(ratings), where)
        new_user = bundle.user_index(user_id) < 0
        # a known viewer's events go to the list as they are (no frame for a few dicts); ratings
        # given now and the reasons want them as a frame
        events = events_frame(mine) if rows is not None or explain or new_user else mine
        if rows is not None:
            given = rows.assign(user_id=user_id)
            events = given if events is None else pd.concat([events, given], ignore_index=True)
        if rows is not None and new_user:
            result = bundle.recommend_ratings(user_id, events[events["rating"].notna()].drop_duplicates(
                "movie_id", keep="last")[["movie_id", "rating"]], n,
                exclude=bundle.movie_ids.get_indexer(events["movie_id"].astype(str)))
        else:
            result = bundle.recommend_user(user_id, n, self.cfg.recommend.exclude_seen, events=events,
                                           feedback_weight=self.cfg.recommend.feedback_weight)
        if rows is not None:
            result["ratings_given"] = int(len(rows))
        if new_user and result.get("fallback") == "popularity" and strict:
            shown = repr(str(user)) if not self.cfg.privacy.pseudonymize_ids else f"{user_id} (pseudonym of the id given)"
            raise NotFound(f"user {shown}: unknown to the model (no ratings of theirs in its training data or "
                           "feedback); check the id, or ask without strict for the popularity list")
        if explain:
            from movierec.explain import explain as add_reasons

            new_ratings = {}  # feedback and given ratings since training count as theirs (latest wins)
            if events is not None and len(events):
                rated = events[pd.to_numeric(events["rating"], errors="coerce").notna()]
                idx = bundle.movie_ids.get_indexer(rated["movie_id"].astype(str).str.strip())
                new_ratings = {int(i): float(r) for i, r in zip(idx, pd.to_numeric(rated["rating"])) if i >= 0}
            add_reasons(bundle, user_id, result["items"], threshold=self.cfg.evaluate.relevance_threshold,
                        new_ratings=new_ratings)
        for it in result["items"]:
            it.setdefault("explanation", None)
        result["served_by"] = {"version": served.name, "arm": arm}
        if self.experiment is not None:
            self.experiment.expose(user_id, arm, served.name, result)
        return result

    def recommend_new(self, ratings: pd.DataFrame | Mapping[str, float] | Iterable, n: int | None = None,
                      user: str | None = None) -> dict:
        """Top-n for a viewer the model has never seen, folded in from ``ratings`` (a mapping
        movie id -> rating, (movie_id, rating) pairs, or a frame with those columns). With a
        ``user`` id, their ratings join any the model or feedback has of them (as
        :meth:`recommend` with ``ratings``)."""
        if user is not None:
            return self.recommend(user, n, ratings=ratings)
        n = self._n(n)
        served = self.require()
        bundle = served.bundle
        rows = bundle.check_ratings(_ratings_frame(ratings), "ratings")
        if rows["movie_id"].duplicated().any():  # the latest rating of a movie counts
            rows = rows.drop_duplicates("movie_id", keep="last")
        result = bundle.recommend_ratings("new-user", rows, n)
        result["ratings_given"] = int(len(rows))
        for it in result["items"]:
            it.setdefault("explanation", None)
        result["served_by"] = {"version": served.name, "arm": None}
        return result

    def similar(self, movie: str, n: int | None = None) -> dict:
        """The n movies closest to ``movie`` in the model's taste space (cosine of the item
        vectors the lists are ranked by; for EASE, of its item-item weights).

        Raises:
            NotFound: the movie is not in the version's catalogue.
        """
        n = self._n(n)
        served = self.require()
        b = served.bundle
        m = int(b.movie_ids.get_indexer([str(movie).strip()])[0])
        if m < 0:
            raise NotFound(f"movie {str(movie)!r} is not in the catalogue of model version {served.name}")
        V = _unit_rows(b.item_item[1] if b.item_item is not None else b.vectors[4])
        sims = (V @ V[m]).astype(np.float64)
        sims[m] = -np.inf
        sims[~np.isfinite(sims)] = -np.inf
        order = np.argsort(-sims, kind="stable")[:n]
        items = [dict(row, similarity=row.pop("rank_score")) for row in b._rows(order, sims[order])]
        for it in items:
            it.pop("predicted_rating", None)
        row = b.movies.iloc[m]
        return {"movie_id": str(row["movie_id"]), "title": str(row["title"]), "items": items,
                "served_by": {"version": served.name, "arm": None}}

    # ------------------------------------------------------------------ feedback
    def feedback(self, user: str, movie: str, rating: float | None = None, comment: str | None = None,
                 share_with: str | None = None) -> dict:
        """Record a rating, comment or share, checked as ``movierec feedback`` checks it (the
        serving version's catalogue and scale), appended to the same log; it is in that
        viewer's next list at once. Returns the event as recorded."""
        served = self.served
        catalogue = (served.movies, served.scale) if served is not None else None
        if rating is not None:
            try:
                rating = float(rating)
            except (TypeError, ValueError):
                raise DataError(f"feedback: rating {rating!r} is not a number") from None
        return record(self.cfg, user, movie, rating, comment, share_with, catalogue=catalogue,
                      key_checked=served is not None)

    # ------------------------------------------------------------------ state
    def health(self) -> dict:
        """What serves: the version, when it was trained, how fresh its data is, feedback since,
        the last reload that failed, the experiment."""
        self.maybe_reload()
        s = self.served
        out: dict[str, Any] = {"status": "ok" if s is not None else "unavailable",
                               "version": s.name if s else None, "uptime_seconds": round(time.time() - self.started, 1),
                               "reloads": self.reloads, "reload_error": self.reload_error}
        if s is None:
            out["error"] = self.error or "no model version is serving"
            return out
        meta = s.bundle.meta
        s.tail.refresh()
        out.update({
            "trained": meta.get("created"),
            "train_ratings": meta.get("train_ratings"),
            "loaded": _utc(s.loaded),
            "data": {"feedback_events_since_training": s.tail.count,
                     "last_feedback": _utc(s.tail.last_time) if s.tail.last_time else None,
                     "trained_on_feedback_until": _utc((meta.get("feedback") or {}).get("last_time"))},
        })
        if self.reload_error:
            out["status"] = "degraded"
        if self.experiment is not None:
            out["experiment"] = self.experiment.describe()
        return out


def _utc(t: float | None) -> str | None:
    if t is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(float(t)))


def _unit_rows(V: Any) -> np.ndarray:
    import scipy.sparse as sp

    V = V.toarray() if sp.issparse(V) else np.asarray(V)
    V = V.astype(np.float64)
    return V / np.maximum(np.linalg.norm(V, axis=1, keepdims=True), 1e-12)


def _ratings_frame(ratings: Any) -> pd.DataFrame:
    """(movie_id, rating) rows from a frame, a mapping or pairs / dicts."""
    if isinstance(ratings, pd.DataFrame):
        df = ratings
    elif isinstance(ratings, Mapping):
        df = pd.DataFrame({"movie_id": list(ratings.keys()), "rating": list(ratings.values())})
    else:
        rows = list(ratings)
        if rows and isinstance(rows[0], Mapping):
            df = pd.DataFrame(rows)
        else:
            df = pd.DataFrame(rows, columns=["movie_id", "rating"])
    if not {"movie_id", "rating"} <= set(df.columns):
        raise DataError("ratings: give movie_id and rating for each movie")
    if not len(df):
        raise DataError("ratings: give at least one rating")
    df = df[["movie_id", "rating"]].copy()
    df["movie_id"] = df["movie_id"].astype(str).str.strip()
    r = pd.to_numeric(df["rating"], errors="coerce")
    if r.isna().any():
        k = int(np.flatnonzero(r.isna().to_numpy())[0])
        raise DataError(f"ratings: row {k + 1}: rating {df['rating'].iloc[k]!r} is not a number")
    df["rating"] = r.astype(np.float64)
    return df
