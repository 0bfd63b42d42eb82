"""recommend --explain: reasons computed from the model, checked against the evidence."""

import json
from pathlib import Path

import numpy as np
import pandas as pd

from movierec.config import load_config
from movierec.registry import Registry
from tests.conftest import run_cli


def _heavy_user(cfg_path) -> str:
    cfg = load_config(cfg_path)
    r = pd.read_csv(Path(cfg.data.dir) / "ratings.csv", dtype={"user_id": str})
    n = r.groupby("user_id").size()
    # a user with a typical history: each of a heavy rater's ratings moves a prediction too little
    # to be cited as a reason (explain.MIN_EFFECT)
    return n[n >= n.median()].sort_values(kind="stable").index[0]


def test_explanations_cite_real_evidence(trained_small):
    user = _heavy_user(trained_small)
    res = run_cli("recommend", "--config", str(trained_small), "--user", user, "--explain", "--format", "json", "-n", "8")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)  # machine-clean: stdout is one JSON document
    items = out["items"]
    assert len(items) == 8
    cfg = load_config(trained_small)
    bundle = Registry.of(cfg).load()
    u = bundle.user_index(user)
    rated = bundle.rated
    mine = dict(zip(bundle.movie_ids[rated.indices[rated.indptr[u]:rated.indptr[u + 1]]],
                    rated.data[rated.indptr[u]:rated.indptr[u + 1]]))
    cited_any = 0
    for it in items:
        ev = it["evidence"]["similar_rated"]
        if not ev:
            continue
        cited_any += 1
        assert it["explanation"] and ev[0]["title"] in it["explanation"]
        js = np.array([bundle.movie_ids.get_loc(m) for m in mine])
        rs = np.array([mine[m] for m in mine], dtype=np.float64)
        i = bundle.movie_ids.get_loc(it["movie_id"])
        mu, _, bi, _, Q = bundle.rating_vectors
        b, p = bundle.fold_in(js, rs)
        full = mu + b + bi[i] + Q[i] @ p
        for e in ev:
            # the cited movie is one the user really rated highly ...
            assert mine[e["movie_id"]] == e["your_rating"] >= 4.0
        # ... and taking the cited ratings away lowers the movie's predicted rating
        keep = ~np.isin(bundle.movie_ids[js], [e["movie_id"] for e in ev])
        b2, p2 = bundle.fold_in(js[keep], rs[keep])
        assert mu + b2 + bi[i] + Q[i] @ p2 < full - 1e-4
    assert cited_any >= 3


def test_explain_table_and_unknown_user(trained_small):
    user = _heavy_user(trained_small)
    res = run_cli("recommend", "--config", str(trained_small), "--user", user, "--explain", "-n", "5")
    assert res.returncode == 0 and "highly" in res.stdout
    res = run_cli("recommend", "--config", str(trained_small), "--user", "nobody", "--explain", "--format", "json")
    out = json.loads(res.stdout)
    assert out["fallback"] == "popularity"
    assert all(it["explanation"].startswith("Among the most watched") and not it["evidence"] for it in out["items"])
