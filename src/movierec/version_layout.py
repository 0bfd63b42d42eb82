"""The names of the files inside a model version folder (the layout is described in
:mod:`movierec.registry`, which writes and owns the folders; :mod:`movierec.ranking` reads the
served ones). Apart so that the reader needs no import of the writer."""

from __future__ import annotations

MODEL, HOLDOUT, META = "model.npz", "holdout.npz", "meta.json"
USER_IDS, MOVIES, SEEN = "user_ids.parquet", "movies.parquet", "seen.npz"
NEIGHBOURS, GENRE_SENTIMENT, FEATURES = "neighbours.parquet", "genre_sentiment.parquet", "features.json"
METRICS, GATE, RUN, CONFIG = "metrics.json", "gate.json", "run.json", "config.yaml"
