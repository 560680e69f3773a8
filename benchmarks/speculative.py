"""Suite ``speculative``: what speculative decoding with an n-gram draft buys on the default model, and how close each
multi-draft verifier comes to the optimal acceptance alpha*.

Decoding (batch size 1, seed 0, the default model as the target, ``--model`` for another): six prompts, four
input-grounded (reformat a JSON object, extract JSON fields from a paragraph, rename a variable in a Python
function, repeat a Python class) and two open-ended (a short story, an explanation), each decoded for up to
``MAX_NEW_TOKENS`` tokens at T=0 (``dc.Greedy()``, HF ``do_sample=False``) and T=1 (``dc.Temperature(1.0)``, HF
``do_sample=True, temperature=1.0, top_k=0, top_p=1.0``). The prompts are formatted with the tokenizer's chat
template when it has one, else as plain text (the default model's tokenizer has none). Cases:

- ``plain``: ``dc.generate`` with the sampler alone, one target forward per token: the baseline;
- ``HF plain`` and ``HF PL K=k``: ``model.generate`` of transformers, without and with prompt lookup
  (``prompt_lookup_num_tokens=k``, its default ``max_matching_ngram_size``); HF's figure is its best k;
- ``chain B``, ``multi B``, ``dynamic B``: ``dc.Speculative(dc.NGramDraft(8), tree)`` at an equal draft budget of
  B nodes per round: ``dc.Chain(B)``, ``dc.MultiDraft(2, depth, "deterministic")`` (a full binary tree of the
  draft's top-2 tokens, 2 + 4 + ... + 2^depth = B nodes) and ``dc.DynamicTree(budget=B, max_depth=B, top_k=4)``.

Every case runs on every prompt at both temperatures, round robin (per repeat, per prompt and temperature, every
case once, in an order rotated per prompt), after one untimed warm-up of every case. Reported per case,
temperature and prompt group: tokens per target forward (generated tokens / target forwards after the prefill;
HF's forwards counted by a forward hook on the model), tokens/s over the plain case's (``x plain``) and over HF
prompt lookup's best k (``x HF PL``), both summed over the group's prompts (at T=0 every case writes the same text,
so these are wall-time ratios; at T=1 texts differ, so throughputs are compared), and at T=0 how many outputs
equal plain greedy decoding token for token (a difference can only come from a float near-tie).

Acceptance: ``N_DISTRIBUTIONS`` real next-token distributions p of the target at T=1, at positions spread
evenly over the six prompts; the draft q is a perturbed copy, ``q = softmax(logits + g)`` with g i.i.d.
standard Gumbel noise (scale 1, ``torch.Generator`` seed 0). Both are restricted to the ``SUPPORT`` tokens with the
largest max(p, q) and renormalised (alpha* without replacement costs V^(k-1) per distribution; the mass dropped is
in the settings), and every rate below is that of the restricted pair. For k in (1, 2, 4) children and each
verifier: its acceptance (``optimal.acceptance_mc``: P(the emitted token is a drafted child), ``MC_SAMPLES`` child
tuples per distribution) and the optimal acceptance of its draft law (``optimal.alpha_star``), both averaged over
the distributions.

Self-draft trees: the n-gram draft seldom offers two plausible followers, so trees have little to branch on.
Chain and dynamic tree at equal budget (14) are also compared with a real model draft: the target's early exit
(``dc.early_exit(lm, 15)``: its first 15 of 18 layers, its final norm and its full LM head), on all six prompts at
both temperatures, 48 new tokens, as tokens per target forward (a draft step costs most of a target forward, so
neither is a wall-time win over plain decoding on a CPU).

Run: ``decoding bench speculative [--model PATH] [--repeats N] [--quick]``.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

import torch

import decoding as dc
from decoding.bench import BenchConfig, Report, load_model
from decoding.progress import progress_bar
from decoding.samplers.sequence.speculative.greedy_multi_draft import GreedyMultiDraft
from decoding.samplers.sequence.speculative.optimal import acceptance_mc, alpha_star
from decoding.samplers.sequence.speculative.rrs import RRS, TopKVerifier
from decoding.samplers.sequence.speculative.spectr import SpecTr

DESCRIPTION = (
    "Speculative decoding with the n-gram draft (dc.NGramDraft(8)) on input-grounded and open-ended prompts at T=0 "
    "and T=1, batch 1: tokens per target forward and tokens/s against plain decoding and against transformers' "
    "prompt lookup (best k) in the same run, for chain, multi-draft and dynamic trees at equal draft budgets; and "
    "each multi-draft verifier's acceptance against the optimal alpha* on real next-token distributions of the "
    "model with a Gumbel-perturbed draft; chain vs dynamic tree with the model's early-exit self-draft."
)

GROUNDED, OPEN = "input-grounded", "open-ended"
NGRAM = 8  # the longest suffix looked up: a long match follows one copy source, as prompt lookup does
MAX_NEW_TOKENS, QUICK_MAX_NEW_TOKENS = 96, 8
REPEATS = 1  # timed runs per case and prompt; every figure is summed over a group's prompts
BUDGETS, QUICK_BUDGETS = (14, 30), (6,)  # a full binary tree of depth d has 2^(d+1) - 2 nodes: 6, 14, 30
HF_LOOKUP, QUICK_HF_LOOKUP = (5, 10, 20), (10,)  # prompt_lookup_num_tokens; 10 is HF's documented typical value
DYNAMIC_TOP_K = 4
TEMPERATURES = (0.0, 1.0)
SEED = 0

EXIT_LAYERS = 15  # the self-draft: Gemma 3 270M's first 15 of 18 layers (at 12, 17-78% greedy agreement)
SELF_DRAFT_BUDGET, QUICK_SELF_DRAFT_BUDGET = 14, 6
SELF_DRAFT_TOKENS, QUICK_SELF_DRAFT_TOKENS = 48, 4

N_DISTRIBUTIONS, QUICK_N_DISTRIBUTIONS = 20, 4
SUPPORT, QUICK_SUPPORT = 128, 32
MC_SAMPLES, QUICK_MC_SAMPLES = 4000, 200
DRAFT_COUNTS = (1, 2, 4)
GUMBEL_SCALE = 1.0


# --- prompts ----------------------------------------------------------------------------------------------------

ORDER_JSON = (
    '{"order_id":"A-10293","customer":{"name":"Maria Lopez","email":"maria.lopez@example.com","address":'
    '{"street":"42 Harbor Lane","city":"Porto","country":"Portugal","zip":"4000-123"}},"items":[{"sku":"KB-201",'
    '"name":"Mechanical keyboard","qty":1,"price":89.9},{"sku":"MS-044","name":"Wireless mouse","qty":2,'
    '"price":24.5},{"sku":"CB-310","name":"USB-C cable","qty":3,"price":7.99}],"shipping":{"method":"express",'
    '"cost":12.0},"paid":true}'
)
TEAM_TEXT = (
    "Our new team members: Alice Johnson (alice.johnson@example.com) joins from Seattle and will lead the data "
    "platform. Bob Smith, reachable at bob.smith@example.org, works remotely from Austin. Chen Wei "
    "(chen.wei@example.net) moves over from our Singapore office. Finally, Dana Okafor, dana.okafor@example.com, "
    "is based in Lagos and will head partnerships."
)
SUMMARIZE_PY = '''def summarize(values):
    x = 0
    total = 0.0
    largest = None
    for v in values:
        if v is None:
            continue
        x += 1
        total += v
        if largest is None or v > largest:
            largest = v
    mean = total / x if x else 0.0
    return {"count": x, "total": total, "mean": mean, "largest": largest}
'''
CACHE_PY = '''class LRUCache:
    def __init__(self, capacity: int):
        self.capacity = capacity
        self.items = {}
        self.order = []

    def get(self, key):
        if key not in self.items:
            return None
        self.order.remove(key)
        self.order.append(key)
        return self.items[key]

    def put(self, key, value):
        if key in self.items:
            self.order.remove(key)
        elif len(self.items) >= self.capacity:
            oldest = self.order.pop(0)
            del self.items[oldest]
        self.items[key] = value
        self.order.append(key)
'''


@dataclass(frozen=True)
class Prompt:
    """A request and the opening of its answer (written after the chat template's generation prompt)."""

    name: str
    group: str  # GROUNDED or OPEN
    request: str
    answer_start: str

    def text(self, tokenizer) -> str:
        """The prompt as the model sees it: the chat template when the tokenizer has one, else plain text."""
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            return f"{self.request}\n\n{self.answer_start}"
        chat = tokenizer.apply_chat_template([{"role": "user", "content": self.request}], tokenize=False,
                                             add_generation_prompt=True)
        bos = tokenizer.bos_token or ""
        if bos and chat.startswith(bos):  # encoding adds <bos> itself
            chat = chat[len(bos):]
        return chat + self.answer_start


PROMPTS = (
    Prompt("json reformat", GROUNDED, f"Reformat this JSON with 2-space indentation.\n\nInput:\n{ORDER_JSON}",
           "Output:\n```json\n"),
    Prompt("json extract", GROUNDED, "Extract the fields name, email and city of every person in this text as a "
           f"JSON list.\n\nText:\n{TEAM_TEXT}", "JSON:\n```json\n[\n"),
    Prompt("code rename", GROUNDED, "Rename the variable `x` to `count` in this Python function.\n\n```python\n"
           f"{SUMMARIZE_PY}```", "The same function with `x` renamed to `count`:\n\n```python\n"),
    Prompt("code repeat", GROUNDED, f"Repeat this code exactly.\n\n```python\n{CACHE_PY}```",
           "Repeated:\n\n```python\n"),
    Prompt("story", OPEN, "Write a short story about a lighthouse keeper who finds a message in a bottle.",
           "Story:\n"),
    Prompt("sky", OPEN, "Explain why the sky is blue.", "Answer:\n"),
)
QUICK_PROMPTS = (PROMPTS[3], PROMPTS[5])


# --- cases ------------------------------------------------------------------------------------------------------

Runner = Callable[[str, int], tuple[list[int], int]]  # (prompt text, max_new_tokens) -> (tokens, forwards)


@dataclass(frozen=True)
class Case:
    """One way to decode: ``run`` returns the generated token ids and the target forwards after the prefill."""

    name: str
    family: str  # "plain", "hf", "hf_lookup", "chain", "multi", "dynamic"
    run: Runner
    budget: int | None = None
    lookup: int | None = None


class ForwardCounter:
    """Counts the calls of a module's forward (a hook, removed by :meth:`close`)."""

    def __init__(self, module: torch.nn.Module):
        self.calls = 0
        self._handle = module.register_forward_hook(self._hook)

    def _hook(self, module, args, output) -> None:
        self.calls += 1

    def close(self) -> None:
        self._handle.remove()


def ours(lm, sampler) -> Runner:
    def run(text: str, max_new_tokens: int) -> tuple[list[int], int]:
        out = dc.generate(lm, text, sampler, max_new_tokens=max_new_tokens, seed=SEED)
        return list(out[0].token_ids), out.stats.forwards - 1

    return run


def hf(lm, counter: ForwardCounter, temperature: float, lookup: int | None) -> Runner:
    """transformers' ``generate`` on the same token ids, with prompt lookup when ``lookup`` is given."""
    sampling = {"do_sample": False} if temperature == 0 else {"do_sample": True, "temperature": temperature,
                                                              "top_k": 0, "top_p": 1.0}
    if lookup is not None:
        sampling["prompt_lookup_num_tokens"] = lookup

    def run(text: str, max_new_tokens: int) -> tuple[list[int], int]:
        ids = torch.tensor([lm.encode(text)], device=lm.device)
        torch.manual_seed(SEED)  # transformers samples from the global generator
        counter.calls = 0
        out = lm.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                eos_token_id=list(lm.eos_token_ids), pad_token_id=lm.pad_token_id, **sampling)
        return out[0, ids.shape[1]:].tolist(), counter.calls - 1

    return run


