"""Adaptive weighted rejection sampling (AWRS): exact constrained draws that check only the tokens they draw.

B. Lipkin, B. LeBrun, J. Vigly, J. Loula, D. R. MacIver, L. Du, J. Eisner, R. Cotterell, V. Mansinghka,
T. J. O'Donnell, A. K. Lew, T. Vieira, "Fast Controlled Generation from Language Models with Adaptive Weighted
Rejection Sampling", COLM 2025 (arXiv:2504.05410). The "recursive" and "geometric" estimators follow the
reference library, genlm-control.

Locally constrained decoding (:class:`~decoding.samplers.masked.Masked`) checks all V tokens each step. AWRS draws
tokens from the (transformed) distribution p without replacement and checks only the drawn ones; the first one
the constraint accepts is an exact draw from p restricted to the allowed set A and renormalised. A model that
mostly wants allowed tokens therefore costs about one check per token, whatever V is.

The log weight is log p(A) estimated: ``exp(log_weight)`` is unbiased for the allowed mass Z = p(A), and the pair
is properly weighted, ``E[exp(log_weight) 1{x = a}] = p(a)`` for every allowed a. That is the incremental weight
SMC needs to turn the myopic locally constrained draws into samples of the global p(x | x satisfies c).

Estimators (``estimator=``), given the rejected mass R when the first allowed token x is drawn:

- ``"recursive"``: draw one more token y from what is left besides x and check it;
  Z_hat = (1 - R) if y is allowed (or nothing is left), else p(x). One extra check per step.
- ``"geometric"`` (Rao-Blackwellised): emulate sampling *with* replacement until ``max_accepts`` (m) accepts,
  drawing the known-rejected tokens' share as a geometric count instead of drawing them (no check for them, and
  none for re-drawn accepted tokens); Z_hat = (m - 1) / (N - 1) with N the number of emulated draws (Haldane's
  inverse binomial estimator). Cheap when p is peaked: the re-draws are mostly the token already accepted.
- ``"paper"``: the paper's two traces; the second continues without the first's rejections;
  Z_hat = (1 - R_1) / (n_rejected + 1) over both traces.
- ``"auto"`` (default): per row and step, "geometric" when the top token holds at least 2/3 of p (a choice made
  from p alone, so each row's weight stays unbiased), else "recursive" (as genlm-control chooses).

Checks are memoised within a step: re-drawing a token already checked costs nothing. Tokens the constraint can
never allow (``possible_tokens``: for automata, tokens holding a byte no transition reads) are left out of the
draws without a check; their mass counts as rejected, so the estimators stay exact. Where the constraint
says the text is complete and nothing may follow (``only_eos_batch``: automata read it off their tables), the step
is exact without any check: EOS, with Z = p(EOS). Where it forces the next byte (``narrow_batch``: inside a JSON
key or a literal), few tokens are allowed and the model often wants others, so rejection would check many tokens
while the automaton's trie walk for the mask visits only the forced path: such rows draw exactly from the
memoised mask (``narrow_masks=True``, counted as ``masks``, not checks). Both choices depend on the state alone,
never on the draws, so every weight stays unbiased.

Decisions:

- Without replacement by inverse CDF, not Gumbel keys: the Gumbel-top-k order of the tokens has the law of
  successive draws without replacement, so each next token is drawn from the mass not yet removed
  (:class:`~decoding.kernels.sampling.BlockCDF`, one uniform per draw, O(V / 512 + 512) per draw after one
  O(V) pass per step) instead of V Gumbel keys and a sort per row.
- Vectorised: every row of the batch takes part in each round (one draw, one gathered ``advance_batch`` for the
  rows whose candidate is new); a row's uniforms come from its own stream, two per round it is active, so a row
  draws the same alone as in a batch.
- ``max_rejects``: after that many rejections in one step, the row finishes the step exactly with the
  constraint's mask over the tokens left (an exact draw and the exact Z). That keeps the recursive estimator
  unbiased (it decomposes as (1 - R) x the allowed share of what is left), but not the others, so it needs
  ``estimator="recursive"`` (``"auto"`` then means recursive).
- ``logq`` is NaN: the law of the draw is p restricted to A, whose normaliser is only estimated.

Example:
    >>> digits = dc.AWRS(dc.Regex(r"[0-9]{3}-[0-9]{4}"))
    >>> out = dc.generate(lm, "Call 555-", dc.TopP(0.95) | digits, max_new_tokens=8)   # doctest: +SKIP
    >>> out[0].text, out[0].log_weight, out[0].counters["constraint_checks"]            # doctest: +SKIP
"""

