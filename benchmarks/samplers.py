"""Suite ``samplers``: what each token sampler costs per decoding step, relative to the model's forward pass.

For batch sizes 1 and 32, on the default model (or ``--model``):

- forward: one incremental decode step, ``KVBatch.step(tokens)`` on a batch prefilled with real prompts cut to
  16 tokens (the cache is cropped back before each timed step, so every step sees the same 16-token context);
- sampler: ``sampler.sample(logprobs, state, rng)`` on the real next-token log-probabilities of that batch, with
  ``RowStreams.from_seed(0, B)``.

Reported per sampler and batch size: sampler ms, forward ms and overhead % = sampler / forward, medians over
repeats. All cases are timed round-robin (``bench.time_interleaved``), so machine noise hits them alike.

Also Top-H's distribution transform against transformers' ``TopHLogitsWarper`` on the same log-probabilities
(the ratio peer time / our time).

Run: ``decoding bench samplers [--model PATH] [--repeats N] [--quick]``.
"""

from __future__ import annotations

from functools import partial

import torch
from transformers.generation.logits_process import TopHLogitsWarper

from decoding.bench import BenchConfig, Report, load_model, time_interleaved
from decoding.kernels.random import RowStreams
from decoding.sampler_spec import parse_sampler
from decoding.samplers import TopH

DESCRIPTION = (
    "Per-step cost of each token sampler relative to one incremental forward pass (a decode step) of the model, "
    "at batch 1 and batch 32, on the real next-token log-probabilities of 16-token prompts. "
    "overhead_pct = sampler_ms / forward_ms * 100, medians over repeats, cases timed round-robin."
)

#: Sampler specs in the CLI's language (``decoding generate --sampler SPEC``).
SAMPLERS = (
    "greedy",
    "categorical",
    "temperature=0.8",
    "top_k=50",
    "top_p=0.9",
    "min_p=0.05",
    "typical=0.95",
    "temperature=0.8|top_k=50|top_p=0.9",
    "top_h=0.4",
    "top_h=0.4,rule=paper",
    "mirostat=3,version=1",
    "mirostat=3,version=2",
)
#: Top-H against transformers' TopHLogitsWarper on the same logits: the distribution transform alone, no draw.
TOP_H_OURS, TOP_H_HF = "top_h=0.4 transform", "transformers TopHLogitsWarper(0.4)"
BATCH_SIZES = (1, 32)
PROMPT_TOKENS = 16
SEED = 0
REPEATS = 15  # ~1.5-2 min on 2 CPU cores for Gemma 3 270M (the B=32 forward and the full-vocabulary samplers dominate)
QUICK_REPEATS = 1

