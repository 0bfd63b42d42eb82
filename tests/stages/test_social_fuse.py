import numpy as np
import pandas as pd

from movierec.config import FeaturesConfig, SocialConfig
from movierec.stages.fuse import fuse
from movierec.stages.social import social, tie_strength


def two_communities(n=20, seed=0):
    """Two dense friend groups (0..n-1, n..2n-1) joined by a single tie."""
    rng = np.random.default_rng(seed)
    rows = []
    for base in (0, n):
        for a in range(base, base + n):
            for b in rng.choice(np.arange(base, base + n), 5, replace=False):
                if a != b:
                    rows.append((a, int(b), 1.0, ""))
    rows.append((0, n, 0.2, ""))
    return pd.DataFrame(rows, columns=["user_idx", "friend_idx", "weight", "text"])


def test_features_separate_planted_communities():
    n = 20
    res = social(two_communities(n), None, 2 * n + 1, SocialConfig())
    f = res.features.set_index("user_idx")
    a, b = f.loc[: n - 1, "community"], f.loc[n : 2 * n - 1, "community"]
    assert a.nunique() == 1 and b.nunique() == 1 and a.iloc[0] != b.iloc[0]
    assert f.loc[2 * n, "community"] == -1 and f.loc[2 * n, "out_degree"] == 0  # isolated user
    assert f.loc[: 2 * n - 1, "clustering"].mean() > 0.1
    assert f["pagerank"].mean() == np.float64(f["pagerank"].mean())  # finite
    nb = res.neighbours
    assert np.allclose(nb.groupby("user_idx")["strength"].sum(), 1.0)
    # neighbourhoods stay inside the community except for the one bridge
    cross = ((nb.user_idx < n) != (nb.neighbour_idx < n)).sum()
    assert cross == 2  # the bridge, both directions (undirected)


def test_message_sentiment_scales_tie_strength():
    ties = pd.DataFrame({"user_idx": [0, 0], "friend_idx": [1, 2], "weight": [0.5, 0.5], "text": ["x", "y"]})
    msgs = pd.DataFrame({"user_idx": [0, 0], "friend_idx": [1, 2], "sentiment": [1.0, -1.0]})
    s = tie_strength(ties, msgs, 0.5)
    assert s.tolist() == [0.75, 0.25]
    # weights on another scale are brought to 0..1
    ties["weight"] = [10.0, 5.0]
    assert tie_strength(ties, None, 0.5).tolist() == [1.0, 0.5]


def test_fuse_uses_training_reviews_only():
    users = pd.DataFrame({"user_idx": [0, 1, 2], "gender": ["F", "M", None], "age": [20, 40, 60]})
    movies = pd.DataFrame({"movie_idx": [0, 1], "title": ["a", "b"], "genres": ["Drama", "Comedy|Drama"],
                           "year": [1990, np.nan]})
    train = pd.DataFrame({"user_idx": [0, 1, 2], "movie_idx": [0, 0, 1], "rating": [4.0, 3.0, 5.0]})
    rs = pd.DataFrame({"review_id": [0, 1, 2], "user_idx": [0, 1, 2], "movie_idx": [0, 0, 1],
                       "sentiment": [0.8, -0.8, 0.9]})
    test_pairs = pd.DataFrame({"user_idx": [2], "movie_idx": [1]})
    res = fuse(users, movies, train, rs, None, test_pairs, FeaturesConfig(sentiment_from_rated=True))
    names = res.item_names
    crowd = res.item_features[:, names.index("num__crowd_count")]
    # movie 1's only review is on a test pair: it must not count
    assert crowd[1] < crowd[0]
    assert res.user_features.shape[0] == 3 and res.item_features.shape[0] == 2
    assert "genre_Drama" in names and res.item_features[:, names.index("genre_Drama")].tolist() == [1, 1]
    assert np.isfinite(res.user_features).all() and np.isfinite(res.item_features).all()
    no_sent = fuse(users, movies, train, rs, None, test_pairs, FeaturesConfig(use_sentiment=False))
    assert "num__crowd_sentiment" not in no_sent.item_names and "num__sent_mean" not in no_sent.user_names
    assert "num__sent_mean" in res.user_names


def test_sentiment_features_skip_reviews_that_repeat_a_training_rating():
    """By default a review whose pair has a training rating adds nothing (it restates the
    rating); a review of a movie the user never rated is what the profile is made of."""
    users = pd.DataFrame({"user_idx": [0, 1, 2]})
    movies = pd.DataFrame({"movie_idx": [0, 1, 2], "title": ["a", "b", "c"], "genres": ["Drama", "Comedy", "Drama"],
                           "year": [1990, 2000, 2010]})
    train = pd.DataFrame({"user_idx": [0, 1, 2, 0], "movie_idx": [0, 0, 1, 1], "rating": [4.0, 3.0, 5.0, 2.0]})
    rated = pd.DataFrame({"review_id": [0, 1], "user_idx": [0, 1], "movie_idx": [0, 0], "sentiment": [0.9, -0.9]})
    unrated = pd.DataFrame({"review_id": [2, 3], "user_idx": [0, 2], "movie_idx": [2, 2], "sentiment": [-0.7, 0.8]})
    cfg = FeaturesConfig(use_demographics=False)
    only_unrated = fuse(users, movies, train, unrated, None, None, cfg)
    both = fuse(users, movies, train, pd.concat([rated, unrated]), None, None, cfg)
    assert both.user_names == only_unrated.user_names and np.array_equal(both.user_features, only_unrated.user_features)
    assert np.array_equal(both.item_features, only_unrated.item_features)
    mean = both.user_features[:, both.user_names.index("num__sent_mean")]
    assert mean[2] > mean[1] > mean[0]  # user 2 praised, user 1 wrote nothing unrated, user 0 panned
    # with sentiment_from_rated the rated reviews count again
    again = fuse(users, movies, train, pd.concat([rated, unrated]), None, None,
                 FeaturesConfig(use_demographics=False, sentiment_from_rated=True))
    assert not np.array_equal(again.user_features, only_unrated.user_features)
    # per-genre sentiment only when asked for
    assert not any(n.startswith("num__sent_genre_") for n in both.user_names)
    per_genre = fuse(users, movies, train, unrated, None, None, FeaturesConfig(use_demographics=False,
                                                                             sentiment_per_genre=True))
    assert "num__sent_genre_Drama" in per_genre.user_names
