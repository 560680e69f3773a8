"""Sequence samplers: they own the whole decode of a prompt, above the decode loop (``decoding.decode``).

- ``smc.py``: sequential Monte Carlo over particles (``dc.SMC``);
- ``sir.py``: sampling-importance-resampling over whole sequences (``dc.SIR``);
- ``speculative/``: lossless speculative decoding with draft trees (``dc.Speculative``).

Token samplers (``decoding.samplers``) sit below the loop and never import it; this package imports the loop and
the token samplers, and ``decoding`` re-exports its public names.
"""
