"""Why this movie? Reasons computed from the model and the user's own data.

Three kinds of evidence, each checked rather than templated:

* **your ratings**: the movies the user rated highly that *raise* the recommended movie's
  predicted rating the most — measured by refitting the user's vector from their ratings
  with and without each (fold-in, the model's movies fixed; ``score_drop`` is the rise).
  Only a rise of at least ``min_effect`` stars (of a 1-5 scale, scaled to the data's) is
  cited, and a rated movie is cited for at most ``MAX_REUSE`` picks of a list (a movie
  cited everywhere explains nothing).
* **people you trust**: the user's neighbours in the social graph who rated the movie
  highly (what the social term of the model pulls the user toward).
* **what you write**: the user's review sentiment for the movie's genres (training
  reviews), when it is clearly warm.

With none of these, the reason is said as it is: the movie is popular with viewers whose
ratings resemble the user's (the ranking model's co-watching signal).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from movierec.ranking import ModelBundle

MAX_CITED = 3
MAX_CANDIDATES = 100  # rated movies weighed as evidence per list (the closest to its picks)
MAX_REUSE = 2  # picks of one list that may cite the same rated movie
MIN_EFFECT = 0.05  # stars on a 1-5 scale: a smaller rise of the predicted rating is no reason
FALLBACK_REASON = "Popular with viewers whose ratings resemble yours."
NO_RATINGS_REASON = "Chosen from your profile, reviews and the people you trust (you have rated nothing yet)."


def genre_sentiment_table(review_sentiment: pd.DataFrame | None, movies: pd.DataFrame) -> pd.DataFrame | None:
    """Each user's mean review sentiment per genre: user_idx, genre, mean_sentiment, reviews.

    Stored in a model version, so that explanations quote the sentiment the version was
    trained with, whatever the workdir's artifacts hold later."""
    if review_sentiment is None or review_sentiment.empty or "genres" not in movies.columns:
        return None
    genres = movies.set_index("movie_idx")["genres"].reindex(review_sentiment["movie_idx"]).fillna("").astype(str)
    df = pd.DataFrame({"user_idx": review_sentiment["user_idx"].to_numpy(), "genre": genres.str.split("|").to_numpy(),
                       "s": review_sentiment["sentiment"].to_numpy(np.float64)}).explode("genre")
    df = df[df["genre"].notna() & (df["genre"] != "") & df["s"].notna()]
    if df.empty:
        return None
    g = df.groupby(["user_idx", "genre"])["s"].agg(["mean", "size"]).reset_index()
    return pd.DataFrame({"user_idx": g["user_idx"].to_numpy(np.int32), "genre": g["genre"].astype(str).to_numpy(),
                         "mean_sentiment": g["mean"].to_numpy(np.float32), "reviews": g["size"].to_numpy(np.int32)})