def tree_shapes(budget: int) -> dict[str, object]:
    """Chain, binary multi-draft and dynamic tree with ``budget`` draft nodes each."""
    depth = (budget + 2).bit_length() - 2  # 2^(depth+1) - 2 = budget
    if 2 ** (depth + 1) - 2 != budget:
        raise ValueError(f"budget must be 2^(d+1) - 2 (6, 14, 30, ...) for a full binary tree, got {budget}")
    return {"chain": dc.Chain(budget), "multi": dc.MultiDraft(2, depth, draws="deterministic"),
            "dynamic": dc.DynamicTree(budget=budget, max_depth=budget, top_k=DYNAMIC_TOP_K)}


def cases(lm, counter: ForwardCounter, temperature: float, budgets: Sequence[int],
          lookups: Sequence[int]) -> list[Case]:
    sampler = dc.Greedy() if temperature == 0 else dc.Temperature(temperature)
    out = [Case("plain", "plain", ours(lm, sampler)), Case("HF plain", "hf", hf(lm, counter, temperature, None))]
    out += [Case(f"HF PL K={k}", "hf_lookup", hf(lm, counter, temperature, k), lookup=k) for k in lookups]
    for b in budgets:
        for family, tree in tree_shapes(b).items():
            spec = dc.Speculative(dc.NGramDraft(NGRAM), tree, sampler=sampler)
            out.append(Case(f"{family} B={b}", family, ours(lm, spec), budget=b))
    return out


