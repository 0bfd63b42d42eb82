"""Mini-batch Adam trainer in TensorFlow for :class:`MatrixFactorization`.

The batch loop runs inside one ``tf.function`` per epoch (batches gathered from rating
tensors by a shuffled index, no per-batch Python), and nothing assumes a CPU: the same
code runs on a GPU. The learned
variables are copied back into the numpy state of the model, so a model trained here
saves and loads exactly like one trained by SGD.
"""

from __future__ import annotations

import logging
import os

import numpy as np

from movierec.models._tracking import EpochTracker

log = logging.getLogger(__name__)

#: Adam's epsilon. The default 1e-7 lets a user or movie seen in a few ratings take
#: full-size steps and overfit (MovieLens-100K u1: RMSE 0.938 vs 0.926 with 1e-3).
ADAM_EPSILON = 1e-3


def fit_adam(model, data, val_mask: np.ndarray, rng: np.random.Generator):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf.random.set_seed(model.seed)
    tr = np.flatnonzero(~val_mask)
    va = np.flatnonzero(val_mask)
    n_train = len(tr)
    step, state, _, _ = _make_step(tf, model, data, n_train)

    users = tf.constant(data.users[tr])
    items = tf.constant(data.items[tr])
    ratings = tf.constant(data.ratings[tr])
    wts = tf.constant(np.ones(len(tr), np.float32) if data.weights is None else data.weights[tr])
    batch = int(model.batch_size)
    n_batches = (n_train + batch - 1) // batch

    @tf.function
    def run_epoch(seed):
        # the whole epoch in one graph: a shuffled index, then a batch at a time gathered
        # from the rating tensors (no tf.data shuffle buffer: that copies every rating)
        perm = tf.random.experimental.stateless_shuffle(tf.range(n_train), seed=seed)
        sse = tf.constant(0.0)
        for b in tf.range(n_batches):
            idx = perm[b * batch : (b + 1) * batch]
            sse += step(tf.gather(users, idx), tf.gather(items, idx), tf.gather(ratings, idx), tf.gather(wts, idx))
        return sse

    tracker = EpochTracker(model, data, va)
    for epoch in range(model.epochs):
        seed = tf.constant([int(rng.integers(1 << 31)), epoch], dtype=tf.int64)
        sse = float(run_epoch(seed))
        _pull(model, *state)
        if tracker.end_epoch(epoch, sse, n_train):
            break
    history = tracker.finish()
    # let TensorFlow drop this fit's graph state (a refit follows in the same process)
    tf.keras.backend.clear_session()
    return history


def _make_step(tf, model, data, n_train: int, loss_scale: float = 1.0, optimizer=None):
    """The model's parameters as TensorFlow variables and one Adam step on a batch:
    (step(u, i, r, w) -> batch squared error, the variables for :func:`_pull`).

    ``loss_scale``: 1 / replicas under a distribution strategy (whose gradients are summed
    across replicas); ``optimizer``: one to use instead of a new Adam (its state restored)."""
    use_feat = bool(model.use_features and (model.user_weights_.size or model.item_weights_.size))

    bu = tf.Variable(model.user_bias_, name="user_bias")
    bi = tf.Variable(model.item_bias_, name="item_bias")
    P = tf.Variable(model.user_factors_, name="user_factors")
    Q = tf.Variable(model.item_factors_, name="item_factors")
    # a side without features has an empty projection: a constant, not a variable (creating a
    # variable broadcasts its value to every worker under the multi-worker strategy, and that
    # collective crashes TensorFlow's worker on an empty tensor: SIGSEGV, Adam on Ray with
    # model.use_features false)
    W, V = (tf.Variable(a, name=n) if a.size else tf.constant(a)
            for a, n in ((model.user_weights_, "user_weights"), (model.item_weights_, "item_weights")))
    X = tf.constant(model.user_features_)
    Y = tf.constant(model.item_features_)
    mu = tf.constant(model.global_mean_, tf.float32)
    variables = [bu, bi, P, Q] + ([x for x, a in ((W, model.user_weights_), (V, model.item_weights_)) if a.size]
                                  if use_feat else [])
    implicit = bool(model.implicit)
    Yimp = tf.Variable(model.item_implicit_ if implicit else np.zeros((1, 1), np.float32), name="item_implicit")
    if implicit:
        variables.append(Yimp)
        imp_rows = _csr_rows(tf, model._implicit_norm)
    # SGD shrinks y_j once for every user whose implicit set holds j: weight by that count
    counts = np.asarray(data.implicit().sum(0)).ravel().astype(np.float32) if implicit else np.zeros(1, np.float32)
    imp_weight = tf.constant(counts[:, None] * model.reg_implicit / max(n_train, 1))

    nb = data.neighbours.tocsr() if data.neighbours is not None else None
    social = model.social_reg > 0 and nb is not None and nb.nnz > 0
    if social:
        # under a distribution strategy every worker's gradient must have the same length (the
        # all-gather of tf.IndexedSlices of different lengths fails inside the step loop): rows
        # padded to the longest neighbourhood (the social stage keeps a bounded number)
        nb_rows = _csr_rows(tf, nb, fixed=loss_scale != 1.0)
        has_nb = tf.constant((np.diff(nb.indptr) > 0).astype(np.float32))

    # a large epsilon damps the per-parameter step of rarely seen users and movies (with the
    # default 1e-7 they take full-size steps from a few ratings and overfit)
    opt = optimizer if optimizer is not None else adam(tf, model)
    reg = tf.constant(model.reg, tf.float32)
    reg_b = tf.constant(model.reg_bias, tf.float32)
    reg_f = tf.constant(model.reg_features / max(n_train, 1), tf.float32)
    social_reg = tf.constant(model.social_reg, tf.float32)

    def effective(u, i):
        pu = tf.gather(P, u)
        qi = tf.gather(Q, i)
        if implicit:  # |N(u)|^-1/2 sum of y_j over the batch users' implicit sets only
            pu = pu + imp_rows(u, Yimp)
        if use_feat:
            pu = pu + tf.matmul(tf.gather(X, u), W, transpose_b=True)
            qi = qi + tf.matmul(tf.gather(Y, i), V, transpose_b=True)
        return pu, qi

    def gradients(u, i, r, w):
        """(batch squared error, the loss's gradients for ``variables``)."""
        with tf.GradientTape() as tape:
            pu, qi = effective(u, i)
            pred = mu + tf.gather(bu, u) + tf.gather(bi, i) + tf.reduce_sum(pu * qi, axis=1)
            err = r - pred
            loss = tf.reduce_mean(w * tf.square(err))  # pseudo-ratings weigh less
            loss += reg * tf.reduce_mean(tf.reduce_sum(tf.square(tf.gather(P, u)), 1)
                                         + tf.reduce_sum(tf.square(tf.gather(Q, i)), 1))
            loss += reg_b * tf.reduce_mean(tf.square(tf.gather(bu, u)) + tf.square(tf.gather(bi, i)))
            if use_feat:
                loss += reg_f * (tf.reduce_sum(tf.square(W)) + tf.reduce_sum(tf.square(V)))
            if implicit:
                loss += tf.reduce_sum(imp_weight * tf.square(Yimp))
            if social:  # the batch users' trusted neighbours' mean, from their rows of P only
                diff = (tf.gather(P, u) - nb_rows(u, P)) * tf.expand_dims(tf.gather(has_nb, u), 1)
                loss += social_reg * tf.reduce_mean(tf.reduce_sum(tf.square(diff), 1))
            loss *= loss_scale
        return tf.reduce_sum(tf.square(err)), tape.gradient(loss, variables)

    def step(u, i, r, w):
        sse, grads = gradients(u, i, r, w)
        opt.apply_gradients(zip(grads, variables))
        return sse

    step.gradients = gradients  # tests and the benchmark look at what a step sends
    return step, (bu, bi, P, Q, W, V, Yimp if implicit else None), opt, variables


