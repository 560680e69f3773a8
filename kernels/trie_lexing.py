"""Numba kernel: walk subtrees of the vocabulary byte trie with a lazily built lexer, stopping at lexeme ends.

Grammar masks (:mod:`~decoding.constraints.grammar`) split a token's bytes into the part that stays inside the
current lexeme and the part after it. Inside a lexeme only the lexer matters, so the walk is the regex walk of
:mod:`kernels.automata` over the trie in preorder with one lexer state per depth. Where a byte cannot extend the
lexeme but the lexeme so far matches a terminal, greedy lexing ends it there: the walk records the child node and
the lexer state (a *boundary*) and skips the subtree, whose tokens the parser must judge. Where a lexer row is not
built yet the walk records the node as *pending* and skips it too; the caller builds the rows and walks those
subtrees again. A token whose bytes all stay inside the lexeme is allowed.

Shapes: ``table`` int32 ``[S, 256]`` (-1 dead, -2 unbuilt); ``accept_any`` bool ``[S]``; trie arrays as in
:class:`kernels.automata.Trie`; ``starts`` int64 node ids and ``start_states`` int32 lexer states (the state
*before* the node's byte); allowed tokens are appended to ``marked`` and records to
``rec_node``/``rec_state``/``rec_pending``; ``counts`` receives the two lengths. The subtrees of distinct starts
are disjoint, so ``marked`` never needs more than ``V + 1`` entries (the kernel writes one past the list) and the
records more than the trie's node count.

:func:`lex_tokens` is the batched step of the same lexer over whole tokens (``advance_batch``): rows whose token
stays inside the current lexeme are done in the kernel; only rows that cross a lexeme boundary need the parser.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from decoding.kernels.automata import walk

__all__ = ["lex_tokens", "walk_subtrees", "walk_subtrees_reference"]

_UNBUILT = -2


@njit(cache=True, nogil=True)
def walk_subtrees(table, accept_any, byte, depth, end, token_offsets, token_ids, starts, start_states, marked,
                  rec_node, rec_state, rec_pending, stack, counts):
    """List in ``marked`` the tokens of the given subtrees that end inside the lexeme, and the records."""
    n_rec = 0
    n_marked = 0
    last = token_ids.shape[0] - 1
    for k in range(starts.shape[0]):
        first = starts[k]
        stop = end[first]
        stack[depth[first] - 1] = start_states[k]
        i = first
        while i < stop:
            d = depth[i]
            s = stack[d - 1]
            t = table[s, byte[i]]
            if t == _UNBUILT or (t < 0 and accept_any[s]):
                rec_node[n_rec] = i
                rec_state[n_rec] = s
                rec_pending[n_rec] = t == _UNBUILT
                n_rec += 1
                i = end[i]
                continue
            if t < 0:
                i = end[i]
                continue
            stack[d] = t
            lo = token_offsets[i]
            n = token_offsets[i + 1] - lo
            # without a branch for the usual 0 or 1 token per node (unpredictable, it cost a third of the walk):
            # write an id one past the list and count it only if it is this node's
            marked[n_marked] = token_ids[min(lo, last)]
            n_marked += n
            for j in range(1, n):  # tokens with equal bytes
                marked[n_marked - n + j] = token_ids[lo + j]
            i += 1
    counts[0] = n_rec
    counts[1] = n_marked


def walk_subtrees_reference(table, accept_any, trie_strings: dict[bytes, list[int]], node_strings: list[bytes],
                            starts, start_states, n_tokens: int):
    """Slow reference of :func:`walk_subtrees` on a fully built table: ``(out, records)`` with records as
    ``(node string, lexer state)``; ``node_strings[i]`` is node ``i``'s string."""
    out = np.zeros(n_tokens, dtype=bool)
    records = []
    for first, s0 in zip(starts, start_states):
        prefix = node_strings[first]
        base = len(prefix) - 1
        for string, tokens in trie_strings.items():
            if not string.startswith(prefix):
                continue
            s = s0
            for j, b in enumerate(string[base:]):
                t = int(table[s, b])
                if t < 0:
                    if accept_any[s]:
                        records.append((string[:base + j + 1], s))
                    break
                s = t
            else:
                for token in tokens:
                    out[token] = True
    return out, sorted(set(records))


@njit(cache=True, nogil=True)
def lex_tokens(table, flat, offsets, states, tokens, out, unbuilt):
    """For each row, the lexer state after all of token ``tokens[i]``'s bytes from ``states[i]`` *inside one
    lexeme*: ``out[i] >= 0``. ``out[i] == -1``: some byte cannot extend the lexeme (it is dead there, or a lexeme
    ends inside the token: the parser must take the row). ``out[i] == -2``: the walk needs the row of state
    ``unbuilt[i]``, not built yet (build it and run the row again)."""
    for i in range(states.shape[0]):
        stop = offsets[tokens[i] + 1]
        state, k = walk(table, states[i], flat, offsets[tokens[i]], stop)
        if k < stop:
            out[i] = _UNBUILT
            unbuilt[i] = state
        else:
            out[i] = state
