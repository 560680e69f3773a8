"""Prompt lookup drafting: the draft law ``q`` is the empirical distribution of what followed the current suffix.

Prompt lookup decoding (Saxena 2023, the method behind transformers' ``prompt_lookup_num_tokens``) drafts
without a draft model: the last few tokens of the context usually occurred before (in the prompt, or in text the
model already wrote), and what followed them then is a good guess for what follows now. Transformers takes the
longest n-gram up to ``max_matching_ngram_size`` that matches, and proposes ONE continuation: the tokens after
its first match. :class:`NGramDraft` instead proposes, one token at a time, the distribution of ALL continuations:

    context = history + path; k = the longest suffix length in min(n, len(context)) .. 1 whose suffix occurs
    earlier in context, followed by a token there
    q(x) = #(occurrences of that suffix followed by x) / #(occurrences followed by anything)

so a draft tree can hold several continuations (the children of a node are the distinct followers), and ``q`` is
an honest draft law for lossless verification. When no suffix matches, ``q`` is all -inf (log 0): no proposal,
the tree stops there. Occurrences may overlap the suffix itself (in 1 1 1 the suffix 1 1 occurs at 0, followed by
1) and may lie in the hypothesised path as well as in the history.

Cost: one scan of the context per query, O(len(context) * n) at worst and about len(context) in practice (most
positions mismatch at the first compared token), then a sort of the c occurrences found (O(c log c), nothing of
size V), in a numba kernel. Histories live in one int64 buffer ``[R, capacity]`` that grows by doubling, so a
query reads them in place. The dense ``[B, F, V]`` output is filled once with -inf on the device and the
followers are written into it by one scatter; on a CPU that fill, not the lookup, is most of the time.

Notation: ``p`` is the target, ``q`` the draft; :meth:`NGramDraft.dense` returns ``log q``.

Example:
    >>> import torch
    >>> draft = NGramDraft(n=2)
    >>> state = draft.start([[1, 2, 3, 1, 2, 4, 1, 2]], vocab_size=6, device="cpu")
    >>> paths = torch.tensor([[[-1], [3]]])  # row 0: query 0 is the history itself, query 1 adds token 3
    >>> draft.dense(state, paths, torch.tensor([[0, 1]])).exp()  # (1, 2) was followed by 3 and by 4; (2, 3) by 1
    tensor([[[0.0000, 0.0000, 0.0000, 0.5000, 0.5000, 0.0000],
             [0.0000, 1.0000, 0.0000, 0.0000, 0.0000, 0.0000]]])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from numba import njit

from decoding.samplers.base import check_int
from decoding.samplers.sequence.speculative.drafter import Drafter
from decoding.samplers.sequence.speculative.trees import DraftTree

__all__ = ["NGramDraft", "NGramState", "ngram_chain", "ngram_followers"]


# --- the kernel -------------------------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def ngram_followers(hist, hist_len, paths, lengths, n, max_followers, min_n=1):
    """The followers of the longest matching suffix, for every query (row b, path f).

    Args:
        hist: int64 ``[R, C]``; row b's history is ``hist[b, :hist_len[b]]``.
        hist_len: int64 ``[R]``.
        paths: int64 ``[B, F, D]`` (B <= R); query (b, f)'s context is ``history[b] + paths[b, f, :lengths[b, f]]``.
        lengths: int64 ``[B, F]``, each in 0 .. D.
        n: the longest suffix compared (>= 1).
        min_n: the shortest suffix that counts as a match (1 .. n); a shorter best match proposes nothing.
        max_followers: keep at most this many distinct followers per query; -1 keeps all.

    Returns:
        ``(offsets, tokens, counts, totals)``: query ``i = b * F + f`` has followers
        ``tokens[offsets[i]:offsets[i + 1]]`` with their counts, most frequent first, ties to the most recent
        occurrence; ``totals[i]`` is the sum of the kept counts (0: no suffix matched).
    """
    B, F, D = paths.shape
    Q = B * F
    longest = 0
    capacity = 0
    for b in range(B):
        longest = max(longest, hist_len[b])
        for f in range(F):
            L = hist_len[b] + lengths[b, f]
            longest = max(longest, L)
            capacity += max(L - 1, 0)
    ctx = np.empty(longest, dtype=np.int64)
    match = np.empty(longest, dtype=np.int64)  # match[j]: common suffix length of ctx[:j + 1] and ctx[:L]
    follower = np.empty(longest, dtype=np.int64)  # per occurrence of the suffix: the next token, its position
    position = np.empty(longest, dtype=np.int64)
    seen = np.empty(longest, dtype=np.int64)  # per distinct follower: the token, its count, its latest position
    count = np.empty(longest, dtype=np.int64)
    last = np.empty(longest, dtype=np.int64)
    offsets = np.zeros(Q + 1, dtype=np.int64)
    tokens = np.empty(capacity, dtype=np.int64)
    counts = np.empty(capacity, dtype=np.int64)
    totals = np.zeros(Q, dtype=np.int64)
    out = 0
    for b in range(B):
        H = hist_len[b]
        ctx[:H] = hist[b, :H]
        for f in range(F):
            i = b * F + f
            L = H + lengths[b, f]
            ctx[H:L] = paths[b, f, :L - H]
            # An occurrence ends at j <= L - 2 (it is followed by ctx[j + 1]) and starts at j - k + 1 >= 0.
            kmax = min(n, L - 1)
            best = 0
            for j in range(L - 1):
                m = 0
                while m < kmax and m <= j and ctx[j - m] == ctx[L - 1 - m]:
                    m += 1
                match[j] = m
                if m > best:
                    best = m
            if best >= min_n:
                # The followers of every occurrence, grouped by token (stable: positions ascend in a group).
                n_occ = 0
                for j in range(L - 1):
                    if match[j] == best:
                        follower[n_occ] = ctx[j + 1]
                        position[n_occ] = j
                        n_occ += 1
                by_token = np.argsort(follower[:n_occ], kind="mergesort")
                n_seen = 0
                for s in range(n_occ):
                    t = follower[by_token[s]]
                    if s == 0 or t != follower[by_token[s - 1]]:
                        seen[n_seen] = t
                        count[n_seen] = 0
                        n_seen += 1
                    count[n_seen - 1] += 1
                    last[n_seen - 1] = position[by_token[s]]  # the group's latest occurrence
                # Most frequent first, ties to the most recent occurrence (last < L, so the key is exact).
                keys = np.empty(n_seen, dtype=np.int64)
                for s in range(n_seen):
                    keys[s] = -(count[s] * L + last[s])
                order = np.argsort(keys)
                keep = n_seen if max_followers < 0 else min(n_seen, max_followers)
                total = 0
                for s in range(keep):
                    tokens[out + s] = seen[order[s]]
                    counts[out + s] = count[order[s]]
                    total += count[order[s]]
                totals[i] = total
                out += keep
            offsets[i + 1] = out
    return offsets, tokens[:out], counts[:out], totals


@njit(cache=True, nogil=True)
def ngram_chain(hist, hist_len, depth, n, max_followers, min_n):
    """The draft's argmax path after each history: from the history alone, take the best follower
    (:func:`ngram_followers`' ranking), append it to the context, repeat ``depth`` times or until nothing matches.

    Returns:
        ``(tokens, logq)``: int64 ``[R, depth]`` (-1 after the path ends) and float64 ``[R, depth]``, the log q of
        each chosen token (-inf after the end).
    """
    R = hist.shape[0]
    tokens = np.full((R, depth), -1, dtype=np.int64)
    logq = np.full((R, depth), -np.inf)
    path = np.full((1, 1, max(depth, 1)), -1, dtype=np.int64)
    length = np.zeros((1, 1), dtype=np.int64)
    for r in range(R):
        for d in range(depth):
            length[0, 0] = d
            offsets, found, counts, totals = ngram_followers(hist[r:r + 1], hist_len[r:r + 1], path, length, n,
                                                             max_followers, min_n)
            if totals[0] == 0:
                break
            tokens[r, d] = found[0]
            logq[r, d] = np.log(counts[0] / totals[0])
            path[0, 0, d] = found[0]
    return tokens, logq


# --- the drafter ------------------------------------------------------------------------------------------------


@dataclass
class NGramState:
    """Per-row token histories: row r is ``tokens[r, :lengths[r]]`` (int64; capacity grows by doubling).

    ``extend`` changes it in place; ``select`` returns a new state that shares nothing with this one.
    """

    tokens: np.ndarray  # [R, C] int64
    lengths: np.ndarray  # [R] int64
    vocab_size: int
    device: torch.device

    @property
    def rows(self) -> int:
        return len(self.lengths)

    def history(self, row: int) -> list[int]:
        return self.tokens[row, :self.lengths[row]].tolist()


def _check_tokens(name: str, tokens: np.ndarray, vocab_size: int) -> None:
    if tokens.size and (tokens.min() < 0 or tokens.max() >= vocab_size):
        bad = tokens[(tokens < 0) | (tokens >= vocab_size)][0]
        raise ValueError(f"{name} holds token {int(bad)}, outside the vocabulary 0 .. {vocab_size - 1}")


class NGramDraft(Drafter):
    """Draft the next token from what followed the longest matching suffix (length <= n) of the context.

    ``q(x)`` is the share of the suffix's earlier occurrences followed by ``x`` (see the module docstring);
    all -inf when nothing matches. Followers are ranked most frequent first, ties broken toward the MOST RECENT
    occurrence (the later one in the context wins), and ``max_followers`` keeps the first ones of that ranking
    with ``q`` renormalised over them; :meth:`followers` returns the ranking itself.

    Args:
        n: int >= 1, the longest suffix compared; shorter ones are tried when it does not match.
        max_followers: int >= 1 or None (all): the most distinct followers kept per query.
        min_n: int in 1 .. n, the shortest suffix that counts as a match: when the longest match is shorter,
            nothing is proposed and the tree stops there. Raising it keeps unreliable one-token matches out of
            the target's forward (a CPU pays for every drafted token).

    Example:
        >>> import torch
        >>> draft = NGramDraft(n=3, max_followers=1)
        >>> state = draft.start([[5, 1, 7, 5, 1, 8, 5, 1]], vocab_size=10, device="cpu")
        >>> tokens, logq = draft.followers(state, torch.full((1, 1, 0), -1), torch.zeros(1, 1, dtype=torch.long))
        >>> tokens, logq.exp()  # 7 and 8 tie once each after (5, 1); 8 came later
        (tensor([[[8]]]), tensor([[[1.]]]))
    """

    def __init__(self, n: int = 3, max_followers: int | None = None, min_n: int = 1):
        self.n = check_int("n", n, 1, " (the longest suffix to look up; n=1 matches the last token alone)")
        self.min_n = check_int("min_n", min_n, 1, " (the shortest suffix that counts as a match)")
        if self.min_n > self.n:
            raise ValueError(f"min_n must be <= n={self.n}, got {min_n} (the shortest suffix that counts as a match)")
        if max_followers is not None:
            check_int("max_followers", max_followers, 1, " (or None to keep every follower)")
        self.max_followers = max_followers

    def __repr__(self) -> str:
        return f"NGramDraft(n={self.n}, max_followers={self.max_followers}, min_n={self.min_n})"

    def bind(self, lm) -> NGramDraft:
        """Nothing to take from the model: the vocabulary size comes with :meth:`start`."""
        return self

    # --- state ----------------------------------------------------------------------------------------------

    def start(self, prompts: list[list[int]], vocab_size: int, device) -> NGramState:
        """One history per row, initialised with the row's prompt."""
        check_int("vocab_size", vocab_size, 1)
        lengths = np.array([len(p) for p in prompts], dtype=np.int64)
        capacity = max(16, 2 * int(lengths.max(initial=0)))
        tokens = np.zeros((len(prompts), capacity), dtype=np.int64)
        for r, prompt in enumerate(prompts):
            tokens[r, :len(prompt)] = prompt
        _check_tokens("a prompt", tokens, vocab_size)
        return NGramState(tokens, lengths, vocab_size, torch.device(device))

    def append(self, state: NGramState, rows_tokens: list[list[int]]) -> None:
        """Append each row's newly emitted tokens (in order) to its history, in place."""
        if len(rows_tokens) != state.rows:
            raise ValueError(f"rows_tokens has {len(rows_tokens)} rows, the state {state.rows}")
        new = np.array([len(t) for t in rows_tokens], dtype=np.int64)
        need = int((state.lengths + new).max(initial=0))
        if need > state.tokens.shape[1]:
            grown = np.zeros((state.rows, max(need, 2 * state.tokens.shape[1])), dtype=np.int64)
            grown[:, :state.tokens.shape[1]] = state.tokens
            state.tokens = grown
        for r, toks in enumerate(rows_tokens):
            if len(toks):
                toks = np.asarray(toks, dtype=np.int64)
                _check_tokens(f"rows_tokens[{r}]", toks, state.vocab_size)
                state.tokens[r, state.lengths[r]:state.lengths[r] + len(toks)] = toks
        state.lengths += new

    def select(self, state: NGramState, rows: torch.Tensor) -> NGramState:
        """Keep these rows, in this order (a new state; rows may repeat)."""
        index = rows.cpu().numpy().astype(np.int64)
        return NGramState(state.tokens[index], state.lengths[index], state.vocab_size, state.device)

    # --- drafting -------------------------------------------------------------------------------------------

    def _lookup(self, state: NGramState, paths: torch.Tensor, lengths: torch.Tensor):
        paths_np = np.ascontiguousarray(paths.cpu().numpy(), dtype=np.int64)
        lengths_np = np.ascontiguousarray(lengths.cpu().numpy(), dtype=np.int64)
        B, F, D = paths_np.shape
        if lengths_np.shape != (B, F):
            raise ValueError(f"lengths must have shape {(B, F)} (paths' first two), got {tuple(lengths_np.shape)}")
        if B > state.rows:
            raise ValueError(f"paths has {B} rows, the state only {state.rows}")
        if lengths_np.size and (lengths_np.min() < 0 or lengths_np.max() > D):
            raise ValueError(f"lengths must lie in 0 .. {D} (the paths' depth)")
        _check_tokens("paths (within lengths)", paths_np[np.arange(D) < lengths_np[..., None]], state.vocab_size)
        found = ngram_followers(state.tokens, state.lengths, paths_np, lengths_np, self.n,
                                -1 if self.max_followers is None else self.max_followers, self.min_n)
        return (B, F), found

    def followers(self, state: NGramState, paths: torch.Tensor, lengths: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """The drafted followers of every query, best first: ``tokens[B, F, K]`` int64 (-1 pads) and
        ``logq[B, F, K]`` float32 (-inf pads), on the state's device; K is the most followers of any query.

        Ranked by count, ties toward the most recent occurrence; the same law as :meth:`expand`, kept sparse.
        """
        (B, F), (offsets, tokens, counts, totals) = self._lookup(state, paths, lengths)
        per_query = np.diff(offsets)  # [Q]
        K = int(per_query.max(initial=0))
        query = np.repeat(np.arange(B * F), per_query)
        slot = np.arange(len(tokens)) - offsets[query]
        out_tokens = np.full((B * F, K), -1, dtype=np.int64)
        out_logq = np.full((B * F, K), -np.inf, dtype=np.float32)
        out_tokens[query, slot] = tokens
        out_logq[query, slot] = np.log(counts) - np.log(totals[query])
        return (torch.from_numpy(out_tokens).view(B, F, K).to(state.device),
                torch.from_numpy(out_logq).view(B, F, K).to(state.device))

    def dense(self, state: NGramState, paths: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``log q`` of the next token after every context ``history[b] + paths[b, f, :lengths[b, f]]``.

        Args:
            paths: int64 ``[B, F, D]``, hypothesised continuations of rows 0 .. B-1; -1 pads past ``lengths``.
            lengths: int64 ``[B, F]``, each in 0 .. D (0: the history alone).

        Returns:
            float32 ``[B, F, V]`` on the state's device; a row is all -inf when no suffix matches.
        """
        (B, F), (offsets, tokens, counts, totals) = self._lookup(state, paths, lengths)
        V = state.vocab_size
        query = np.repeat(np.arange(B * F), np.diff(offsets))
        index = torch.from_numpy(query * V + tokens).to(state.device)
        values = torch.from_numpy((np.log(counts) - np.log(totals[query])).astype(np.float32)).to(state.device)
        logq = torch.full((B * F * V,), float("-inf"), dtype=torch.float32, device=state.device)
        logq.index_put_((index,), values)  # one scatter of the sparse followers into the dense table
        return logq.view(B, F, V)

    # --- the Drafter protocol -------------------------------------------------------------------------------

    def expand(self, state: NGramState, tree: DraftTree, nodes: torch.Tensor) -> torch.Tensor:
        """``log q`` after each node of ``tree`` ([B, F] node indices, -1 for none: all -inf)."""
        paths, lengths = tree.paths(nodes)
        return self.dense(state, paths, lengths).masked_fill((nodes < 0)[..., None].to(state.device), float("-inf"))

    def top(self, state: NGramState, tree: DraftTree, nodes: torch.Tensor, k: int
            ) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``k`` best followers after each node, sparse: (log q [B, F, k], tokens [B, F, k], -1 padded),
        ties toward the most recent occurrence. No [B, F, V] table is built."""
        tokens, logq = self.followers(state, *tree.paths(nodes))
        pad = max(k - tokens.shape[2], 0)
        tokens = torch.nn.functional.pad(tokens, (0, pad), value=-1)[..., :k]
        logq = torch.nn.functional.pad(logq, (0, pad), value=float("-inf"))[..., :k]
        none = (nodes < 0)[..., None].to(logq.device)
        return logq.masked_fill(none, float("-inf")), tokens.masked_fill(none, -1)

    def chain(self, state: NGramState, tree: DraftTree, depth: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The best follower after the root, then after it, ``depth`` times, in one kernel call: (log q [B, depth],
        tokens [B, depth], -1 after the path ends); the same tokens as ``depth`` calls of :meth:`top` with k=1."""
        B = tree.batch_size
        tokens, logq = ngram_chain(state.tokens[:B], state.lengths[:B], depth, self.n,
                                   -1 if self.max_followers is None else self.max_followers, self.min_n)
        return (torch.from_numpy(logq).float().to(state.device), torch.from_numpy(tokens).to(state.device))

    def extend(self, state: NGramState, tree: DraftTree, accepted: torch.Tensor, final: torch.Tensor) -> None:
        """Append the round's emitted tokens (the accepted path's, then the target's own) to each history."""
        tokens = torch.cat([tree.tokens.gather(1, accepted.clamp_min(0)), final[:, None]], 1).cpu().numpy()
        count = (accepted >= 0).sum(1).cpu().numpy()
        tokens[np.arange(len(count)), count] = final.cpu().numpy()
        self.append(state, [row[: c + 1] for row, c in zip(tokens.tolist(), count.tolist())])