@dataclass
class Outcome:
    tokens: list[int]
    forwards: int
    seconds: list[float] = field(default_factory=list)


def measure(lm, prompts: Sequence[Prompt], table: dict[float, list[Case]], max_new_tokens: int, repeats: int,
            warmup: bool, progress: bool) -> dict[tuple[float, str, str], Outcome]:
    """Every case on every prompt at every temperature, round robin; keyed (temperature, prompt, case)."""
    texts = {p.name: p.text(lm.tokenizer) for p in prompts}
    for temperature, row in table.items() if warmup else ():  # kernels compiled, caches allocated; untimed
        for case in row:
            case.run(texts[prompts[0].name], 8)
    results: dict[tuple[float, str, str], Outcome] = {}
    total = repeats * len(prompts) * sum(len(row) for row in table.values())
    with progress_bar(total=total, desc="speculative", disable=not progress) as bar:
        for r in range(repeats):
            for i, prompt in enumerate(prompts):
                for temperature, row in table.items():
                    shift = (i + r) % len(row)
                    for case in row[shift:] + row[:shift]:  # rotated: no case always runs first
                        bar.set_postfix_str(f"{prompt.name}, T={temperature:g}, {case.name}", refresh=False)
                        start = time.perf_counter()
                        tokens, forwards = case.run(texts[prompt.name], max_new_tokens)
                        seconds = time.perf_counter() - start
                        key = (temperature, prompt.name, case.name)
                        results.setdefault(key, Outcome(tokens, forwards)).seconds.append(seconds)
                        bar.update()
    return results


