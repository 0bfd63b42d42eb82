"""Public data sets: download the archive (``data download``) or convert a local copy
(``data import``) into the canonical CSV layout.

Known sets: ``movielens-100k`` (u.data, u.user, u.item and the five given splits),
``movielens-latest-small`` (ratings, movies; tags become short reviews) and
``filmtrust`` (ratings.txt and trust.txt), ``rt-critics`` (critics.csv: Rotten Tomatoes
critics as users, fresh/rotten as 1/0, quotes as review texts; import only), ``ciaodvd`` and
``epinions`` (the social-recommendation dumps of LibRec and Tang et al.; import only), and
``csv``: any CSV with a column mapping (:func:`import_csv`).
"""

from __future__ import annotations

import logging
import tempfile
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from movierec.errors import DataError

log = logging.getLogger(__name__)

URLS = {
    "movielens-100k": "https://files.grouplens.org/datasets/movielens/ml-100k.zip",
    "movielens-latest-small": "https://files.grouplens.org/datasets/movielens/ml-latest-small.zip",
    "filmtrust": "https://guoguibing.github.io/librec/datasets/filmtrust.zip",
}
ML100K_GENRES = [
    "unknown", "Action", "Adventure", "Animation", "Children", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
    "Thriller", "War", "Western",
]


def _find(src: Path, name: str) -> Path:
    """``name`` directly in ``src`` or in one sub-folder (archives nest a folder)."""
    direct = src / name
    if direct.exists():
        return direct
    hits = sorted(src.glob(f"*/{name}"))
    if hits:
        return hits[0]
    raise DataError(f"{src}: {name} not found (is this the right data set?)")


def csv_quoting(df: pd.DataFrame) -> int:
    """How to quote ``df`` in a CSV file so that it reads back with the same rows: as usual
    (fields with the delimiter, a quote or a newline quoted), but every text field quoted
    when a text cell or a column name holds a carriage return, which Python's csv writer
    leaves bare (a CSV reader takes a lone carriage return for the end of the row)."""
    import csv

    def has_cr(s: pd.Series) -> bool:
        if isinstance(s.dtype, pd.CategoricalDtype):
            s = pd.Series(s.cat.categories)
        if not (pd.api.types.is_object_dtype(s.dtype) or pd.api.types.is_string_dtype(s.dtype)):
            return False
        try:
            return bool(s.str.contains("\r", regex=False).fillna(False).to_numpy(dtype=bool).any())
        except AttributeError:  # an object column without any text
            return False

    cr = any("\r" in str(c) for c in df.columns) or any(has_cr(df.iloc[:, k]) for k in range(df.shape[1]))
    return csv.QUOTE_NONNUMERIC if cr else csv.QUOTE_MINIMAL


def _write(df: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=False, lineterminator="\n", quoting=csv_quoting(df))


def import_movielens_100k(src: Path, dst: Path) -> dict[str, int]:
    cols = ["user_id", "movie_id", "rating", "timestamp"]
    ratings = pd.read_csv(_find(src, "u.data"), sep="\t", names=cols, dtype=str)
    users = pd.read_csv(_find(src, "u.user"), sep="|", names=["user_id", "age", "gender", "occupation", "zip"],
                        dtype=str, encoding="latin-1")
    item_cols = ["movie_id", "title", "release", "video", "url"] + ML100K_GENRES
    items = pd.read_csv(_find(src, "u.item"), sep="|", names=item_cols, dtype=str, encoding="latin-1")
    genres = items[ML100K_GENRES].astype(int)
    movies = pd.DataFrame({
        "movie_id": items["movie_id"],
        "title": items["title"],
        "genres": genres.apply(lambda row: "|".join(g for g in ML100K_GENRES[1:] if row[g] == 1), axis=1),
        "year": pd.to_datetime(items["release"], format="%d-%b-%Y", errors="coerce").dt.year.astype("Int64"),
    })
    _write(ratings, dst / "ratings.csv")
    _write(users.drop(columns=["zip"]), dst / "users.csv")
    _write(movies, dst / "movies.csv")
    counts = {"ratings": len(ratings), "users": len(users), "movies": len(movies)}
    for k in range(1, 6):
        for part in ("base", "test"):
            p = src / f"u{k}.{part}"
            if not p.exists():
                try:
                    p = _find(src, f"u{k}.{part}")
                except DataError:
                    continue
            df = pd.read_csv(p, sep="\t", names=cols, dtype=str)
            _write(df, dst / "splits" / f"u{k}.{'train' if part == 'base' else 'test'}.csv")
            counts[f"u{k}.{part}"] = len(df)
    return counts


