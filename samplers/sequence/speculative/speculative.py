"""``dc.Speculative``: lossless speculative decoding with draft trees, on any HF causal LM, batch size >= 1.

Each round, for every live row at once:

1. the drafter grows a tree below the root (the last emitted token) in the shape ``tree`` asks for;
2. ONE target forward scores the root and every node (``KVBatch.tree_step``: a 4D tree mask, per-node positions);
   the LM head runs for the root, and for the other nodes of a row only once the row accepts a first draft token
   (``NodeLogprobs``), so a round rejected at the root pays one head row, not one per node;
3. the verifier walks the tree from the root: at each node it accepts a child or emits a token of its own and
   stops (node verifiers, ``verify.py``), or checks a whole chain at once (block verification);
4. the target keeps the cache entries of the root and the accepted path (``KVBatch.commit``); the emitted token
   is the next root.

Every verifier returns the target's law exactly, so the output has the law of plain decoding with ``sampler``
(Leviathan et al., ICML 2023; Chen et al., 2023; Miao et al., ASPLOS 2024 for trees). ``sampler`` is a chain of
stateless transforms (temperature, top-k/p, min-p, typical, top-H), optionally ending in ``Greedy()``; it is
applied to the target at every node, and to the draft before drafting random children, so the output is exactly
the target's transformed distribution. ``sampler`` may end in ``Masked(constraint)`` (a Regex, a JsonSchema, a
Grammar; ``greedy=True`` for T = 0): the constraint's state then follows every node of the tree, the target's law
and the draft's are masked at every node, and the output has exactly the law of ``Masked`` decoding
(``constrained.py``; ``dc.ConstraintDraft`` drafts what the constraint dictates). Other stateful samplers are
refused: Mirostat's state depends on the whole distribution at each step, AWRS only estimates the allowed mass.

Rows finish on their own (EOS inside an accepted path, stop strings, the token limit) and leave the batch; the
others go on. Each row draws from its own random stream, so a row's output does not depend on its neighbours.

Example:
    >>> spec = dc.Speculative(draft=dc.NGramDraft(3), tree=dc.DynamicTree(budget=16), sampler=dc.Greedy())
    >>> out = dc.generate(lm, prompts, sampler=spec, max_new_tokens=128)        # doctest: +SKIP
    >>> out.stats.new_tokens / out.stats.forwards                                # tokens per target forward  # doctest: +SKIP
"""

from __future__ import annotations

import torch

from decoding.decode import DecodeTask, End, Generation, Rows, SequenceSampler
from decoding.kernels.sampling import inverse_cdf
from decoding.model import LanguageModel, NodeLogprobs
from decoding.samplers.base import TokenSampler
from decoding.samplers.greedy import Greedy
from decoding.samplers.sequence.speculative.block import BlockVerifier
from decoding.samplers.sequence.speculative.constrained import MaskedDraft, TreeStates, draft_law, tree_law
from decoding.samplers.sequence.speculative.drafter import Drafter, ModelDraft
from decoding.samplers.sequence.speculative.greedy_multi_draft import GreedyMultiDraft
from decoding.samplers.sequence.speculative.rrs import RRS, TopKVerifier
from decoding.samplers.sequence.speculative.spectr import SpecTr
from decoding.samplers.sequence.speculative.trees import Chain, DraftTree, MultiDraft, TreeShape
from decoding.samplers.sequence.speculative.verify import NodeVerifier, decide
from decoding.samplers.temperature import Temperature

VERIFIERS = {
    "chain": lambda: RRS(replacement=True),  # speculative sampling: RRS with one child per node
    "rrs": lambda: RRS(replacement=True),
    "rrs_without_replacement": lambda: RRS(replacement=False),
    "topk": TopKVerifier,
    "spectr": SpecTr,
    "greedy": GreedyMultiDraft,
    "block": BlockVerifier,
}
EAGER_HEAD = 0.7  # on CPU, run the LM head for the whole tree at once when more roots than this are accepted
DEFAULT_VERIFIER = {"iid": "rrs", "without_replacement": "rrs_without_replacement", "deterministic": "topk",
                    "greedy": "greedy"}