def explain(bundle: ModelBundle, user_id: str, items: list[dict], *, threshold: float = 4.0,
            new_ratings: dict[int, float] | None = None, min_effect: float = MIN_EFFECT) -> list[dict]:
    """Add ``explanation`` (text) and ``evidence`` (the numbers behind it) to each item.

    Every input comes from the model version (``bundle``): its ratings, the neighbourhood
    it was trained with and its users' genre sentiment, never the workdir's artifacts.
    ``new_ratings`` (movie index -> rating): the user's feedback since the version was
    trained, which the list folded in; they count as the user's ratings here too."""
    u = bundle.user_index(user_id)
    blank = u < 0 or bool(bundle.knows_nothing(np.array([u]))[0])  # nothing rated or reviewed: popularity
    if (blank and not new_ratings) or bundle.rated is None:
        for it in items:  # the popularity fallback: the only reason there is
            it["explanation"], it["evidence"] = "Among the most watched movies (no ratings of yours yet).", {}
        return items
    rated = bundle.rated
    mine = {} if u < 0 else dict(zip(rated.indices[rated.indptr[u]: rated.indptr[u + 1]].tolist(),
                                     rated.data[rated.indptr[u]: rated.indptr[u + 1]].tolist()))
    mine.update(new_ratings or {})  # a new user (fold-in) has only these
    js = np.fromiter(mine.keys(), np.int64, len(mine))
    rs = np.fromiter(mine.values(), np.float64, len(mine))
    mu, _, bi, _, Q = bundle.rating_vectors
    Qn = Q / np.maximum(np.linalg.norm(Q, axis=1, keepdims=True), 1e-9)
    cut = max(threshold, float(rs.mean()) if len(rs) else threshold)
    high = np.flatnonzero(rs >= cut)
    span = float(bundle.model.rating_max_ - bundle.model.rating_min_) or 4.0
    min_drop = min_effect * span / 4.0
    picks = np.array([int(bundle.movie_ids.get_loc(it["movie_id"])) for it in items], dtype=np.int64)
    drops = np.zeros((len(picks), 0))
    if len(high) > MAX_CANDIDATES:  # a heavy rater: the rated movies closest to some pick
        close = (Qn[js[high]] @ Qn[picks].T).max(1)
        high = high[np.sort(np.argsort(-close, kind="stable")[:MAX_CANDIDATES])]
    if len(js) and len(high):
        # leaving rated movie h out changes the fold-in solution by (db_h, dp_h), the same for
        # every pick: the drop of pick i is db_h + Q[i] . dp_h (one product for the whole list)
        b_all, p_all = bundle.fold_in(js, rs)
        loo = [bundle.fold_in(np.delete(js, h), np.delete(rs, h)) for h in high]
        db = np.array([b_all - b for b, _ in loo])
        dp = np.array([p_all - p for _, p in loo])
        drops = db[None, :] + Q[picks].astype(np.float64) @ dp.T
    titles = bundle.movies["title"].astype(str).to_numpy()
    mid = bundle.movie_ids.to_numpy()
    uid = bundle.user_ids.to_numpy()
    friends = np.zeros(0, np.int64)
    neighbours = bundle.neighbours() if u >= 0 else None
    if neighbours is not None and len(neighbours):
        friends = neighbours.loc[neighbours["user_idx"] == u, "neighbour_idx"].to_numpy()
    gs = bundle.genre_sentiment() if u >= 0 else None
    genre_sent = {} if gs is None else {
        str(g): (float(m), int(n)) for g, m, n in gs.loc[gs["user_idx"] == u, ["genre", "mean_sentiment", "reviews"]]
        .itertuples(index=False)}
    cited_in = np.zeros(len(high), np.int64)  # picks that cite each rated movie so far (list order)
    for row, (it, i) in enumerate(zip(items, picks)):
        ev: dict = {"similar_rated": [], "trusted_friends": [], "genre_sentiment": []}
        if drops.shape[1]:
            for c in np.argsort(-drops[row], kind="stable"):
                if drops[row, c] < min_drop or len(ev["similar_rated"]) == MAX_CITED:
                    break
                if cited_in[c] >= MAX_REUSE:
                    continue
                cited_in[c] += 1
                h = high[c]
                ev["similar_rated"].append({"movie_id": str(mid[js[h]]), "title": titles[js[h]],
                                            "your_rating": float(rs[h]),
                                            "similarity": round(float(Qn[js[h]] @ Qn[i]), 3),
                                            "score_drop": round(float(drops[row, c]), 4)})
        for v in friends:
            r = rated[v, i]
            if r >= threshold:
                ev["trusted_friends"].append({"user_id": str(uid[v]), "rating": float(r)})
        ev["trusted_friends"] = ev["trusted_friends"][:MAX_CITED]
        for genre in str(it.get("genres", "")).split("|"):
            if genre in genre_sent and genre_sent[genre][0] >= 0.3 and genre_sent[genre][1] >= 2:
                mean, n = genre_sent[genre]
                ev["genre_sentiment"].append({"genre": genre, "mean_sentiment": round(mean, 3), "reviews": n})
        it["evidence"] = ev
        it["explanation"] = _sentence(ev) or (FALLBACK_REASON if len(js) else NO_RATINGS_REASON)
    return items


def _sentence(ev: dict) -> str | None:
    parts = []
    if ev["similar_rated"]:
        cited = ", ".join(f"{_movie_name(e)} ({e['your_rating']:g})" for e in ev["similar_rated"])
        parts.append(f"you rated {cited} highly and this is close to them in taste")
    if ev["trusted_friends"]:
        n = len(ev["trusted_friends"])
        who = ", ".join(e["user_id"] for e in ev["trusted_friends"])
        parts.append(f"{n} {'person' if n == 1 else 'people'} you trust rated it highly ({who})")
    if ev["genre_sentiment"]:
        g = max(ev["genre_sentiment"], key=lambda e: e["mean_sentiment"])
        parts.append(f"you write warmly about {g['genre']} ({g['reviews']} reviews)")
    if not parts:
        return None
    text = "; ".join(parts)
    return text[0].upper() + text[1:] + "."


def _movie_name(e: dict) -> str:
    """How a cited movie is named in a sentence: its title, or "movie <id>" where the data
    has no title (cleaning then puts the movie id in the title column). A bare id reads as
    a rating: "You rated 5 (3.5) highly"."""
    title = str(e.get("title") or "").strip()
    mid = str(e.get("movie_id", ""))
    if not title or title == mid or title.lower() == "nan":
        return f"movie {mid}"
    return title