def import_movielens_latest_small(src: Path, dst: Path) -> dict[str, int]:
    r = pd.read_csv(_find(src, "ratings.csv"), dtype=str)
    m = pd.read_csv(_find(src, "movies.csv"), dtype=str)
    ratings = r.rename(columns={"userId": "user_id", "movieId": "movie_id"})[["user_id", "movie_id", "rating", "timestamp"]]
    movies = m.rename(columns={"movieId": "movie_id"})[["movie_id", "title", "genres"]]
    _write(ratings, dst / "ratings.csv")
    _write(movies, dst / "movies.csv")
    counts = {"ratings": len(ratings), "movies": len(movies)}
    try:
        t = pd.read_csv(_find(src, "tags.csv"), dtype=str)
        reviews = t.rename(columns={"userId": "user_id", "movieId": "movie_id", "tag": "text"})
        reviews = reviews[["user_id", "movie_id", "text", "timestamp"]]
        _write(reviews, dst / "reviews.csv")
        counts["reviews"] = len(reviews)
    except DataError:
        pass
    return counts


def import_filmtrust(src: Path, dst: Path) -> dict[str, int]:
    ratings = pd.read_csv(_find(src, "ratings.txt"), sep=r"\s+", names=["user_id", "movie_id", "rating"], dtype=str)
    trust = pd.read_csv(_find(src, "trust.txt"), sep=r"\s+", names=["user_id", "friend_id", "weight"], dtype=str)
    _write(ratings, dst / "ratings.csv")
    _write(trust, dst / "social.csv")
    return {"ratings": len(ratings), "social": len(trust)}


def import_rt_critics(src: Path, dst: Path) -> dict[str, int]:
    """Rotten Tomatoes critic reviews: critics as users, fresh = 1 / rotten = 0 as the rating,
    the quote as the review text (quotes without a verdict become reviews without a rating)."""
    d = pd.read_csv(_find(src, "critics.csv"), dtype=str)
    d = d[d["critic"].notna() & d["imdb"].notna() & (d["critic"].str.strip() != "")]
    d = d.assign(user_id=d["critic"].str.strip(), movie_id="tt" + d["imdb"].str.strip().str.zfill(7))
    d["rating"] = d["fresh"].map({"fresh": "1", "rotten": "0"})
    when = pd.to_datetime(d["review_date"], errors="coerce")
    d["timestamp"] = ((when - pd.Timestamp(0)).dt.total_seconds().fillna(0)).astype("int64").clip(lower=0)
    d = d.drop_duplicates(["user_id", "movie_id"], keep="last")
    rated = d[d["rating"].notna()]
    _write(rated[["user_id", "movie_id", "rating", "timestamp"]], dst / "ratings.csv")
    quotes = d[d["quote"].notna() & (d["quote"].str.strip() != "")]
    _write(quotes.rename(columns={"quote": "text"})[["user_id", "movie_id", "text", "rating", "timestamp"]],
           dst / "reviews.csv")
    movies = d.drop_duplicates("movie_id")[["movie_id", "title"]].assign(genres="")
    _write(movies, dst / "movies.csv")
    return {"ratings": len(rated), "reviews": len(quotes), "movies": len(movies)}


def _unix_seconds(dates: pd.Series) -> pd.Series:
    when = pd.to_datetime(dates, errors="coerce")
    return ((when - pd.Timestamp(0)).dt.total_seconds()).astype("Int64").astype(str).replace("<NA>", "")