class Speculative(SequenceSampler):
    """Speculative decoding: a drafter proposes a token tree, the target verifies it in one forward, losslessly.

    Args:
        draft: a ``Drafter`` (``dc.NGramDraft(3)``, ``dc.ModelDraft(lm)``) or a ``LanguageModel`` sharing the
            target's tokenizer (wrapped in ``ModelDraft``).
        tree: a tree shape: ``dc.Chain(k)``, ``dc.MultiDraft(k, depth, draws)``, ``dc.DynamicTree(budget, ...)``.
        verify: a verifier or its name: "chain"/"rrs" (recursive rejection sampling; speculative sampling on a
            chain), "rrs_without_replacement", "topk", "spectr", "greedy" (Hu et al.'s multi-draft verifier),
            "block" (block verification, chains only). Default: the one made for the tree's draft law.
        sampler: stateless token transforms (``dc.Temperature(0.7) | dc.TopP(0.9)``), optionally ending in
            ``dc.Greedy()`` or in ``dc.Masked(constraint)`` (constrained decoding, same law as without
            speculation); default ``dc.Temperature(1.0)``.

    Example:
        >>> spec = dc.Speculative(dc.NGramDraft(3), dc.Chain(8), sampler=dc.Greedy())
    """

    def __init__(self, draft: Drafter | LanguageModel, tree: TreeShape | None = None,
                 verify: NodeVerifier | BlockVerifier | str | None = None, sampler: TokenSampler | None = None):
        self.draft = ModelDraft(draft) if isinstance(draft, LanguageModel) else draft
        if not isinstance(self.draft, Drafter):
            raise TypeError(f"draft: expected a drafter (dc.NGramDraft, dc.ModelDraft) or a dc.LanguageModel, "
                            f"got {type(draft).__name__}")
        self.tree = Chain(4) if tree is None else tree
        if not isinstance(self.tree, TreeShape):
            raise TypeError(f"tree: expected dc.Chain, dc.MultiDraft or dc.DynamicTree, got {type(tree).__name__}")
        self.verify = _verifier(verify, self.tree)
        self.sampler, self.masked = tree_law(Temperature(1.0) if sampler is None else sampler)
        if self.masked is not None and isinstance(self.verify, BlockVerifier):
            raise ValueError("verify: block verification scores a whole chain's residual at once and cannot stop at "
                             "a node where the constraint allows no token; under a constraint use verify='chain' "
                             "(the default for a Chain)")
        needs = getattr(self.draft, "needs_constraint", False)
        if needs and self.masked is None:
            raise ValueError(f"draft: {self.draft!r} drafts what a constraint dictates, but sampler has none; end "
                             "sampler with dc.Masked(constraint)")

    def run(self, lm: LanguageModel, task: DecodeTask) -> list[Generation]:
        drafter = self.draft.bind(lm)
        return _Run(self, drafter, lm, task).generations()

    def __repr__(self) -> str:
        return f"Speculative(draft={self.draft!r}, tree={self.tree!r}, verify={self.verify!r}, sampler={self.sampler!r})"


def _verifier(verify, tree: TreeShape):
    if verify is None:
        verify = DEFAULT_VERIFIER[tree.draws]
    if isinstance(verify, str):
        if verify not in VERIFIERS:
            raise ValueError(f"verify: unknown verifier {verify!r}; choose one of {sorted(VERIFIERS)}")
        verify = VERIFIERS[verify]()
    if isinstance(verify, BlockVerifier):
        if not (isinstance(tree, MultiDraft) and tree.k == 1 and tree.draws == "iid"):
            raise ValueError(f"verify: block verification checks one chain; use tree=dc.Chain(k), not {tree!r}")
        return verify
    if not isinstance(verify, NodeVerifier):
        raise TypeError(f"verify: expected a verifier or its name, got {type(verify).__name__}")
    if verify.draws != tree.draws:
        raise ValueError(f"verify: {verify!r} needs children drawn {verify.draws!r}, but {tree!r} draws them "
                         f"{tree.draws!r}; pass verify={DEFAULT_VERIFIER[tree.draws]!r} or a matching tree")
    return verify