from __future__ import annotations

import math

import numpy as np
import torch

from decoding.constraints.base import DEAD, Constraint, TokenConstraint
from decoding.kernels.random import RowStreams
from decoding.kernels.sampling import NEG_INF, BlockCDF, restricted_draw
from decoding.samplers.base import ConstrainedSampler, Draw, check_int

RECURSIVE, GEOMETRIC, PAPER = 0, 1, 2
ESTIMATORS = {"recursive": RECURSIVE, "geometric": GEOMETRIC, "paper": PAPER, "auto": -1}
SEARCH, SECOND, DONE = 0, 1, 2  # a row's phase within a step; SECOND: lookahead / trace 2 / later rounds
PEAKED = 2.0 / 3.0  # "auto": geometric when the top token holds at least this much of p


class AWRS(ConstrainedSampler):
    """Terminal sampler: an exact draw from p restricted to the constraint, with an unbiased weight for p(A).

    Args:
        constraint: a ``Constraint`` (bound to the model's vocabulary when decoding starts) or a
            ``TokenConstraint``; ``dc.Predicate`` works (only drawn tokens are checked).
        estimator: "auto", "recursive", "geometric" or "paper" (see the module docstring).
        max_rejects: None, or a number of rejections per step after which the row finishes exactly by mask
            (needs a constraint with ``mask``, and the recursive estimator).
        max_accepts: m >= 2, the accepts the geometric estimator collects (2 in genlm-control).
        narrow_masks: where the constraint forces the next byte (``narrow_batch``: a JSON key, a literal), draw
            exactly from its mask instead (counted in ``counters["masks"]``, not as checks).

    Example:
        >>> sampler = dc.AWRS(dc.Regex(r"(19|20)[0-9]{2}"), estimator="recursive")
    """

    exact_logq = False  # the law of a draw is p restricted to A, whose normaliser is only estimated

    def __init__(self, constraint: Constraint | TokenConstraint, estimator: str = "auto",
                 max_rejects: int | None = None, max_accepts: int = 2, narrow_masks: bool = True):
        super().__init__(constraint)
        if not isinstance(narrow_masks, bool):
            raise TypeError(f"narrow_masks must be True or False, got {narrow_masks!r}")
        if estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {', '.join(map(repr, ESTIMATORS))}, got {estimator!r}")
        if max_rejects is not None:
            check_int("max_rejects", max_rejects, 1, " (or None)")
            if estimator not in ("recursive", "auto"):
                raise ValueError(f"max_rejects keeps only the recursive estimator unbiased; use "
                                 f"estimator='recursive' (or 'auto'), not {estimator!r}, or max_rejects=None")
        check_int("max_accepts", max_accepts, 2, " (the estimator divides by m - 1)")
        self.estimator, self.narrow_masks = estimator, narrow_masks
        self.max_rejects, self.max_accepts = max_rejects, max_accepts

    def draw(self, logprobs: torch.Tensor, state, rng: RowStreams) -> Draw:
        """One exact constrained token per row, its log weight (log Z_hat; -inf: dead end), its check count, and
        the next constraint states (the checks computed them: ``accept`` need not advance again)."""
        run = _Step(self, logprobs, state, rng)
        run.loop()
        tokens = torch.from_numpy(run.tok.clip(min=0)).to(logprobs.device)
        log_weight = torch.from_numpy(run.logw).to(logprobs.device, torch.float32)
        logq = torch.full_like(log_weight, math.nan)
        counters = {"constraint_checks": torch.from_numpy(run.checks), "masks": torch.from_numpy(run.masks)}
        return Draw(tokens, log_weight, logq, counters, list(run.next_state))

    def accept(self, state, tokens, logprobs):
        return self.token_constraint.advance_batch(state, tokens.tolist())

    def __repr__(self) -> str:
        defaults = (("max_rejects", None), ("max_accepts", 2), ("narrow_masks", True))
        extra = "".join(f", {k}={getattr(self, k)!r}" for k, d in defaults if getattr(self, k) != d)
        return f"AWRS({self.constraint!r}, estimator={self.estimator!r}{extra})"