def import_ciaodvd(src: Path, dst: Path) -> dict[str, int]:
    """CiaoDVD (LibRec): movie-ratings.txt (userID, movieID, genreID, reviewID, rating 1-5, date;
    CSV without a header) and trusts.txt (trustor, trustee, value). A user who rated a movie
    twice keeps the later rating, as clean resolves any duplicate (the date is kept as the
    timestamp). Genres are numbered in the dump (no names): ``genre-<id>``."""
    cols = ["user_id", "movie_id", "genre", "review_id", "rating", "date"]
    r = pd.read_csv(_find(src, "movie-ratings.txt"), names=cols, dtype=str)
    r["timestamp"] = _unix_seconds(r["date"])
    trust = pd.read_csv(_find(src, "trusts.txt"), names=["user_id", "friend_id", "weight"], dtype=str)
    movies = r.drop_duplicates("movie_id", keep="last")[["movie_id", "genre"]]
    movies = movies.assign(title="CiaoDVD movie " + movies["movie_id"], genres="genre-" + movies["genre"])
    _write(r[["user_id", "movie_id", "rating", "timestamp"]], dst / "ratings.csv")
    _write(trust, dst / "social.csv")
    _write(movies[["movie_id", "title", "genres"]], dst / "movies.csv")
    return {"ratings": len(r), "social": len(trust), "movies": len(movies)}


def _table(src: Path, stems: tuple[str, ...], key: str, ncols: int) -> pd.DataFrame:
    """A whitespace-separated text file or a MATLAB .mat matrix of the Tang et al. dumps."""
    for stem in stems:
        for ext in (".txt", ".mat"):
            try:
                path = _find(src, stem + ext)
            except DataError:
                continue
            if ext == ".mat":
                from scipy.io import loadmat

                m = loadmat(path)
                arr = m.get(key, next(v for k, v in m.items() if not k.startswith("__")))
                return pd.DataFrame(arr[:, :ncols]).astype("int64").astype(str)
            return pd.read_csv(path, sep=r"\s+", header=None, dtype=str, comment="%").iloc[:, :ncols]
    raise DataError(f"{src}: none of {', '.join(s + '.txt/.mat' for s in stems)} found (is this the Epinions dump?)")


def import_epinions(src: Path, dst: Path) -> dict[str, int]:
    """Epinions as Tang et al. distribute it: ratings (user, product, category, rating,
    helpfulness[, time]) in rating_with_timestamp or rating (.txt or .mat), and the trust
    list (truster, trustee) in trustnetwork or trust. Products become movies, categories
    their genres; duplicates resolve as in clean (the latest wins)."""
    r = _table(src, ("rating_with_timestamp", "rating"), "rating", 6)
    r.columns = ["user_id", "movie_id", "category", "rating", "helpfulness", "timestamp"][: r.shape[1]]
    t = _table(src, ("trustnetwork", "trust"), "trustnetwork", 2)
    t.columns = ["user_id", "friend_id"]
    keep = [c for c in ("user_id", "movie_id", "rating", "timestamp") if c in r.columns]
    movies = r.drop_duplicates("movie_id", keep="last")
    movies = pd.DataFrame({"movie_id": movies["movie_id"], "title": "Epinions product " + movies["movie_id"],
                           "genres": "category-" + movies["category"]})
    _write(r[keep], dst / "ratings.csv")
    _write(t.assign(weight="1"), dst / "social.csv")
    _write(movies, dst / "movies.csv")
    return {"ratings": len(r), "social": len(t), "movies": len(movies)}