class _Bound:
    """A drafter with its state, as tree shapes see it."""

    def __init__(self, drafter: Drafter, state):
        self.drafter, self.state = drafter, state

    def expand(self, tree: DraftTree, nodes: torch.Tensor) -> torch.Tensor:
        return self.drafter.expand(self.state, tree, nodes)

    def top(self, tree: DraftTree, nodes: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.drafter.top(self.state, tree, nodes, k)

    def chain(self, tree: DraftTree, depth: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        return self.drafter.chain(self.state, tree, depth)


class _Run:
    """One ``generate`` call: the live rows, their outputs so far, the target's cache and the drafter's state."""

    def __init__(self, spec: Speculative, drafter: Drafter, lm: LanguageModel, task: DecodeTask):
        self.spec, self.drafter, self.lm, self.task = spec, drafter, lm, task
        self.batch = lm.start(task.prompts, usage=task.usage)
        device = self.batch.logprobs.device
        self.rows = Rows(lm, task, task.max_new_tokens + spec.tree.capacity + 1, device)
        for name in ("rounds", "draft_tokens", "accepted_tokens"):
            self.rows.count(name, torch.zeros(len(task.prompts), device=device))
        self.state = None  # the drafter's, once the first token is known
        last = spec.sampler.stages[-1]
        self.greedy = isinstance(last, Greedy) or (spec.masked is not None and spec.masked.greedy)
        self.shape = spec.tree.under_greedy() if self.greedy else spec.tree
        self.constraint, self.states = None, None  # under a constraint: its token view, this round's TreeStates
        self.chain = spec.sampler
        if spec.masked is not None:
            self.constraint = spec.sampler.bind(lm).stages[-1].token_constraint
            self.roots = [self.constraint.start()] * len(task.prompts)  # each live row's constraint state
            self.chain = draft_law(spec.sampler, spec.masked)  # applied to laws already restricted to the mask
        self.hit_rate = 0.5  # moving average of the share of rows whose first draft token was accepted

    def law(self, logprobs: torch.Tensor) -> torch.Tensor:
        """The sampler's law of raw log-probs [R, V] (the same transform for target and draft); under a constraint,
        of log-probs already restricted to the allowed tokens (:meth:`restrict`)."""
        return self.chain.law(logprobs, None)

    def restrict(self, raw: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw log-probs [R, V] restricted to ``mask`` and renormalised, and log Z, the allowed mass [R] (-inf: no
        token allowed; such a row is returned as it was and must not be drawn from)."""
        kept = raw.masked_fill(~mask, float("-inf"))
        log_z = kept.logsumexp(-1, keepdim=True)
        return torch.where(torch.isfinite(log_z), kept - log_z, raw), log_z[:, 0]

    def target(self, raw: torch.Tensor, rows: torch.Tensor, nodes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The target's law at node ``nodes[i]`` of row ``rows[i]`` from its raw log-probs ``raw`` [n, V], and the
        allowed mass log Z [n] (0 without a constraint)."""
        if self.states is None:
            return self.law(raw), torch.zeros(len(raw), dtype=raw.dtype, device=raw.device)
        restricted, log_z = self.restrict(raw, self.states.masks_at(rows, nodes))
        return self.law(restricted), log_z

    def generations(self) -> list[Generation]:
        if self.task.max_new_tokens == 0:
            self._retire(torch.full_like(self.rows.live, int(End.LENGTH)))
        else:
            self._first_token()
        while not self.rows.done:
            self._round()
        return self.rows.results()

    def _first_token(self) -> None:
        """The prefill's distribution gives the first token; it becomes the first root."""
        raw = self.batch.logprobs
        law, log_z = raw, torch.zeros(len(raw), dtype=raw.dtype, device=raw.device)
        if self.constraint is not None:
            law, log_z = self.restrict(raw, self.constraint.mask_batch(self.roots).to(raw.device))
        token = inverse_cdf(self.law(law), self.rows.rng.uniform(device=raw.device))
        alive = torch.isfinite(log_z)
        self.rows.add(self.rows.log_weight, log_z.double())
        _, reason = self.rows.emit(token[:, None], alive.long(), raw.gather(1, token[:, None]).double())
        if self.constraint is not None:
            self.roots = self.constraint.advance_batch(self.roots, token.tolist())
        self._retire(torch.where(alive, reason, End.DEAD_END))
        if not self.rows.done:
            roots = self.rows.last_tokens().tolist()
            contexts = [list(self.task.prompts[r]) + [t] for r, t in zip(self.rows.live.tolist(), roots)]
            self.state = self.drafter.start(contexts, self.lm.vocab_size, raw.device)

    def _round(self) -> None:
        spec = self.spec
        tree = DraftTree(self.rows.last_tokens(), self.shape.capacity)
        draft = _Bound(self.drafter, self.state)
        if self.constraint is not None:
            self.states = TreeStates(self.constraint, tree, self.roots, self.lm.vocab_size)
            draft = MaskedDraft(draft, self.drafter, self.states, torch.tensor(self.lm.eos_token_ids))
        self.shape.grow(tree, draft, self.law, self.rows.rng)
        tree.subset(tree.valid)  # padding out: the target sees only real nodes (B = 1: none at all)
        logprobs = self.batch.tree_step(tree.tokens[:, : tree.size], tree.parent[:, : tree.size],
                                        tree.valid[:, : tree.size], lazy_head=True)
        # log Z, the allowed mass, at the node each walk step visits (the weight Masked decoding reports)
        log_z = torch.zeros((tree.batch_size, tree.size + 1), dtype=torch.float64, device=tree.tokens.device)
        if self.greedy:
            path, final = self._walk_greedy(tree, logprobs, log_z)
        elif isinstance(spec.verify, BlockVerifier):
            path, final = self._verify_chain(tree, logprobs.full())
        else:
            path, final = self._walk(tree, logprobs, log_z)
        alive = torch.isfinite(log_z).all(1)  # False: the walk stopped at a node where the constraint allows nothing
        final = torch.where(alive, final, 0)
        root = torch.zeros_like(final)[:, None]
        self.batch.commit(torch.cat([root, path], 1))
        accepted = (path >= 0).sum(1)
        self.hit_rate = 0.8 * self.hit_rate + 0.2 * float((accepted > 0).float().mean())
        self.rows.count("rounds", torch.ones_like(accepted))
        self.rows.count("draft_tokens", tree.valid[:, 1 : tree.size].sum(1))
        self.drafter.extend(self.state, tree, path, final)
        emitted = torch.cat([tree.tokens.gather(1, path.clamp_min(0)), final[:, None]], 1)
        emitted.scatter_(1, accepted[:, None], final[:, None])  # the accepted path, then the target's own token
        at = torch.cat([torch.zeros_like(path[:, :1]), path.clamp_min(0)], 1)  # the node each token follows
        rows = torch.arange(tree.batch_size, device=final.device)
        kept, reason = self.rows.emit(emitted, accepted + alive.long(),
                                      logprobs.at(rows, at).gather(2, emitted[..., None])[..., 0].double())
        self.rows.count("accepted_tokens", torch.minimum(accepted, kept))  # drafts past EOS or the limit are not output
        dead_end = ~alive & (reason == 0)
        steps = torch.arange(log_z.shape[1], device=log_z.device)
        weight = torch.where(steps < kept[:, None], log_z, 0.0).sum(1)  # the tokens output, none past EOS or the limit
        self.rows.add(self.rows.log_weight, torch.where(dead_end, float("-inf"), weight))
        if self.constraint is not None:
            self._next_roots(rows, path, final)
        self._retire(torch.where(dead_end, End.DEAD_END, reason))

    def _next_roots(self, rows: torch.Tensor, path: torch.Tensor, final: torch.Tensor) -> None:
        """Each row's constraint state after the round: its last accepted node's, advanced by the emitted token."""
        depth = (path >= 0).sum(1)
        last = torch.where(depth > 0, path.gather(1, (depth - 1).clamp_min(0)[:, None])[:, 0], 0)
        states = self.states.states(self.states.index_at(rows, last))
        self.roots = self.constraint.advance_batch(states, final.tolist())
        self.states = None

    def _walk(self, tree: DraftTree, logprobs: NodeLogprobs, log_z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Node-by-node verification: the accepted path [B, D] (-1 padded) and the emitted token [B]; the allowed
        mass at the node of step s goes to ``log_z[:, s]`` (a node allowing nothing ends the walk there)."""
        b, device = tree.batch_size, tree.tokens.device
        children = tree.children()
        depth = int(tree.depth[:, : tree.size].max()) + 1
        path = torch.full((b, depth), -1, dtype=torch.long, device=device)
        final = torch.zeros(b, dtype=torch.long, device=device)
        node = torch.zeros(b, dtype=torch.long, device=device)
        active = torch.arange(b, device=device)
        for step in range(depth + 1):  # one level of the tree per pass, every active row at once
            if active.numel() == 0:
                break
            self._read_ahead(logprobs, tree, active, step)
            here = node[active]
            kids = children[active, here]
            kid_tokens = torch.where(kids >= 0, tree.tokens[active[:, None], kids.clamp_min(0)], -1)
            law, z = self.target(logprobs.at(active, here[:, None])[:, 0], active, here)
            p = law.exp()
            q = p if tree.logq is None else tree.logq[active, here].exp()
            u = self.rows.rng.uniform(kids.shape[1] + 1, device=device, rows=active.cpu().numpy())
            choice, token = decide(self.spec.verify.law(p, q, kid_tokens), kid_tokens, u)
            log_z[active, step] = z.double()
            took = (choice >= 0) & torch.isfinite(z)
            nxt = kids.gather(1, choice.clamp_min(0)[:, None])[:, 0]
            if step < depth:
                path[active[took], step] = nxt[took]
            node[active[took]] = nxt[took]
            final[active[~took]] = token[~took]
            active = active[took]
        return path, final

    def _walk_greedy(self, tree: DraftTree, logprobs: NodeLogprobs, log_z: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """``_walk`` when the target's law is a point mass: every verifier accepts the child holding the target's
        token and emits that token otherwise, so the walk compares tokens (one law call per head call; under a
        constraint, one masked argmax per node visited, its allowed mass into ``log_z[:, step]``)."""
        b, n, _ = logprobs.shape
        device = tree.tokens.device
        rows = torch.arange(b, device=device)
        best = torch.full((b, n), -1, dtype=torch.long, device=device)  # the target's token after each node read
        children = tree.children()
        depth = int(tree.depth[:, :n].max()) + 1
        path = torch.full((b, depth), -1, dtype=torch.long, device=device)
        node = torch.zeros(b, dtype=torch.long, device=device)
        going = torch.ones(b, dtype=torch.bool, device=device)
        for step in range(depth):  # one level per pass; rows that stopped keep their node
            if self._read_ahead(logprobs, tree, rows[going], step) and self.constraint is None:
                new = logprobs.computed & (best < 0)
                r, c = new.nonzero(as_tuple=True)
                best[r, c] = self._best(logprobs.at(r, c[:, None]))[:, 0]
            if self.constraint is not None:  # the target's token where each walking row stands
                walking = rows[going]
                going[walking] = self._best_masked(logprobs, best, walking, node[walking], log_z[:, step])
            kids = children[rows, node]
            kid_tokens = tree.tokens[rows[:, None], kids.clamp_min(0)]
            hit = going[:, None] & (kids >= 0) & (kid_tokens == best[rows, node][:, None])
            took = hit.any(1)
            nxt = kids.gather(1, hit.long().argmax(1, keepdim=True))[:, 0]  # the first child holding the token
            path[:, step] = torch.where(took, nxt, -1)
            node = torch.where(took, nxt, node)
            going = took
        return path, best[rows, node]

    def _best_masked(self, logprobs: NodeLogprobs, best: torch.Tensor, rows: torch.Tensor, nodes: torch.Tensor,
                     log_z: torch.Tensor) -> torch.Tensor:
        """Under a constraint, the target's token at node ``nodes[i]`` of row ``rows[i]`` into ``best`` and its
        allowed mass into ``log_z[rows]``; returns whether each node allows a token (bool [n])."""
        if rows.numel() == 0:
            return torch.ones(0, dtype=torch.bool, device=best.device)
        law, z = self.target(logprobs.at(rows, nodes[:, None])[:, 0], rows, nodes)
        best[rows, nodes] = law.argmax(-1)
        log_z[rows] = z.double()
        return torch.isfinite(z)

    def _read_ahead(self, logprobs: NodeLogprobs, tree: DraftTree, rows: torch.Tensor, step: int) -> bool:
        """Before level ``step`` of a walk, run the LM head in one call for the nodes ``rows`` (still walking) may
        read; True if it ran. At step 0 that is the root alone, or the whole tree when :meth:`_eager_head`; at
        step 1, every node left. Each head call reads the whole [V, d] output embedding, so calls, not rows, are
        what it costs on a CPU (Gemma 3 270M, 2 cores: 45 ms for one row, 90 ms for two, 130 ms for sixteen)."""
        if step > 1 or rows.numel() == 0:
            return False
        where = torch.zeros(logprobs.shape[:2], dtype=torch.bool, device=rows.device)
        if step == 1 or self._eager_head():
            where[rows] = tree.valid[rows, : logprobs.shape[1]]
        else:
            where[rows, 0] = True
        logprobs.compute(where)
        return True

    def _eager_head(self) -> bool:
        """Whether to run the head for the whole tree before the walk: a root-only call saves the rest when the
        first draft token is rejected and costs a second call when it is not. Off the CPU a head call over a tree
        costs about one row's, so always; on a CPU when the run's recent rounds accepted the first draft token
        in more than ``EAGER_HEAD`` of rows (0.5 to start: lazy)."""
        return self.batch.logprobs.device.type != "cpu" or self.hit_rate > EAGER_HEAD

    def _best(self, logprobs: torch.Tensor) -> torch.Tensor:
        """The target's token under a Greedy law for raw log-probs [R, K, V]: [R, K]."""
        if len(self.spec.sampler.stages) == 1:  # Greedy() alone: the argmax of the raw log-probs
            return logprobs.argmax(-1)
        r, k, v = logprobs.shape  # transforms first (a typical-set filter may drop the raw argmax)
        return self.law(logprobs.reshape(r * k, v)).argmax(-1).reshape(r, k)

    def _verify_chain(self, tree: DraftTree, raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Block verification of a chain: nodes 0..g in order (padding at the end of short rows)."""
        b, g = tree.batch_size, tree.size - 1
        device = raw.device
        p = self.law(raw.reshape(b * (g + 1), -1)).exp().reshape(b, g + 1, -1)
        q = tree.logq[:, :g].exp() if g else p[:, :0]
        drafts = torch.where(tree.valid[:, 1 : g + 1], tree.tokens[:, 1 : g + 1], -1)
        h, residual = self.spec.verify.law(p, q, drafts)
        tau, token = self.spec.verify.decide(h, residual, self.rows.rng.uniform(g + 2, device=device))
        steps = torch.arange(g + 1, device=device)
        path = torch.where(steps[None, :g] < tau[:, None], steps[None, 1:].expand(b, g), -1)
        return path, token

    def _retire(self, reason: torch.Tensor) -> None:
        live = self.rows.retire(reason)
        if live is not None and not self.rows.done:
            self.batch.reorder(live)
            if self.state is not None:
                self.state = self.drafter.select(self.state, live)
            if self.constraint is not None:
                self.roots = [self.roots[i] for i in live.tolist()]
