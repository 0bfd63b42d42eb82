"""Generated data: the demo set shipped in data/demo and the 20M-rating synthetic set.

The demo (:func:`demo_tables`, deterministic: same seed, same bytes) plants structure that a
good pipeline can recover:

* taste communities that follow genres: each community loves some genres and dislikes
  others, and its members' ratings follow that;
* friends who share tastes: most friendships are inside a community, and messages
  between friends are warmer inside communities;
* review wording that follows the rating (and some reviews that carry no star rating);
* a few users with reviews but no ratings at all (cold users).

Tests build small sets with the same generator; ``scripts/make_demo_data.py`` and
``scripts/make_synthetic.py`` are thin commands over this module.

Why one module of this size: the demo's wording tables (six languages) are data, not logic;
the generators themselves are short functions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

GENRES = [
    "Action", "Adventure", "Animation", "Children", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
    "Thriller", "War", "Western",
]
# community -> (loved genres, disliked genres)
COMMUNITIES = [
    (["Action", "Sci-Fi", "Adventure"], ["Romance", "Musical"]),
    (["Romance", "Comedy", "Musical"], ["Horror", "War"]),
    (["Horror", "Thriller", "Mystery"], ["Children", "Musical"]),
    (["Documentary", "Drama", "War"], ["Animation", "Children"]),
    (["Animation", "Children", "Fantasy"], ["Horror", "Film-Noir"]),
    (["Crime", "Film-Noir", "Western"], ["Children", "Sci-Fi"]),
]
ADJ = ["Silent", "Crimson", "Last", "Hidden", "Broken", "Golden", "Midnight", "Lost", "Wild",
       "Distant", "Burning", "Frozen", "Secret", "Electric", "Hollow", "Savage", "Gentle",
       "Iron", "Paper", "Velvet", "Restless", "Forgotten", "Bright", "Dark", "Quiet"]
NOUN = ["Harbor", "Kingdom", "River", "Promise", "Signal", "Garden", "Frontier", "Mirror",
        "Empire", "Station", "Orchard", "Voyage", "Circuit", "Canyon", "Letter", "Summer",
        "Machine", "Island", "Shadow", "Crown", "Horizon", "Storm", "Lantern", "Passage"]
GENRE_WORDS = {
    "Action": ["the fight scenes", "the chase sequences", "the stunts"],
    "Adventure": ["the journey", "the sense of discovery", "the quest"],
    "Animation": ["the animation", "the character designs", "the colourful visuals"],
    "Children": ["the family story", "the young cast", "the gentle humour"],
    "Comedy": ["the jokes", "the comic timing", "the banter"],
    "Crime": ["the heist", "the detective work", "the gangsters"],
    "Documentary": ["the interviews", "the archive footage", "the research"],
    "Drama": ["the performances", "the family drama", "the emotional core"],
    "Fantasy": ["the world building", "the magic", "the creatures"],
    "Film-Noir": ["the shadows", "the femme fatale", "the hard-boiled dialogue"],
    "Horror": ["the scares", "the creeping dread", "the monster"],
    "Musical": ["the songs", "the choreography", "the musical numbers"],
    "Mystery": ["the twists", "the puzzle", "the reveal"],
    "Romance": ["the love story", "the chemistry between the leads", "the romance"],
    "Sci-Fi": ["the special effects", "the science", "the future it imagines"],
    "Thriller": ["the suspense", "the tension", "the cat-and-mouse plot"],
    "War": ["the battle scenes", "the soldiers' stories", "the history"],
    "Western": ["the landscapes", "the gunfights", "the lone rider"],
}
OPEN = {
    5: ["Absolutely loved {t}.", "{t} is a masterpiece.", "What a wonderful film.",
        "I was blown away by {t}.", "One of the best films I have seen in years.",
        "Brilliant from start to finish."],
    4: ["Really enjoyed {t}.", "A very good film.", "{t} is well worth watching.",
        "Solid and satisfying.", "I liked this one a lot."],
    3: ["{t} is okay, nothing special.", "A mixed bag.", "Decent but forgettable.",
        "It has its moments.", "Average at best, but watchable."],
    2: ["I was disappointed by {t}.", "Not very good.", "{t} mostly falls flat.",
        "A weak effort.", "I expected much more from this."],
    1: ["{t} is a dull, boring mess.", "Terrible film.", "An awful waste of time.",
        "I hated {t}.", "One of the worst films I have sat through."],
}
BODY = {
    5: ["{g} left me speechless", "I could watch {g} again and again", "nothing beats {g} here",
        "{g} felt pitch perfect"],
    4: ["{g} worked really well", "I enjoyed {g}", "{g} stood out", "{g} felt well done"],
    3: ["{g} felt uneven", "{g} could have been better", "{g} did the job",
        "{g} felt fine, if unremarkable"],
    2: ["{g} felt clumsy", "{g} never came together", "{g} did not work for me",
        "{g} left me cold"],
    1: ["{g} felt painful to watch", "{g} ended up a disaster", "{g} felt laughably bad",
        "{g} made me want to leave"],
}
CLOSE = {
    5: ["Highly recommended!", "A must-see.", "I will watch it again.", ""],
    4: ["Recommended.", "Worth your time.", "Pleasant evening.", ""],
    3: ["Watch it if you have nothing else.", "Not bad, not great.", "", "Meh."],
    2: ["I would not recommend it.", "Skip it.", "Boring overall.", ""],
    1: ["Avoid at all costs.", "Save your money.", "Truly dreadful.", ""],
}
# reviews of the mixed-language demo variant (demo_tables(languages=...)): wording per star
REVIEW_L = {
    "zh": {5: ["太好看了，绝对是年度最佳。", "每一分钟都很享受，强烈推荐。", "感人至深，看完还想再看一遍。"],
           4: ["挺好看的，值得一看。", "整体不错，演员很用心。", "故事讲得很好，我很喜欢。"],
           3: ["一般般，没什么特别的。", "有好有坏，看看也行。", "中规中矩，很快就忘了。"],
           2: ["有点失望，剧情很弱。", "不太好看，节奏太慢。", "演技平平，不推荐。"],
           1: ["太难看了，完全是浪费时间。", "烂片，千万别看。", "无聊透顶，看得我想睡觉。"]},
    "es": {5: ["Absolutamente genial, de lo mejor del año.", "Disfruté cada minuto, muy recomendable.",
               "Preciosa y emocionante, la veré otra vez."],
           4: ["Muy buena, merece la pena.", "Bien hecha y entretenida.", "Me gustó bastante."],
           3: ["Normal, nada especial.", "Tiene buenos y malos momentos.", "Correcta pero olvidable."],
           2: ["Bastante decepcionante.", "No me convenció, muy lenta.", "Floja, no la recomiendo."],
           1: ["Horrible, una pérdida de tiempo.", "Malísima, evítala.", "Aburrida de principio a fin."]},
    "de": {5: ["Einfach großartig, einer der besten Filme des Jahres.", "Jede Minute genossen, sehr empfehlenswert.",
               "Bewegend und wunderschön, den schaue ich wieder."],
           4: ["Sehr gut, lohnt sich.", "Gut gemacht und unterhaltsam.", "Hat mir ziemlich gut gefallen."],
           3: ["Ganz okay, nichts Besonderes.", "Mal gut, mal schwach.", "Solide, aber schnell vergessen."],
           2: ["Ziemlich enttäuschend.", "Hat mich nicht überzeugt, viel zu langsam.",
               "Schwach, nicht zu empfehlen."],
           1: ["Furchtbar, reine Zeitverschwendung.", "Grottenschlecht, bloß nicht ansehen.",
               "Von Anfang bis Ende langweilig."]},
    "fr": {5: ["Absolument génial, un des meilleurs films de l'année.", "J'ai savouré chaque minute, je recommande.",
               "Bouleversant et magnifique, je le reverrai."],
           4: ["Très bon, ça vaut le coup.", "Bien fait et divertissant.", "Je l'ai bien aimé."],
           3: ["Correct, sans plus.", "Des hauts et des bas.", "Pas mal mais vite oublié."],
           2: ["Assez décevant.", "Pas convaincu, beaucoup trop lent.", "Faible, je ne le conseille pas."],
           1: ["Horrible, une vraie perte de temps.", "Nul, à éviter absolument.", "Ennuyeux du début à la fin."]},
    "pl": {5: ["Rewelacja, jeden z najlepszych filmów roku.", "Cieszyłem się każdą minutą, gorąco polecam.",
               "Poruszający i piękny, obejrzę jeszcze raz."],
           4: ["Bardzo dobry, warto obejrzeć.", "Dobrze zrobiony i wciągający.", "Całkiem mi się podobał."],
           3: ["Przeciętny, nic specjalnego.", "Ma lepsze i gorsze momenty.", "Poprawny, ale szybko się zapomina."],
           2: ["Spore rozczarowanie.", "Nie przekonał mnie, zbyt wolny.", "Słaby, nie polecam."],
           1: ["Okropny, strata czasu.", "Beznadziejny, omijać szerokim łukiem.", "Nudny od początku do końca."]},
}
#: the mixed-language demo variant's users: share of each review language
DEMO_LANGUAGES = {"en": 0.55, "zh": 0.1, "es": 0.1, "de": 0.09, "fr": 0.08, "pl": 0.08}

MSG_WARM = ["Loved your last recommendation!", "Thanks for the great pick, we should watch more together.",
            "You always find the best films.", "Movie night again soon? That was fun."]
MSG_COLD = ["Your taste in films is awful.", "That movie you suggested was terrible.",
            "Please stop recommending boring films.", "We never agree on anything."]
OCCUPATIONS = ["student", "engineer", "teacher", "artist", "doctor", "writer", "retired",
               "technician", "lawyer", "other"]


def demo_tables(n_users: int = 3000, n_movies: int = 1500, seed: int = 42,
                languages: dict[str, float] | None = None) -> dict[str, pd.DataFrame]:
    """The demo tables. ``languages`` (e.g. :data:`DEMO_LANGUAGES`): each user writes their
    reviews in one language drawn from these shares (wording still follows the star, from
    :data:`REVIEW_L`); everything else, English reviews included, is the same as without."""
    rng = np.random.default_rng(seed)
    lang_rng = np.random.default_rng(seed + 1)  # its own stream: the English demo is unchanged
    user_lang = (lang_rng.choice(list(languages), size=n_users, p=np.array(list(languages.values()))
                                 / sum(languages.values())) if languages else np.full(n_users, "en"))
    movies, genre_mat, popularity, quality = _demo_movies(rng, n_movies)
    users, community, affinity, user_bias = _demo_users(rng, n_users, genre_mat)
    ratings, cold, ru, rm, stars, ts = _demo_ratings(rng, users, movies, affinity, user_bias, quality, popularity)
    titles = movies["title"].tolist()

    # ---- reviews: wording follows the rating
    def review_text(star: int, movie: int, user: int = -1) -> str:
        lang = user_lang[user] if user >= 0 else "en"
        if lang != "en":
            pool = REVIEW_L[lang][star]
            k = lang_rng.permutation(len(pool))[: 1 + int(lang_rng.random() < 0.5)]
            text = ("" if lang == "zh" else " ").join(pool[i] for i in k)
            review_text_english(star, movie)  # the main stream advances as for an English review
            return text
        return review_text_english(star, movie)

    def review_text_english(star: int, movie: int) -> str:
        t = titles[movie].rsplit(" (", 1)[0]
        g = GENRES[rng.choice(np.flatnonzero(genre_mat[movie]))]
        parts = [OPEN[star][rng.integers(len(OPEN[star]))].format(t=t)]
        if rng.random() < 0.85:
            words = GENRE_WORDS[g][rng.integers(3)]
            body = BODY[star][rng.integers(len(BODY[star]))].format(g=words)
            parts.append(body[0].upper() + body[1:] + ".")
        close = CLOSE[star][rng.integers(len(CLOSE[star]))]
        if close:
            parts.append(close)
        return " ".join(parts)

    n_rev = min(17_000, len(ratings))
    pick = rng.choice(len(ratings), size=n_rev, replace=False)
    rev_rows = []
    for k in pick:
        star = int(stars[k])
        rev_rows.append((ratings.at[k, "user_id"], ratings.at[k, "movie_id"], review_text(star, rm[k], ru[k]), str(star),
                         int(ts[k]) + 60))
    # reviews without a star rating (incl. every cold user): wording follows the latent taste
    extra_users = np.concatenate([np.repeat(cold, 8), rng.integers(0, n_users, size=3000)])
    for u in extra_users:
        m = int(rng.integers(n_movies))
        val = 3.5 + user_bias[u] + quality[m] + affinity[u, m] + rng.normal(0, 0.6)
        star = int(np.clip(np.rint(val), 1, 5))
        rev_rows.append((users.at[u, "user_id"], movies.at[m, "movie_id"], review_text(star, m, u), "",
                         int(rng.integers(1_420_070_400, 1_735_689_600))))
    reviews = pd.DataFrame(rev_rows, columns=["user_id", "movie_id", "text", "rating", "timestamp"])
    reviews = reviews.drop_duplicates(["user_id", "movie_id"]).reset_index(drop=True)
    social = _demo_social(rng, users, community)
    return {"ratings": ratings, "users": users, "movies": movies, "reviews": reviews, "social": social}


def _demo_movies(rng: np.random.Generator, n_movies: int):
    """(movies table, movies x genres flags, popularity, quality)."""
    n_g = len(GENRES)
    n_genres = rng.choice([1, 2, 3], size=n_movies, p=[0.45, 0.4, 0.15])
    genre_mat = np.zeros((n_movies, n_g), dtype=bool)
    for i in range(n_movies):
        genre_mat[i, rng.choice(n_g, size=n_genres[i], replace=False)] = True
    years = rng.integers(1950, 2025, size=n_movies)
    seen_titles: dict[str, int] = {}
    titles = []
    for i in range(n_movies):
        base = f"The {ADJ[rng.integers(len(ADJ))]} {NOUN[rng.integers(len(NOUN))]}"
        k = seen_titles.get(base, 0)
        seen_titles[base] = k + 1
        titles.append(f"{base}{' ' + str(k + 1) if k else ''} ({years[i]})")
    popularity = rng.pareto(1.2, size=n_movies) + 0.05
    quality = rng.normal(0, 0.35, size=n_movies)
    movies = pd.DataFrame({
        "movie_id": [f"m{i:05d}" for i in range(n_movies)],
        "title": titles,
        "genres": ["|".join(GENRES[j] for j in np.flatnonzero(row)) for row in genre_mat],
        "year": years,
    })
    return movies, genre_mat, popularity, quality


def _demo_users(rng: np.random.Generator, n_users: int, genre_mat: np.ndarray):
    """(users table, community per user, users x movies affinity, user bias)."""
    gidx = {g: i for i, g in enumerate(GENRES)}
    n_c = len(COMMUNITIES)
    community = rng.integers(0, n_c, size=n_users)
    comm_aff = np.zeros((n_c, len(GENRES)))
    for c, (loved, hated) in enumerate(COMMUNITIES):
        comm_aff[c, [gidx[g] for g in loved]] = 1.2
        comm_aff[c, [gidx[g] for g in hated]] = -1.2
    user_aff = comm_aff[community] + rng.normal(0, 0.3, size=(n_users, len(GENRES)))
    user_bias = rng.normal(0, 0.3, size=n_users)
    age_center = np.array([24, 35, 28, 52, 38, 45])[community]
    users = pd.DataFrame({
        "user_id": [f"u{i:05d}" for i in range(n_users)],
        "age": np.clip(rng.normal(age_center, 8), 16, 80).astype(int),
        "gender": rng.choice(["F", "M"], size=n_users, p=[0.45, 0.55]),
        "occupation": rng.choice(OCCUPATIONS, size=n_users),
    })
    # affinity of every user for every movie: mean over the movie's genres
    movie_g = genre_mat / genre_mat.sum(1, keepdims=True)
    return users, community, user_aff @ movie_g.T, user_bias


def _demo_ratings(rng, users, movies, affinity, user_bias, quality, popularity):
    """Users watch what is popular and what they like: (ratings, cold users, user, movie,
    star and time of each rating)."""
    n_users, n_movies = len(users), len(movies)
    cold = rng.choice(n_users, size=max(10, n_users // 60), replace=False)
    n_rated = np.clip(rng.lognormal(3.2, 0.8, size=n_users), 5, 400).astype(int)
    n_rated[cold] = 0
    rows_u, rows_m = [], []
    logpop = np.log(popularity)
    for u in range(n_users):
        if n_rated[u] == 0:
            continue
        logits = logpop + 1.5 * affinity[u]
        p = np.exp(logits - logits.max())
        p /= p.sum()
        chosen = rng.choice(n_movies, size=min(n_rated[u], n_movies), replace=False, p=p)
        rows_u.append(np.full(len(chosen), u))
        rows_m.append(chosen)
    ru = np.concatenate(rows_u)
    rm = np.concatenate(rows_m)
    true = 3.5 + user_bias[ru] + quality[rm] + affinity[ru, rm] + rng.normal(0, 0.6, size=len(ru))
    stars = np.clip(np.rint(true), 1, 5).astype(int)
    ts = rng.integers(1_420_070_400, 1_735_689_600, size=len(ru))
    ratings = pd.DataFrame({
        "user_id": users["user_id"].to_numpy()[ru],
        "movie_id": movies["movie_id"].to_numpy()[rm],
        "rating": stars,
        "timestamp": ts,
    })
    return ratings, cold, ru, rm, stars, ts


def _demo_social(rng: np.random.Generator, users: pd.DataFrame, community: np.ndarray) -> pd.DataFrame:
    """Friendships, mostly inside a community; messages warmer inside communities."""
    n_users, n_c = len(users), len(COMMUNITIES)
    edges = set()
    members = [np.flatnonzero(community == c) for c in range(n_c)]
    n_friends = rng.poisson(4, size=n_users) + 1
    for u in range(n_users):
        for _ in range(n_friends[u]):
            pool = members[community[u]] if rng.random() < 0.85 else np.arange(n_users)
            v = int(rng.choice(pool))
            if v != u:
                edges.add((min(u, v), max(u, v)))
    edges = sorted(edges)
    eu = np.array([e[0] for e in edges])
    ev = np.array([e[1] for e in edges])
    same = community[eu] == community[ev]
    weight = np.round(np.where(same, rng.uniform(0.5, 1.0, len(edges)), rng.uniform(0.1, 0.6, len(edges))), 2)
    texts = []
    for s in same:
        if rng.random() < 0.3:
            warm = rng.random() < (0.85 if s else 0.3)
            pool = MSG_WARM if warm else MSG_COLD
            texts.append(pool[rng.integers(len(pool))])
        else:
            texts.append("")
    return pd.DataFrame({
        "user_id": users["user_id"].to_numpy()[eu],
        "friend_id": users["user_id"].to_numpy()[ev],
        "weight": weight,
        "text": texts,
    })


SYNTHETIC_GENRES = ["Action", "Adventure", "Animation", "Children", "Comedy", "Crime", "Documentary", "Drama",
          "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War",
          "Western"]


def _sample_unique(rng, users, counts, cdf, ni):
    """Each user rates counts[u] distinct movies, drawn by popularity (then uniformly to top up)."""
    need = counts.copy()
    seen = np.zeros(0, dtype=np.int64)
    for attempt in range(6):
        if need.sum() == 0:
            break
        draw_u = np.repeat(users, need * 2)
        if attempt < 4:
            draw_i = np.minimum(np.searchsorted(cdf, rng.random(len(draw_u))), ni - 1)
        else:
            draw_i = rng.integers(0, ni, len(draw_u))
        key = draw_u.astype(np.int64) * ni + draw_i
        key = key[~np.isin(key, seen)]
        key = np.unique(key)  # sorted by user, then movie
        rng.shuffle(key)
        key = key[np.argsort(key // ni, kind="stable")]  # back to user order, movies shuffled
        u = key // ni
        starts = np.searchsorted(u, users)
        ends = np.searchsorted(u, users, side="right")
        take = np.minimum(ends - starts, need)
        keep = np.concatenate([np.arange(a, a + t) for a, t in zip(starts, take)]) if take.sum() else np.zeros(0, int)
        chosen = key[keep]
        seen = np.concatenate([seen, chosen])
        need = need - take
    seen.sort()
    return (seen // ni).astype(np.int32), (seen % ni).astype(np.int32)


def _synthetic_shape(rng: np.random.Generator, n_ratings: int, n_users: int, n_movies: int):
    """The set's catalogue, and per viewer and movie what its ratings are drawn from
    (activity, popularity, the rank-8 taste model): (movies table, dict of arrays)."""
    import pyarrow as pa

    nu, ni, k = n_users, n_movies, 8
    if nu * min(20, ni // 2) > n_ratings:
        raise ValueError(f"{n_ratings} ratings cannot give {nu} viewers 20 each (the least a viewer rates)")

    # catalogue: popularity ~ Zipf over a random order of movies
    rank = rng.permutation(ni) + 1
    pop = 1.0 / rank ** 1.05
    pop /= pop.sum()
    cdf = np.cumsum(pop)
    genre_ids = rng.integers(0, len(SYNTHETIC_GENRES), size=(ni, 2))
    movies = pa.table({
        "movie_id": np.arange(1, ni + 1),
        "title": [f"Synthetic Movie {i} ({1920 + i % 100})" for i in range(1, ni + 1)],
        "genres": [f"{SYNTHETIC_GENRES[a]}|{SYNTHETIC_GENRES[b]}" if a != b else SYNTHETIC_GENRES[a] for a, b in genre_ids],
    })

    # users: activity log-normal, scaled to the requested total (at least 20 each, as in ML-20M)
    act = rng.lognormal(0.0, 1.1, nu)
    counts = np.maximum(20, np.round(act / act.sum() * n_ratings)).astype(np.int64)
    counts = np.minimum(counts, ni // 2)
    excess = counts.sum() - n_ratings
    while excess > 0:  # trim the heaviest users to hit the total exactly (in rounds where one is not enough)
        order = np.argsort(-counts)
        take = np.maximum(0, np.minimum(counts[order] - 20, np.ceil(excess / 1000).astype(int)))
        cum = np.cumsum(take)
        n = min(int(np.searchsorted(cum, excess)) + 1, len(cum))
        counts[order[:n]] -= take[:n]
        counts[order[n - 1]] += max(0, cum[n - 1] - excess)
        excess = counts.sum() - n_ratings
    P = rng.normal(0, 0.35, (nu, k)).astype(np.float32)
    Q = rng.normal(0, 0.35, (ni, k)).astype(np.float32)
    bu = rng.normal(0, 0.35, nu).astype(np.float32)
    bi = (rng.normal(0, 0.3, ni) + 0.3 * np.log(pop * ni)).astype(np.float32)
    return movies, {"cdf": cdf, "counts": counts, "P": P, "Q": Q, "bu": bu, "bi": bi, "ni": ni}


def _synthetic_rows(rng: np.random.Generator, s: dict, u0: int, u1: int):
    """The ratings of viewers u0..u1-1 (a pyarrow table: user_id, movie_id, rating, timestamp)."""
    import pyarrow as pa

    users, items = _sample_unique(rng, np.arange(u0, u1), s["counts"][u0:u1], s["cdf"], s["ni"])
    n = len(users)
    raw = 3.5 + s["bu"][users] + s["bi"][items] + np.einsum("ij,ij->i", s["P"][users], s["Q"][items]) \
        + rng.normal(0, 0.7, n)
    rating = np.clip(np.round(raw * 2) / 2, 0.5, 5.0).astype(np.float32)
    ts = rng.integers(789_652_009, 1_427_784_002, n)
    return pa.table({"user_id": (users + 1).astype(np.int32), "movie_id": (items + 1).astype(np.int32),
                     "rating": rating, "timestamp": ts})


def _ratings_schema():
    import pyarrow as pa

    return pa.schema([("user_id", pa.int32()), ("movie_id", pa.int32()), ("rating", pa.float32()),
                      ("timestamp", pa.int64())])


def write_synthetic(out: str | Path, n_ratings: int = 20_000_263, n_users: int = 138_493,
                    n_movies: int = 27_278, seed: int = 0) -> dict[str, int]:
    """MovieLens-20M-shaped synthetic ratings.csv and movies.csv in ``out`` (for the scale
    benchmarks): long-tailed popularity (Zipf-like) and user activity (log-normal), ratings on
    0.5..5 in half stars from a rank-8 taste model, unix timestamps. Written in chunks with
    pyarrow, so memory stays well under 2 GB. Returns the counts."""
    import pyarrow.csv as pacsv

    rng = np.random.default_rng(seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    movies, s = _synthetic_shape(rng, n_ratings, n_users, n_movies)
    pacsv.write_csv(movies, out / "movies.csv")
    with pacsv.CSVWriter(out / "ratings.csv", _ratings_schema()) as w:
        for u0 in range(0, n_users, 5000):
            w.write_table(_synthetic_rows(rng, s, u0, min(n_users, u0 + 5000)))
    return {"ratings": int(s["counts"].sum()), "users": n_users, "movies": n_movies}


def write_synthetic_part(path: str | Path, part: int, parts: int, n_ratings: int, n_users: int, n_movies: int,
                         seed: int = 0) -> int:
    """Part ``part`` of ``parts`` of a synthetic set as one CSV file (a worker writes each): the
    viewers cut into equal ranges, each part's ratings drawn from its own stream over the
    same catalogue and taste model (:func:`write_synthetic`'s, from ``seed``; not its rows).
    Returns the part's ratings."""
    import pyarrow.csv as pacsv

    _, s = _synthetic_shape(np.random.default_rng(seed), n_ratings, n_users, n_movies)
    rng = np.random.default_rng([seed, part + 1])
    lo, hi = n_users * part // parts, n_users * (part + 1) // parts
    n = 0
    with pacsv.CSVWriter(path, _ratings_schema()) as w:
        for u0 in range(lo, hi, 5000):
            t = _synthetic_rows(rng, s, u0, min(hi, u0 + 5000))
            n += t.num_rows
            w.write_table(t)
    return n


def write_synthetic_movies(path: str | Path, n_ratings: int, n_users: int, n_movies: int, seed: int = 0) -> None:
    """movies.csv of the set :func:`write_synthetic_part` writes the ratings of."""
    import pyarrow.csv as pacsv

    pacsv.write_csv(_synthetic_shape(np.random.default_rng(seed), n_ratings, n_users, n_movies)[0], path)