def import_csv(src: Path, dst: Path, table: str = "ratings", mapping: dict[str, str] | None = None,
               delimiter: str = ",", encoding: str = "utf-8") -> dict[str, int]:
    """Any CSV dump into one canonical table: ``mapping`` names the source column of each
    canonical column (e.g. ``{"user_id": "uid", "movie_id": "item", "rating": "stars"}``);
    unmapped canonical columns are taken by name, other columns are kept. The file is read
    as the pipeline reads its own (:func:`movierec.data.readers._open_csv`: text in
    ``encoding``, no binary data, a header row); the table is written in UTF-8.

    Raises:
        DataError: an unknown table; a missing, empty, binary or wrongly encoded file; a row
            with more or fewer fields than the header (its line named) or other malformed CSV;
            a mapped or required column the file lacks.
    """
    from movierec.data.readers import _open_csv
    from movierec.data.schemas import SCHEMAS, FileSchema

    if table not in SCHEMAS:
        raise DataError(f"data import csv: unknown table {table!r}; one of {', '.join(SCHEMAS)}")
    schema = SCHEMAS[table]
    path = src if src.is_file() else _find(src, f"{table}.csv")
    try:  # every column as text: the columns are known only after the mapping
        df, bad_rows, _ = _open_csv(path, FileSchema(table, required=()), encoding, delimiter, redact=False)
    except DataError as exc:
        if isinstance(exc.__cause__, UnicodeDecodeError):  # the hint of the pipeline's reader is a config key
            raise DataError(str(exc).replace("set data.encoding (e.g. latin-1)",
                                             "pass its encoding, e.g. --encoding latin-1")) from exc
        raise
    if bad_rows:
        line, _, fields = bad_rows[0]
        where = f"line {line}" if line > 0 else "a row"
        more = f" (and {len(bad_rows) - 1} more such rows)" if len(bad_rows) > 1 else ""
        raise DataError(f"{path}: {where} has {fields} fields where the header has {len(df.columns)}{more}: "
                        f"not a well-formed CSV file with delimiter {delimiter!r} (check --delimiter and quoting)")
    mapping = dict(mapping or {})
    for canon, col in mapping.items():
        if canon not in schema.required + schema.optional:
            raise DataError(f"data import csv: {canon!r} is not a column of {table}.csv "
                            f"(columns: {', '.join(schema.required + schema.optional)})")
        if col not in df.columns:
            raise DataError(f"{path}: no column {col!r} to map to {canon} (found: {', '.join(df.columns)})")
    df = df.rename(columns={col: canon for canon, col in mapping.items()})
    missing = [c for c in schema.required if c not in df.columns]
    if missing:
        raise DataError(f"{path}: no column for {', '.join(missing)}; map it with --map {missing[0]}=SOURCE_COLUMN")
    _write(df, dst / f"{table}.csv")
    return {table: len(df)}


IMPORTERS = {
    "ciaodvd": import_ciaodvd,
    "epinions": import_epinions,
    "rt-critics": import_rt_critics,
    "movielens-100k": import_movielens_100k,
    "movielens-latest-small": import_movielens_latest_small,
    "filmtrust": import_filmtrust,
}


def import_dataset(name: str, src: str | Path, dst: str | Path) -> dict[str, int]:
    """Convert a local copy (folder or .zip) of a known data set to the canonical CSVs."""
    if name not in IMPORTERS:
        raise DataError(f"unknown data set {name!r}; known: {', '.join(IMPORTERS)}")
    src, dst = Path(src), Path(dst)
    if not src.exists():
        raise DataError(f"{src}: not found")
    try:
        if src.is_file() and zipfile.is_zipfile(src):
            with tempfile.TemporaryDirectory() as tmp:
                with zipfile.ZipFile(src) as zf:
                    zf.extractall(tmp)
                return IMPORTERS[name](Path(tmp), dst)
        return IMPORTERS[name](src, dst)
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{src}: a file of {name} is empty or not readable CSV/text "
                        f"({str(exc).splitlines()[0][:200] if str(exc) else exc.__class__.__name__})") from exc


#: how each downloaded archive is checked: a published digest, or the address of the digest
#: file GroupLens publishes beside an archive that changes (the "latest" sets)
CHECKSUMS: dict[str, tuple[str, str] | None] = {
    "movielens-100k": ("md5", "0e33842e24a9c977be4e0107933c0723"),
    "movielens-latest-small": ("md5-url", URLS["movielens-latest-small"] + ".md5"),
    "filmtrust": None,  # no digest is published: pin one with --sha256
}
MAX_DOWNLOAD_BYTES = 500 * 1024 * 1024


