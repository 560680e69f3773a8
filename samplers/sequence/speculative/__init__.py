"""Speculative decoding: drafters, token trees, lossless verifiers and the decode loop that ties them together.

``dc.Speculative(draft, tree, verify, sampler)`` (``speculative.py``) is the entry point. The pieces:

- drafters (``drafter.py``, ``ngram.py``): ``ModelDraft`` (any HF LM sharing the target's tokenizer, optionally
  with a trimmed head, ``vocab_trim``; ``early_exit.py`` cuts the target's first layers into one, sharing its
  weights) and ``NGramDraft`` (continuations looked up in the context);
- tree shapes (``trees.py``): ``Chain``, ``MultiDraft``, ``DynamicTree``;
- verifiers, one file each: ``rrs.py`` (speculative sampling, recursive rejection sampling with and without
  replacement, top-k), ``spectr.py`` (SpecTr K-SEQ), ``greedy_multi_draft.py`` (Hu et al.), ``block.py`` (block
  verification), with the protocol in ``verify.py`` and the draft laws in ``drafting.py``;
- ``optimal.py``: the optimal multi-draft acceptance alpha* and each verifier's exact acceptance.
"""