#: 32 prompts, each cut to its first PROMPT_TOKENS tokens (special tokens such as <bos> included).
PROMPTS = (
    "The history of the printing press begins in the fifteenth century, when Johannes Gutenberg combined",
    "To make a good cup of coffee at home, start with freshly roasted beans and grind them just before",
    "In mathematics, a prime number is a natural number greater than one that has no positive divisors other",
    "The old lighthouse keeper climbed the spiral staircase every evening to light the lamp that guided ships",
    "Photosynthesis is the process by which green plants and some other organisms use sunlight to synthesize",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number, computed iteratively.\"\"\"\n    a, b = 0, 1\n",
    "Dear hiring manager, I am writing to apply for the position of software engineer that was advertised on",
    "The French Revolution was a period of political and social upheaval in France that began in 1789 and",
    "Once upon a time, in a village at the edge of a vast forest, there lived a young girl who loved to",
    "Machine learning models are trained by minimising a loss function over a data set, usually with some form",
    "The recipe calls for two cups of flour, one teaspoon of baking soda, a pinch of salt and three ripe bananas",
    "SELECT customers.name, COUNT(orders.id) AS order_count FROM customers LEFT JOIN orders ON customers.id =",
    "Mount Everest, the highest mountain above sea level, lies in the Mahalangur Himal sub-range of the Himalayas",
    "The committee will meet on Thursday afternoon to review the budget proposals submitted by each department",
    "Water boils at one hundred degrees Celsius at sea level, but at higher altitudes the boiling point drops",
    "In the beginning of the twentieth century, physicists discovered that light behaves both as a wave and as",
    "The city council approved a plan to build three new parks and a network of protected bicycle lanes across",
    "A good night's sleep improves memory, mood and concentration, and most adults need between seven and nine",
    "The quick brown fox jumps over the lazy dog, a sentence famous for containing every letter of the alphabet",
    "Shakespeare wrote thirty-seven plays, including tragedies such as Hamlet, Othello, King Lear and Macbeth",
    "To install the package, open a terminal, create a virtual environment, activate it, and then run the command",
    "The stock market fell sharply on Monday as investors worried about rising interest rates and slowing growth",
    "Honey bees communicate the location of flowers to other members of the hive through a series of movements",
    "The train to Edinburgh leaves from platform nine at a quarter past seven every morning except on Sundays",
    "{\"name\": \"Ada Lovelace\", \"born\": 1815, \"known_for\": [\"Analytical Engine\", \"first published algorithm\"",
    "The museum's new exhibition brings together more than two hundred paintings, drawings and sculptures from",
    "Climate scientists agree that the average temperature of the Earth's surface has risen by more than one degree",
    "She opened the letter slowly, unsure whether the news inside would change everything or nothing at all, and",
    "A binary search tree is a rooted binary tree in which the key of every internal node is greater than all the",
    "The team practised every morning for six months before the championship, and their hard work finally paid",
    "Volcanoes form where tectonic plates diverge or converge, and where hot spots in the mantle melt the crust",
    "The word 'algorithm' comes from the name of the ninth-century Persian mathematician Muhammad ibn Musa al",
)