# --- decoding rows ----------------------------------------------------------------------------------------------


def decode_rows(prompts: Sequence[Prompt], table: dict[float, list[Case]],
                results: dict[tuple[float, str, str], Outcome]) -> tuple[list[dict], dict[str, int]]:
    """One row per temperature, prompt group and case; and HF's best prompt-lookup k per temperature and group."""
    rows, best_k = [], {}
    for temperature, row in table.items():
        for group in (GROUNDED, OPEN):
            names = [p.name for p in prompts if p.group == group]
            if not names:
                continue
            totals = {c.name: _totals(results, temperature, names, c.name) for c in row}
            lookups = [c for c in row if c.family == "hf_lookup"]
            best = max(lookups, key=lambda c: totals[c.name]["tokens_per_s"]) if lookups else None
            if best is not None:
                best_k[f"T={temperature:g} {group}"] = best.lookup
            for case in row:
                rows.append(_decode_row(case, temperature, group, names, totals, best, results))
    return rows, best_k


def _totals(results, temperature: float, names: Sequence[str], case: str) -> dict:
    outs = [results[(temperature, n, case)] for n in names]
    tokens = sum(len(o.tokens) for o in outs)
    forwards = sum(o.forwards for o in outs)
    seconds = sum(statistics.median(o.seconds) for o in outs)
    return {"tokens": tokens, "forwards": forwards, "seconds": seconds,
            "tokens_per_forward": tokens / max(forwards, 1), "tokens_per_s": tokens / seconds if seconds else 0.0}


