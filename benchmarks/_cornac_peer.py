"""A text-aware Cornac peer for the cold-start benchmark: Collaborative Topic Regression.

CTR (Wang & Blei, KDD 2011; ``cornac.models.CTR``) couples an LDA topic model of each
movie's text with implicit-feedback matrix factorisation: a movie's vector is
``v_j = theta_j + epsilon_j``, ``theta_j`` its topic proportions, ``epsilon_j`` an offset
learnt from ratings with a Gaussian prior N(0, 1/lambda_v).

Cornac's CTR only scores the items of its training ``Dataset``, and an item enters a
Dataset built by ``Dataset.build`` only through a rating. Here the Dataset is built by hand
over *all* ``n_items`` movie indices (identity id maps, ``num_items=n_items``), so the new
movies are items with no ratings but with their document in the ``TextModality``. Reading
``cornac/models/ctr/ctr.py``, such an item is handled as follows in every iteration:

- ``update_cf``: with no observed users its vector is
  ``v_j = (b U'U + lambda_v I)^-1 lambda_v theta_j`` (only the weak "unobserved" confidence
  ``b`` acts on it), i.e. theta_j slightly shrunk; no rating of a new movie is used;
- ``update_theta``: theta_j is fitted to the movie's own words under the shared topic-word
  matrix ``beta`` (and pulled toward v_j, which is itself ~theta_j), and the movie's words
  contribute to ``beta`` like every other document (transductive LDA over all texts that
  exist at training time: the reviews of a new movie are known, its ratings are not).

Score of user u for a new movie j (the paper's "out-of-matrix" prediction):
``u_i . theta_j`` with ``theta_j`` the final topic proportions of its text.
Other (warm) movies get ``u_i . v_j`` (Cornac's ``CTR.score``); only the cold columns matter.
Users without training ratings get u_i = 0 (Cornac's closed-form user update with no
items), hence score 0.

Movies without text get an empty document (no words): their theta only follows v_j.

Ratings are binarised (every training rating is an observed positive, confidence a=1;
unobserved pairs b=0.01), as CTR is an implicit-feedback model (Cornac's CiteULike example).

CDL is not offered: Cornac's ``CDL`` iterates only over items that have ratings
(``train_set.item_iter``), so a new movie's vector stays at its random initialisation and
its text never reaches the autoencoder, and the trained encoder is not kept after ``fit``.

Measured once (cold_items split of seed 0, movierec's ``measure``, defaults below, model
seeds 0..4): NDCG@10 0.053-0.112 (mean 0.077), recall@10 mean 0.081, ~13 s a fit on one
core; the model seed matters a lot (Cornac starts LDA from random topics, not from a fitted LDA).
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict

import numpy as np
import pandas as pd


def cornac_scores(train: "pd.DataFrame", n_users: int, n_items: int, texts: dict[int, str], cold: "np.ndarray",
                  seed: int = 0, model: str = "ctr", k: int = 50, lambda_u: float = 0.01,
                  lambda_v: float = 100.0, max_iter: int = 40, max_vocab: int = 8000, max_doc_freq: float = 0.5,
                  min_doc_freq: int = 2, cold_score: str = "theta", threads: int | None = 1,
                  verbose: bool = False) -> "np.ndarray":
    """Cornac CTR scores, users x movies (float32), meaningful on the columns of ``cold``.

    Args:
        train: ``user_idx``, ``movie_idx`` (dense ints) and ``rating``; the new movies have none.
        n_users, n_items: sizes of the index spaces.
        texts: movie_idx -> one document (all its review quotes); movies may lack one.
        cold: sorted movie indices of the new movies.
        seed: Cornac's seed (initial U, V, theta, beta).
        model: only ``"ctr"`` (see the module docstring for why not CDL).
        k, lambda_u, lambda_v, max_iter: CTR's topics/factors, regularisers and iterations
            (lambda_v=100 is the CTR paper's setting; Cornac's default is 0.01).
        max_vocab, max_doc_freq: vocabulary of Cornac's ``TextModality`` (English stop words
            removed), as in Cornac's CTR example; max_doc_freq is a share of the movies that
            have a document (not of all n_items). min_doc_freq: drop words of fewer documents.
        threads: BLAS threads while fitting (threadpoolctl; None leaves them as they are).
        cold_score: ``"theta"`` (default): a new movie is scored ``u . theta_j``;
            ``"v"``: ``u . v_j`` with Cornac's own v_j for it (theta_j slightly shrunk).

    How a new movie is scored: it is an item of the Cornac Dataset with no ratings and its
    document in the text modality, so CTR fits its topic proportions theta_j with the topic
    model shared by all movies while no rating of it is ever seen; its score for user u is
    ``U[u] . theta_j``. Rows of users without training ratings are 0.
    """
    if model != "ctr":
        raise ValueError(f"model={model!r}: only 'ctr' (Cornac's CDL cannot represent items without ratings)")
    from cornac.data import Dataset, TextModality
    from cornac.data.text import ENGLISH_STOPWORDS, BaseTokenizer
    from cornac.models import CTR

    u = train["user_idx"].to_numpy(np.int64)
    i = train["movie_idx"].to_numpy(np.int64)
    pairs = np.unique(u * n_items + i)  # one observation per (user, movie)
    uir = (pairs // n_items, pairs % n_items, np.ones(len(pairs), dtype=np.float64))
    uid_map = OrderedDict((x, x) for x in range(n_users))
    iid_map = OrderedDict((x, x) for x in range(n_items))
    data = Dataset(num_users=n_users, num_items=n_items, uid_map=uid_map, iid_map=iid_map,
                   uir_tuple=uir, seed=seed)

    corpus = [texts.get(j) or "" for j in range(n_items)]
    n_docs = sum(1 for d in corpus if d)
    # "" among the stop words: the empty token of an absent document or a double space
    tokenizer = BaseTokenizer(sep=" ", stop_words=ENGLISH_STOPWORDS | {""})
    text = TextModality(corpus=corpus, ids=list(range(n_items)), tokenizer=tokenizer, max_vocab=max_vocab,
                        max_doc_freq=max(1, int(max_doc_freq * n_docs)),  # share of the real documents
                        min_doc_freq=min_doc_freq)
    text.build(id_map=iid_map)
    data.add_modalities(item_text=text)

    ctr = CTR(k=k, lambda_u=lambda_u, lambda_v=lambda_v, max_iter=max_iter, seed=seed, verbose=verbose)
    limit = contextlib.nullcontext()
    if threads is not None:
        try:
            from threadpoolctl import threadpool_limits
            limit = threadpool_limits(threads)
        except ImportError:
            pass
    with limit:
        ctr.fit(data)

    U = np.asarray(ctr.U, dtype=np.float64)
    items = np.asarray(ctr.V, dtype=np.float64).copy()
    cold = np.asarray(cold, dtype=np.int64)
    if cold_score == "theta":
        items[cold] = ctr.model.theta[cold]
    elif cold_score != "v":
        raise ValueError(f"cold_score={cold_score!r}")
    S = (U @ items.T).astype(np.float32)
    S[np.bincount(u, minlength=n_users) == 0] = 0.0  # users without training ratings
    return S