def _fetch(url: str, dest: Path, timeout: float, limit: int = MAX_DOWNLOAD_BYTES) -> dict[str, str]:
    """Stream ``url`` (https only) to ``dest``, at most ``limit`` bytes; returns its digests."""
    import hashlib

    from urllib.parse import urlparse

    parts = urlparse(url)
    loopback = parts.hostname in ("localhost", "::1") or (parts.hostname or "").startswith("127.")
    if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
        raise DataError(f"{url}: only https:// addresses are fetched (a plain http download can be altered "
                        "on the way; http is allowed for a mirror on this machine only)")
    md5, sha = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    size = 0
    with urllib.request.urlopen(url, timeout=timeout) as resp, open(dest, "wb") as fh:
        while block := resp.read(1 << 20):
            size += len(block)
            if size > limit:
                raise DataError(f"{url}: larger than {limit // (1024 * 1024)} MB; not a known data set archive")
            md5.update(block)
            sha.update(block)
            fh.write(block)
    return {"md5": md5.hexdigest(), "sha256": sha.hexdigest()}


def download_dataset(name: str, dst: str | Path, url: str | None = None, timeout: float = 60.0,
                     sha256: str | None = None) -> dict[str, int]:
    """Fetch the public archive of a known data set over HTTPS, check it, then import it.

    The archive is checked against its published digest (``CHECKSUMS``) or ``sha256`` when
    given; at most ``MAX_DOWNLOAD_BYTES`` are read.
    """
    if name not in URLS:
        raise DataError(f"unknown data set {name!r}; known: {', '.join(URLS)}")
    url = url or URLS[name]
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "archive.zip"
        log.info("downloading %s from %s", name, url)
        try:
            digests = _fetch(url, archive, timeout)
            expected = ("sha256", sha256.lower()) if sha256 else CHECKSUMS.get(name)
            if expected is not None and expected[0] == "md5-url" and url == URLS[name]:
                listed = Path(tmp) / "archive.md5"
                _fetch(expected[1], listed, timeout, limit=4096)
                expected = ("md5", listed.read_text(errors="replace").split()[0].lower())
        except DataError:
            raise
        except OSError as exc:
            raise DataError(
                f"could not download {name} from {url} ({exc}). Without a network: fetch the archive "
                f"elsewhere and run `movierec data import {name} --from ARCHIVE.zip --to {dst}`, or give a "
                "mirror with --url") from exc
        if expected is None:
            log.warning("%s publishes no checksum; this archive's sha256 is %s (pin it with --sha256)", name,
                        digests["sha256"])
        elif url == URLS[name] or sha256:
            kind, want = expected
            if kind in digests and digests[kind] != want:
                raise DataError(f"{url}: the archive's {kind} is {digests[kind]}, expected {want}: it is not "
                                f"the published {name}; nothing was written")
        if not zipfile.is_zipfile(archive):
            raise DataError(f"{url} did not return a zip archive")
        return import_dataset(name, archive, dst)


#: the config that runs each imported set (relative to the repository's configs/)
CONFIGS = {"movielens-100k": "configs/movielens-100k.yaml", "filmtrust": "configs/filmtrust.yaml",
           "rt-critics": "configs/rt-critics.yaml", "ciaodvd": "configs/ciaodvd.yaml"}


def next_step(name: str, dst: str | Path) -> str:
    """What to run after an import or download into ``dst``."""
    cfg = CONFIGS.get(name)
    if cfg:
        return (f"wrote the {name} CSV files into {dst}; next: movierec evaluate --config {cfg} "
                f"data.dir={Path(dst).resolve()}")
    return (f"wrote the {name} CSV files into {dst}; next: point data.dir at it in a config (see "
            "configs/default.yaml) and run movierec train --config CONFIG")


def read_rt_polarity(folder: str | Path) -> tuple[list[str], np.ndarray]:
    """The rt-polarity sentences and labels (1 positive, 0 negative) of a local copy (research
    data: benchmarks and the sentiment fine-tuning read it, nothing ships it). The files are
    Latin-1 and hold 0x85 bytes: the bytes are split on b"\\n" only."""
    texts, labels = [], []
    for name, y in (("rt-polarity.pos", 1), ("rt-polarity.neg", 0)):
        for line in (Path(folder) / name).read_bytes().split(b"\n"):
            t = line.decode("latin-1").strip()
            if t:
                texts.append(t)
                labels.append(y)
    return texts, np.array(labels)