def _decode_row(case: Case, temperature: float, group: str, names: Sequence[str], totals: dict,
                best: Case | None, results) -> dict:
    mine, plain = totals[case.name], totals["plain"]
    same = None
    if temperature == 0:
        same = sum(results[(temperature, n, case.name)].tokens == results[(temperature, n, "plain")].tokens
                   for n in names)
    return {
        "kind": "decode", "case": case.name, "family": case.family, "budget": case.budget, "lookup": case.lookup,
        "temperature": temperature, "group": group, "prompts": len(names), **mine,
        "over_plain": mine["tokens_per_s"] / plain["tokens_per_s"],
        "over_hf_lookup": mine["tokens_per_s"] / totals[best.name]["tokens_per_s"] if best is not None else None,
        "same_as_plain": same,
        "per_prompt": [{"prompt": n, "tokens": len(results[(temperature, n, case.name)].tokens),
                        "forwards": results[(temperature, n, case.name)].forwards,
                        "seconds": results[(temperature, n, case.name)].seconds} for n in names],
    }


def done_conditions(rows: list[dict]) -> dict:
    """The issue's targets, read off the rows: the best n-gram case on input-grounded prompts at T=0 against plain
    decoding (>= 2x) and HF prompt lookup (>= 1.3x); dynamic tree over chain tokens per forward (>= 1.2x) at each
    budget, temperature and group."""
    decode = [r for r in rows if r["kind"] == "decode"]
    ours_t0 = [r for r in decode if r["family"] in ("chain", "multi", "dynamic") and r["temperature"] == 0
               and r["group"] == GROUNDED]
    out: dict = {}
    if ours_t0:
        best = max(ours_t0, key=lambda r: r["over_plain"])
        out["grounded_T0_best_case"] = best["case"]
        out["grounded_T0_over_plain"] = best["over_plain"]
        out["grounded_T0_over_hf_lookup"] = best["over_hf_lookup"]
        out["grounded_T0_met"] = best["over_plain"] >= 2.0 and (best["over_hf_lookup"] or 0.0) >= 1.3
    ratios = {}
    for r in decode:
        if r["family"] == "dynamic":
            chain = next(c for c in decode if c["family"] == "chain" and c["budget"] == r["budget"]
                         and c["temperature"] == r["temperature"] and c["group"] == r["group"])
            key = f"B={r['budget']} T={r['temperature']:g} {r['group']}"
            ratios[key] = r["tokens_per_forward"] / chain["tokens_per_forward"]
    out["dynamic_over_chain_tokens_per_forward"] = ratios
    out["dynamic_over_chain_met"] = {k: v >= 1.2 for k, v in ratios.items()}
    self_draft = {(r["family"], r["temperature"]): r["tokens_per_forward"] for r in rows if r["kind"] == "self_draft"}
    out["self_draft_dynamic_over_chain_tokens_per_forward"] = {
        f"T={t:g}": self_draft[("dynamic", t)] / self_draft[("chain", t)] for family, t in self_draft if family == "chain"}
    return out


# --- trees with a model draft -----------------------------------------------------------------------------------


def self_draft_rows(lm, prompts: Sequence[Prompt], budget: int, max_new_tokens: int, progress: bool) -> list[dict]:
    """Chain against dynamic tree at equal budget with a real draft distribution: the target's early exit
    (``dc.early_exit(lm, EXIT_LAYERS)``, its full head). Tokens per target forward summed over all prompts, per
    temperature; wall time as measured."""
    layers = min(EXIT_LAYERS, lm.model.config.num_hidden_layers - 1)
    draft = dc.early_exit(lm, layers)
    shapes = {"chain": dc.Chain(budget), "dynamic": dc.DynamicTree(budget=budget, max_depth=budget,
                                                                   top_k=DYNAMIC_TOP_K)}
    rows = []
    jobs = [(t, f) for t in TEMPERATURES for f in shapes]
    for temperature, family in progress_bar(jobs, desc="self-draft", disable=not progress):
        sampler = dc.Greedy() if temperature == 0 else dc.Temperature(temperature)
        spec = dc.Speculative(draft, shapes[family], sampler=sampler)
        run, per_prompt, start = ours(lm, spec), [], time.perf_counter()
        for prompt in prompts:
            tokens, forwards = run(prompt.text(lm.tokenizer), max_new_tokens)
            per_prompt.append({"prompt": prompt.name, "tokens": len(tokens), "forwards": forwards})
        tokens, forwards = sum(p["tokens"] for p in per_prompt), sum(p["forwards"] for p in per_prompt)
        rows.append({"kind": "self_draft", "case": f"self-draft {family} B={budget}", "family": family,
                     "budget": budget, "temperature": temperature, "exit_layers": layers, "tokens": tokens,
                     "forwards": forwards, "tokens_per_forward": tokens / max(forwards, 1),
                     "seconds": time.perf_counter() - start, "per_prompt": per_prompt})
    return rows