def run(config: BenchConfig) -> Report:
    """Time the forward and every sampler at each batch size; return the report (see the module docstring)."""
    lm = load_model(config)
    repeats = config.repeats or (QUICK_REPEATS if config.quick else REPEATS)
    warmup = 0 if config.quick else 1
    prompts = [lm.encode(p)[:PROMPT_TOKENS] for p in PROMPTS]
    device = lm.device
    sync = torch.cuda.synchronize if device.type == "cuda" else None

    cases = {}
    for b in BATCH_SIZES:
        batch = lm.start(prompts[:b])
        logprobs = batch.logprobs  # the real next-token distribution after the prompts, [B, V]
        tokens = logprobs.argmax(-1)
        cases[_key("forward", b)] = partial(_decode_step, batch, batch.length, tokens)
        for spec in SAMPLERS:
            sampler = parse_sampler(spec)
            state = sampler.init_state(b, logprobs.device)
            cases[_key(spec, b)] = partial(sampler.sample, logprobs, state, RowStreams.from_seed(SEED, b))
        cases[_key(TOP_H_OURS, b)] = partial(TopH(0.4).transform, logprobs, None)
        cases[_key(TOP_H_HF, b)] = partial(TopHLogitsWarper(0.4), None, logprobs)

    medians = time_interleaved(cases, repeats, warmup, sync=sync, desc="samplers", progress=config.progress)

    rows = []
    for b in BATCH_SIZES:
        forward_ms = medians[_key("forward", b)] * 1e3
        for spec in SAMPLERS:
            sampler_ms = medians[_key(spec, b)] * 1e3
            rows.append({
                "sampler": spec, "batch": b, "sampler_ms": round(sampler_ms, 4), "forward_ms": round(forward_ms, 4),
                "overhead_pct": round(100.0 * sampler_ms / forward_ms, 3),
            })

    top_h_ratio = {f"B={b}": round(medians[_key(TOP_H_HF, b)] / medians[_key(TOP_H_OURS, b)], 3)
                   for b in BATCH_SIZES}
    settings = {
        "top_h_vs_transformers": {"ours": TOP_H_OURS, "peer": TOP_H_HF, "peer_ms_over_ours_ms": top_h_ratio},
        "model": config.model or "default: Gemma 3 270M (decoding.default_model)",
        "model_path": str(getattr(lm.model.config, "_name_or_path", "")),
        "model_class": type(lm.model).__name__,
        "vocab_size": lm.vocab_size,
        "device": str(device),
        "dtype": str(lm.dtype).replace("torch.", ""),
        "torch_threads": torch.get_num_threads(),
        "batch_sizes": list(BATCH_SIZES),
        "samplers": list(SAMPLERS),
        "repeats": repeats,
        "warmup_rounds": warmup,
        "seed": SEED,
        "forward": "one incremental decode step (KVBatch.step of 1 token per row) after a prefill of the prompts; "
                   "the cache is cropped back before each timed step",
        "sampler_input": "the real next-token log-probabilities of the prefilled batch, float32",
        "prompt_tokens": [len(p) for p in prompts[: max(BATCH_SIZES)]],
        "prompts": list(PROMPTS[: max(BATCH_SIZES)]),
        "prompt_note": f"each prompt is cut to its first {PROMPT_TOKENS} tokens (special tokens included)",
    }
    headers = ["sampler"] + [h for b in BATCH_SIZES for h in (f"B={b} ms", f"B={b} overhead")]
    table = [["forward (1 decode step)"] + [c for b in BATCH_SIZES
                                           for c in (_ms(medians[_key("forward", b)] * 1e3), "100%")]]
    by_key = {(r["sampler"], r["batch"]): r for r in rows}
    for spec in SAMPLERS:
        table.append([spec] + [c for b in BATCH_SIZES for c in (_ms(by_key[spec, b]["sampler_ms"]),
                                                               f"{by_key[spec, b]['overhead_pct']:.1f}%")])
    for label in (TOP_H_OURS, TOP_H_HF):
        table.append([label] + [c for b in BATCH_SIZES for c in (
            _ms(medians[_key(label, b)] * 1e3),
            f"{100.0 * medians[_key(label, b)] / medians[_key('forward', b)]:.1f}%")])
    table.append(["transformers / ours (Top-H)"] + [c for b in BATCH_SIZES for c in (f"{top_h_ratio[f'B={b}']:.2f}x", "")])
    name = config.model or "Gemma 3 270M"
    return Report("samplers", DESCRIPTION, settings, rows, headers, table, plot=partial(_plot, rows, name, device))


def _decode_step(batch, length: int, tokens: torch.Tensor) -> None:
    batch.crop(length)  # back to the prompt, so every timed step has the same context
    batch.step(tokens)


def _key(name: str, batch: int) -> str:
    return f"{name} @ B={batch}"


def _ms(ms: float) -> str:
    return f"{ms:.3f}" if ms < 1 else f"{ms:.1f}" if ms < 100 else f"{ms:.0f}"


def _plot(rows: list[dict], model: str, device, figure) -> None:
    ax = figure.subplots()
    labels = list(SAMPLERS)
    width = 0.8 / len(BATCH_SIZES)
    for j, b in enumerate(BATCH_SIZES):
        values = [next(r["overhead_pct"] for r in rows if r["sampler"] == s and r["batch"] == b) for s in labels]
        forward_ms = next(r["forward_ms"] for r in rows if r["batch"] == b)
        positions = [i + (j - (len(BATCH_SIZES) - 1) / 2) * width for i in range(len(labels))]
        bars = ax.barh(positions, values, height=width, label=f"batch {b} (forward {forward_ms:.0f} ms)")
        ax.bar_label(bars, fmt="%.1f%%", padding=2, fontsize=7)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("sampler time per step, % of one forward pass (median)")
    ax.set_title(f"Sampler overhead per decoding step: {model} on {device}", fontsize=10)
    ax.margins(x=0.15)
    ax.legend(loc="best", fontsize=8)