class _Step:
    """One AWRS step for every row: the rows' rejection loops advance together, one round at a time.

    Per round, each active row draws a candidate (excluding its rejected tokens; in the recursive lookahead, its
    accepted token too), candidates not seen before in this step are checked in one ``advance_batch``, and each
    row's estimator moves on. Host arrays are [B]; the only [B, V] work is the :class:`BlockCDF` built once.
    """

    def __init__(self, sampler: AWRS, logprobs: torch.Tensor, states: list, rng: RowStreams):
        self.tc, self.rng, self.states = sampler.token_constraint, rng, _objects(states)
        self.max_rejects, self.m = sampler.max_rejects, sampler.max_accepts
        b = logprobs.shape[0]
        self.logprobs = logprobs
        self.cdf = BlockCDF(logprobs)
        log_z = logprobs.logsumexp(-1)
        top = (logprobs.amax(-1) - log_z).exp()
        full = self.cdf.block_mass.sum(-1)  # the mass before any token is left out
        possible = self.tc.possible_tokens()
        if possible is not None:  # tokens no state allows: rejected without a check
            self.cdf.restrict(possible.to(logprobs.device))
        host = torch.stack([log_z.double(), top.double(), full]).cpu().numpy()
        self.log_z, self.full = host[0], host[2]
        code = ESTIMATORS[sampler.estimator]
        if code < 0:
            code_rows = np.where(host[1] >= PEAKED, GEOMETRIC, RECURSIVE)
            self.est = code_rows if sampler.max_rejects is None else np.full(b, RECURSIVE)
        else:
            self.est = np.full(b, code)
        self.phase = np.full(b, SEARCH)
        self.tok = np.full(b, -1, dtype=np.int64)
        self.tok_logp = np.zeros(b)  # log p(x), p normalised
        self.kept = np.ones(b)  # 1 - R when x was drawn
        self.n_rej = np.zeros(b)
        self.n_acc = np.zeros(b)
        self.logw = np.zeros(b)
        self.checks = np.zeros(b, dtype=np.int64)
        self.next_state = _objects([DEAD] * b)
        self.seen_tok = np.full((b, 0), -1, dtype=np.int64)  # memo of this step's checks
        self.seen_ok = np.zeros((b, 0), dtype=bool)
        self.masks = np.zeros(b, dtype=np.int64)
        complete = np.nonzero(self.tc.only_eos_batch(states))[0]
        if len(complete):
            self.end_of_text(complete)
        narrow = np.nonzero(self.tc.narrow_batch(states) & (self.phase != DONE))[0] if sampler.narrow_masks else []
        if len(narrow):
            self.by_mask(narrow)

    def end_of_text(self, rows: np.ndarray) -> None:
        """Rows whose text is complete with nothing allowed after it: EOS is the only choice, so the draw among
        the EOS ids and Z = p(EOS) are exact, with no check."""
        device = self.logprobs.device
        eos = torch.tensor(self.tc.vocabulary.eos_token_ids, device=device)
        lp = self.logprobs.index_select(0, torch.from_numpy(rows).to(device)).index_select(1, eos)
        pick, log_mass = restricted_draw(lp, self.rng.uniform(rows=rows, device=device))
        self.exactly(rows, eos[pick], log_mass)
        self.next_state[rows] = self.states[rows]  # EOS keeps the accepting state

    def exactly(self, rows: np.ndarray, tokens: torch.Tensor, log_mass: torch.Tensor) -> None:
        """Finish rows with an exact draw: the token, and the exact allowed mass as the weight (-inf: none)."""
        host = torch.stack([tokens.double(), log_mass.double()]).cpu().numpy()
        self.tok[rows] = host[0].astype(np.int64)
        self.logw[rows] = host[1]
        self.phase[rows] = DONE

    def loop(self) -> None:
        while True:
            rows = np.nonzero(self.phase != DONE)[0]
            if len(rows) == 0:
                return
            self.round(rows)

    def round(self, rows: np.ndarray) -> None:
        u = self.rng.uniform(2, rows=rows).numpy()  # [n, 2]: the draw, the geometric count
        cand, kept, logp = self.candidates(rows, u[:, 0])
        est, phase = self.est[rows], self.phase[rows]
        empty = kept <= 0
        geo = (est == GEOMETRIC) & ~empty
        if geo.any():  # the rejected draws sampling with replacement would have made before this candidate
            rejected = np.clip(1.0 - kept[geo], 0.0, 1.0)
            with np.errstate(divide="ignore"):
                skip = np.floor(np.log(u[geo, 1]) / np.log(rejected))
            self.n_rej[rows[geo]] += np.where(rejected > 0, skip, 0.0)
        ok = self.check(rows, cand, empty)
        for code, update in ((RECURSIVE, self.recursive), (GEOMETRIC, self.geometric), (PAPER, self.paper)):
            sel = est == code
            if sel.any():
                update(rows[sel], cand[sel], kept[sel], logp[sel], ok[sel], empty[sel], phase[sel])

    def candidates(self, rows: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each row's next draw without its rejected tokens (removed from ``cdf`` as they are found) and, in
        the recursive lookahead, its accepted token: token, kept mass (1 - removed), log p(token)."""
        lookahead = (self.est[rows] == RECURSIVE) & (self.phase[rows] == SECOND)
        device = self.logprobs.device
        idx = torch.from_numpy(rows).to(device)
        excluded = torch.from_numpy(np.where(lookahead, self.tok[rows], -1)[:, None]).to(device)
        tokens, total = self.cdf.draw(torch.from_numpy(u).to(device), idx, excluded)
        p = self.cdf.probs[idx, tokens].double()
        host = torch.stack([tokens.double(), total, p]).cpu().numpy()
        with np.errstate(divide="ignore"):
            return host[0].astype(np.int64), host[1] / self.full[rows], np.log(host[2] / self.full[rows])

    def check(self, rows: np.ndarray, cand: np.ndarray, empty: np.ndarray) -> np.ndarray:
        """Whether the constraint allows each candidate: from this step's memo, else one gathered check."""
        hit = (self.seen_tok[rows] == cand[:, None])
        known = hit.any(1)
        ok = (hit & self.seen_ok[rows]).any(1)
        new = ~known & ~empty
        if new.any():
            r = rows[new]
            nxt = _objects(self.tc.advance_batch(self.states[r].tolist(), cand[new].tolist()))
            allowed = ~self.tc.dead_batch(nxt.tolist())
            ok[new] = allowed
            self.checks[r] += 1
            first = allowed & (self.tok[r] < 0)  # the step's first accepted token: its state is the next state
            self.next_state[r[first]] = nxt[first]
            column_tok = np.full(len(self.phase), -1, dtype=np.int64)
            column_tok[r] = cand[new]
            column_ok = np.zeros(len(self.phase), dtype=bool)
            column_ok[r] = allowed
            self.seen_tok = np.concatenate([self.seen_tok, column_tok[:, None]], axis=1)
            self.seen_ok = np.concatenate([self.seen_ok, column_ok[:, None]], axis=1)
            if not allowed.all():  # rejected tokens leave the distribution for the rest of the step
                device = self.logprobs.device
                self.cdf.remove(torch.from_numpy(r[~allowed]).to(device),
                                torch.from_numpy(cand[new][~allowed]).to(device))
        return ok & ~empty

    def accept_first(self, rows, cand, kept, logp) -> None:
        self.tok[rows], self.kept[rows], self.tok_logp[rows] = cand, kept, logp

    def die(self, rows) -> None:
        self.logw[rows], self.phase[rows] = NEG_INF, DONE

    def finish(self, rows, log_z_hat) -> None:
        self.logw[rows] = self.log_z[rows] + log_z_hat
        self.phase[rows] = DONE

    def recursive(self, rows, cand, kept, logp, ok, empty, phase) -> None:
        search, look = phase == SEARCH, phase == SECOND
        self.die(rows[search & empty])
        first = search & ok
        self.accept_first(rows[first], cand[first], kept[first], logp[first])
        self.phase[rows[first]] = SECOND
        rejected = search & ~ok & ~empty
        self.n_rej[rows[rejected]] += 1
        # lookahead: y allowed (or nothing left besides x) -> 1 - R; y rejected -> p(x)
        both = look & (ok | empty)
        self.finish(rows[both], np.log(self.kept[rows[both]]))
        only = look & ~ok & ~empty
        self.finish(rows[only], self.tok_logp[rows[only]])
        if self.max_rejects is not None:
            over = rows[rejected][self.n_rej[rows[rejected]] >= self.max_rejects]
            if len(over):
                self.by_mask(over)

    def by_mask(self, rows: np.ndarray) -> None:
        """Finish rows exactly: draw from p restricted to the constraint's mask; the weight is log p(A)."""
        device = self.logprobs.device
        mask = self.tc.mask_batch(self.states[rows].tolist()).to(device)
        lp = self.logprobs.index_select(0, torch.from_numpy(rows).to(device))
        tokens, log_mass = restricted_draw(lp, self.rng.uniform(rows=rows, device=device), mask)
        self.exactly(rows, tokens, log_mass)
        self.masks[rows] += 1
        live = rows[np.isfinite(self.logw[rows])]
        if len(live):
            self.next_state[live] = _objects(self.tc.advance_batch(self.states[live].tolist(), self.tok[live].tolist()))

    def geometric(self, rows, cand, kept, logp, ok, empty, phase) -> None:
        self.die(rows[empty])
        rejected = ~ok & ~empty
        self.n_rej[rows[rejected]] += 1
        first = ok & (phase == SEARCH)
        self.accept_first(rows[first], cand[first], kept[first], logp[first])
        self.phase[rows[ok]] = SECOND
        self.n_acc[rows[ok]] += 1
        full = rows[ok][self.n_acc[rows[ok]] >= self.m]
        self.finish(full, math.log(self.m - 1) - np.log(self.m + self.n_rej[full] - 1))

    def paper(self, rows, cand, kept, logp, ok, empty, phase) -> None:
        search = phase == SEARCH
        self.die(rows[search & empty])
        rejected = ~ok & ~empty
        self.n_rej[rows[rejected]] += 1
        first = search & ok
        self.accept_first(rows[first], cand[first], kept[first], logp[first])
        self.phase[rows[first]] = SECOND
        second = (phase == SECOND) & (ok | empty)  # trace 2 ends at its first accept
        done = rows[second]
        self.finish(done, np.log(self.kept[done]) - np.log(self.n_rej[done] + 1))


def _objects(values: list) -> np.ndarray:
    """A 1-D object array of ``values`` (numpy would otherwise split bytes or tuples into dimensions)."""
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out