# --- acceptance against alpha* ----------------------------------------------------------------------------------


def verifiers() -> dict[str, object]:
    return {"RRS (iid)": RRS(replacement=True), "RRS without replacement": RRS(replacement=False),
            "SpecTr (iid)": SpecTr(), "greedy multi-draft": GreedyMultiDraft(), "top-k": TopKVerifier()}


@torch.no_grad()
def target_logits(lm, texts: Sequence[str], count: int) -> torch.Tensor:
    """The target's next-token logits at ``count`` positions spread evenly over the prompts. [count, V] float32"""
    per_prompt = []
    for text in texts:
        ids = torch.tensor([lm.encode(text)], device=lm.device)
        logits = lm.model(ids).logits[0].float().cpu()  # [L, V]
        per_prompt.append(logits[min(8, logits.shape[0] - 1):])  # not the first few tokens after <bos>
    every = torch.cat(per_prompt)
    pick = torch.linspace(0, every.shape[0] - 1, count).round().long()
    n_text = min(len(lm.tokenizer), lm.vocab_size) if lm.tokenizer is not None else lm.vocab_size
    return every[pick, :n_text]  # LM-head padding rows carry no token


def draft_pair(logits: torch.Tensor, support: int) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """p = softmax(logits), q = softmax(logits + Gumbel noise), both restricted to the ``support`` tokens of
    largest max(p, q) and renormalised (float64). Also the mass dropped."""
    g = torch.Generator().manual_seed(SEED)
    u = torch.rand(logits.shape, generator=g, dtype=torch.float64).clamp(1e-300, 1.0 - 1e-16)
    gumbel = -torch.log(-torch.log(u))
    p = torch.softmax(logits.double(), -1)
    q = torch.softmax(logits.double() + GUMBEL_SCALE * gumbel, -1)
    keep = torch.maximum(p, q).topk(min(support, p.shape[-1]), dim=-1).indices
    p_kept, q_kept = p.gather(1, keep), q.gather(1, keep)
    dropped = {"p_mass_dropped_mean": float(1 - p_kept.sum(-1).mean()),
               "p_mass_dropped_max": float(1 - p_kept.sum(-1).min()),
               "q_mass_dropped_mean": float(1 - q_kept.sum(-1).mean()),
               "q_mass_dropped_max": float(1 - q_kept.sum(-1).min())}
    return p_kept / p_kept.sum(-1, keepdim=True), q_kept / q_kept.sum(-1, keepdim=True), dropped


def acceptance_rows(p: torch.Tensor, q: torch.Tensor, samples: int, progress: bool) -> list[dict]:
    """Each verifier's Monte Carlo acceptance and its draft law's alpha*, per k, averaged over the rows of p, q."""
    optimal: dict[tuple[str, int], torch.Tensor] = {}
    rows = []
    jobs = [(name, v, k) for name, v in verifiers().items() for k in DRAFT_COUNTS]
    for name, verifier, k in progress_bar(jobs, desc="acceptance", disable=not progress):
        law = verifier.draws
        if (law, k) not in optimal:
            optimal[(law, k)] = alpha_star(p, q, k, law)
        alpha = optimal[(law, k)]
        accept = torch.tensor([acceptance_mc(verifier, p[i], q[i], k, samples, seed=i) for i in range(p.shape[0])],
                              dtype=torch.float64)
        rows.append({"kind": "acceptance", "verifier": name, "draft_law": law, "k": k,
                     "acceptance": float(accept.mean()), "alpha_star": float(alpha.mean()),
                     "acceptance_over_alpha_star": float(accept.mean() / alpha.mean()),
                     "worst_gap": float((alpha - accept).max()),
                     "per_distribution": {"acceptance": accept.tolist(), "alpha_star": alpha.tolist()}})
    return rows


# --- the suite ----------------------------------------------------------------------------------------------------