def _csr_rows(tf, m, fixed: bool = False):
    """``rows(u, T)``: rows ``u`` of the sparse product ``m @ T`` (m: a users x n CSR matrix),
    from the rows of ``T`` that those users' entries name. The same numbers as the whole
    product gathered at ``u``, but the gradient it gives ``T`` names only the rows it read
    (``tf.IndexedSlices``): a step's work and what Ray workers exchange follow the batch, not
    the size of ``T``. ``fixed``: every row padded (weight 0) to the longest row of ``m``, so
    that the gradient's length depends only on the batch size."""
    m = m.tocsr()
    indptr = tf.constant(m.indptr.astype(np.int64))
    indices = tf.constant(m.indices.astype(np.int64))
    weights = tf.constant(m.data.astype(np.float32))
    width = int(np.diff(m.indptr).max(initial=0))

    def padded(u, T):
        u = tf.cast(u, tf.int64)
        start = tf.gather(indptr, u)[:, None]
        offset = tf.range(width, dtype=tf.int64)[None, :]
        valid = offset < tf.gather(indptr, u + 1)[:, None] - start
        pos = tf.where(valid, start + offset, tf.zeros_like(offset))
        w = tf.where(valid, tf.gather(weights, pos), tf.zeros_like(pos, tf.float32))
        return tf.reduce_sum(tf.gather(T, tf.gather(indices, pos)) * w[..., None], axis=1)

    if fixed and width:
        return padded

    def rows(u, T):
        u = tf.cast(u, tf.int64)
        pos = tf.ragged.range(tf.gather(indptr, u), tf.gather(indptr, u + 1))
        flat = pos.flat_values
        part = tf.gather(T, tf.gather(indices, flat)) * tf.expand_dims(tf.gather(weights, flat), 1)
        return tf.math.unsorted_segment_sum(part, pos.value_rowids(), tf.shape(u, out_type=tf.int64)[0])

    return rows


def adam(tf, model):
    """The Adam optimizer of the model's settings."""
    return tf.keras.optimizers.Adam(learning_rate=model.learning_rate, epsilon=ADAM_EPSILON)


def _pull(model, bu, bi, P, Q, W, V, Yimp=None) -> None:
    model.user_bias_ = bu.numpy()
    model.item_bias_ = bi.numpy()
    model.user_factors_ = P.numpy()
    model.item_factors_ = Q.numpy()
    model.user_weights_ = W.numpy()
    model.item_weights_ = V.numpy()
    if Yimp is not None:
        model.item_implicit_ = Yimp.numpy()
        model.user_implicit_ = np.asarray(model._implicit_norm @ model.item_implicit_, np.float32)
