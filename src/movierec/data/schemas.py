"""The canonical CSV files: required and optional columns, and what each column must hold."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


def pair_key(df: pd.DataFrame) -> np.ndarray:
    """One int64 per (user_idx, movie_idx) row, for set operations on pairs."""
    return df["user_idx"].to_numpy(np.int64) * (1 << 32) + df["movie_idx"].to_numpy(np.int64)


def genre_matrix(movies: pd.DataFrame) -> tuple[list[str], np.ndarray]:
    """Genre names (sorted) and the movies x genres multi-hot matrix of ``|``-separated genres."""
    lists = movies["genres"].fillna("").astype(str).str.split("|").explode()
    rows = np.repeat(np.arange(len(movies)), movies["genres"].fillna("").astype(str).str.count(r"\|") + 1)
    named = (lists != "").to_numpy()
    if not named.any():
        return [], np.zeros((len(movies), 0), np.float32)
    codes = pd.Categorical(lists[named])
    mat = np.zeros((len(movies), len(codes.categories)), np.float32)
    mat[rows[named], codes.codes] = 1.0
    return [str(c) for c in codes.categories], mat


@dataclass(frozen=True)
class FileSchema:
    name: str
    required: tuple[str, ...]
    optional: tuple[str, ...] = ()
    id_columns: tuple[str, ...] = ()
    numeric: tuple[str, ...] = ()  # parsed as float; empty allowed unless required
    text: tuple[str, ...] = ()


RATINGS = FileSchema(
    "ratings",
    required=("user_id", "movie_id", "rating"),
    optional=("timestamp",),
    id_columns=("user_id", "movie_id"),
    numeric=("rating",),
)
USERS = FileSchema("users", required=("user_id",), id_columns=("user_id",))
MOVIES = FileSchema(
    "movies",
    required=("movie_id", "title"),
    optional=("genres", "year"),
    id_columns=("movie_id",),
    numeric=("year",),
    text=("title",),
)
REVIEWS = FileSchema(
    "reviews",
    required=("user_id", "movie_id", "text"),
    optional=("timestamp", "rating"),
    id_columns=("user_id", "movie_id"),
    numeric=("rating",),
    text=("text",),
)
SOCIAL = FileSchema(
    "social",
    required=("user_id", "friend_id"),
    optional=("weight", "text"),
    id_columns=("user_id", "friend_id"),
    numeric=("weight",),
    text=("text",),
)

SCHEMAS = {s.name: s for s in (RATINGS, USERS, MOVIES, REVIEWS, SOCIAL)}