def run(config: BenchConfig) -> Report:
    load_at_start = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
    lm = load_model(config)
    quick = config.quick
    prompts = QUICK_PROMPTS if quick else PROMPTS
    budgets, lookups = (QUICK_BUDGETS, QUICK_HF_LOOKUP) if quick else (BUDGETS, HF_LOOKUP)
    max_new = QUICK_MAX_NEW_TOKENS if quick else MAX_NEW_TOKENS
    repeats = 1 if quick else (config.repeats or REPEATS)
    counter = ForwardCounter(lm.model)
    try:
        table = {t: cases(lm, counter, t, budgets, lookups) for t in TEMPERATURES}
        results = measure(lm, prompts, table, max_new, repeats, not quick, config.progress)
    finally:
        counter.close()
    rows, best_k = decode_rows(prompts, table, results)
    rows += self_draft_rows(lm, prompts, QUICK_SELF_DRAFT_BUDGET if quick else SELF_DRAFT_BUDGET,
                            QUICK_SELF_DRAFT_TOKENS if quick else SELF_DRAFT_TOKENS, config.progress)
    n_dist = QUICK_N_DISTRIBUTIONS if quick else N_DISTRIBUTIONS
    support = QUICK_SUPPORT if quick else SUPPORT
    samples = QUICK_MC_SAMPLES if quick else MC_SAMPLES
    p, q, dropped = draft_pair(target_logits(lm, [pr.text(lm.tokenizer) for pr in prompts], n_dist), support)
    rows += acceptance_rows(p, q, samples, config.progress)
    headers, cells = _table(rows)
    settings = {
        "model": config.model or "default: Gemma 3 270M (decoding.default_model)",
        "load_average_1min_at_start": load_at_start, "device": str(lm.device), "dtype": str(lm.dtype), "torch_threads": torch.get_num_threads(),
        "prompt_format": "chat template" if getattr(lm.tokenizer, "chat_template", None) else
                         "plain text (the tokenizer has no chat template)",
        "prompts": [{"name": pr.name, "group": pr.group, "text": pr.text(lm.tokenizer),
                     "tokens": len(lm.encode(pr.text(lm.tokenizer)))} for pr in prompts],
        "max_new_tokens": max_new, "batch_size": 1, "seed": SEED, "repeats": repeats,
        "temperatures": list(TEMPERATURES), "draft": f"dc.NGramDraft({NGRAM})",
        "trees": {str(b): {k: repr(v) for k, v in tree_shapes(b).items()} for b in budgets},
        "hf_prompt_lookup_num_tokens": list(lookups), "hf_best_lookup": best_k,
        "hf_call": "model.generate(ids, attention_mask, max_new_tokens, eos_token_id, pad_token_id, do_sample=False"
                   " | do_sample=True, temperature=1.0, top_k=0, top_p=1.0 [, prompt_lookup_num_tokens=K]); "
                   "torch.manual_seed(0) before each call",
        "timing": "per repeat, prompt and temperature every case once, order rotated per prompt; one untimed "
                  "warm-up of every case (8 tokens; none with --quick); seconds = median over repeats of one "
                  "generate call",
        "figures": "tokens_per_forward = generated tokens / target forwards after the prefill (HF: forward-hook "
                   "calls - 1); over_plain and over_hf_lookup = ratios of tokens/s summed over the group's prompts "
                   "(at T=0 the texts are identical, so these are wall-time ratios); HF's reference is its best K "
                   "per temperature and group",
        "acceptance": {"distributions": n_dist, "positions": "spread evenly over the prompts' tokens (after the "
                       "first 8)", "p": "the target's next-token distribution at T=1",
                       "q": f"softmax(logits + {GUMBEL_SCALE:g} * standard Gumbel noise), torch.Generator seed {SEED}",
                       "support": f"the {support} tokens of largest max(p, q), p and q renormalised", **dropped,
                       "k": list(DRAFT_COUNTS), "mc_samples_per_distribution": samples,
                       "acceptance": "optimal.acceptance_mc: P(emitted token is a drafted child), Rao-Blackwellised",
                       "alpha_star": "optimal.alpha_star for the verifier's draft law"},
        "self_draft": {"draft": f"dc.early_exit(lm, {EXIT_LAYERS}) (full LM head: a head trimmed by the outputs' "
                                "own tokens would leak them into the draft)",
                       "trees": "dc.Chain(B) and dc.DynamicTree(B, max_depth=B, top_k="
                                f"{DYNAMIC_TOP_K}), B = {QUICK_SELF_DRAFT_BUDGET if quick else SELF_DRAFT_BUDGET}",
                       "max_new_tokens": QUICK_SELF_DRAFT_TOKENS if quick else SELF_DRAFT_TOKENS,
                       "figures": "tokens per target forward summed over every prompt; seconds: all prompts, "
                                  f"one run (the draft runs {EXIT_LAYERS} layers per step: no wall-time win on a CPU)"},
        "done_conditions": done_conditions(rows),
        "texts_T0_plain": {pr.name: lm.decode(results[(0.0, pr.name, "plain")].tokens) for pr in prompts},
    }
    return Report("speculative", DESCRIPTION, settings, rows, headers, cells, plot=partial(_plot, rows))


def _fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def _table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    headers = ["case", "T", "prompts", "tokens/forward", "seconds", "x plain", "x HF PL", "= plain",
               "acceptance", "alpha*", "acc / alpha*"]
    cells = []
    for r in rows:
        if r["kind"] == "decode":
            same = "-" if r["same_as_plain"] is None else f"{r['same_as_plain']}/{r['prompts']}"
            cells.append([r["case"], f"{r['temperature']:g}", r["group"], f"{r['tokens_per_forward']:.2f}",
                          f"{r['seconds']:.1f}", f"{r['over_plain']:.2f}x", _fmt(r["over_hf_lookup"], ".2f") + "x",
                          same, "-", "-", "-"])
        elif r["kind"] == "self_draft":
            cells.append([r["case"], f"{r['temperature']:g}", "all", f"{r['tokens_per_forward']:.2f}",
                          f"{r['seconds']:.1f}", "-", "-", "-", "-", "-", "-"])
        else:
            cells.append([f"{r['verifier']} k={r['k']}", "1", "-", "-", "-", "-", "-", "-",
                          f"{r['acceptance']:.3f}", f"{r['alpha_star']:.3f}", f"{r['acceptance_over_alpha_star']:.3f}"])
    return headers, cells


def _plot(rows: list[dict], figure) -> None:
    axes = figure.subplot_mosaic([["tpf", "acc"], ["speed", "acc"]], width_ratios=[3, 2])
    decode = [r for r in rows if r["kind"] == "decode" and r["family"] != "hf"]
    names = list(dict.fromkeys(r["case"] for r in decode))
    groups = list(dict.fromkeys((r["temperature"], r["group"]) for r in decode))
    width = 0.8 / max(len(groups), 1)
    for key, field_, label in (("tpf", "tokens_per_forward", "tokens / target forward"),
                               ("speed", "over_plain", "tokens/s over plain")):
        ax = axes[key]
        for j, (t, g) in enumerate(groups):
            values = [next((r[field_] for r in decode if r["case"] == n and (r["temperature"], r["group"]) == (t, g)),
                           0.0) for n in names]
            ax.bar([i + (j - (len(groups) - 1) / 2) * width for i in range(len(names))], values, width,
                   label=f"T={t:g} {g}")
        ax.axhline(1.0, color="gray", lw=1, ls=":")
        ax.set_ylabel(label, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_xticks(range(len(names)), names if key == "speed" else [""] * len(names), rotation=60, fontsize=6)
    axes["tpf"].legend(fontsize=6)
    axes["tpf"].set_title("n-gram draft on the default model, batch 1", fontsize=9)
    _plot_acceptance(axes["acc"], [r for r in rows if r["kind"] == "acceptance"])


def _plot_acceptance(ax, rows: list[dict]) -> None:
    names = list(dict.fromkeys(r["verifier"] for r in rows))
    ks = list(dict.fromkeys(r["k"] for r in rows))
    width = 0.8 / max(len(ks), 1)
    for j, k in enumerate(ks):
        xs = [i + (j - (len(ks) - 1) / 2) * width for i in range(len(names))]
        got = [next(r for r in rows if r["verifier"] == n and r["k"] == k) for n in names]
        ax.bar(xs, [r["acceptance"] for r in got], width, label=f"k={k}")
        ax.scatter(xs, [r["alpha_star"] for r in got], marker="_", s=80, color="black", zorder=3,
                   label="alpha*" if j == 0 else None)
    ax.set_xticks(range(len(names)), names, rotation=60, fontsize=6)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("acceptance (bars), alpha* (black)", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.set_title("verifiers vs alpha*: Gemma p, Gumbel-perturbed q", fontsize=9)
    ax.legend(fontsize=6, loc="lower left")
