"""Numba kernels walking token bytes through a lazily built byte automaton, and the vocabulary byte trie.

Automata here are the tables of :class:`~decoding.constraints.lexer.Lexer`: ``table[s, b]`` is the next state,
``-1`` (dead) or ``-2`` (row not built yet). :func:`walk` and :func:`walk_batch` stop where they need a row that
is not built and say so; the caller builds it (in Python: derivatives of regular expressions) and resumes. So
only the rows that the text actually visits are ever built.

Token masks walk the vocabulary once as a byte trie (:func:`build_trie`) whose nodes are numbered in preorder
(depth-first, children in byte order): the subtree of node ``i`` is the contiguous range ``i .. end[i] - 1``, so a
shared prefix is read once and a dead prefix prunes its whole subtree (:mod:`kernels.trie_lexing` walks it).

Each kernel has a slow pure-Python reference (``*_reference``) that the tests compare it with.

Shapes: ``table`` int32 ``[S, 256]``; ``flat`` uint8 (all token bytes concatenated) with ``offsets`` int64
``[V + 1]`` (token ``t`` is ``flat[offsets[t]:offsets[t + 1]]``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from numba import njit

__all__ = [
    "UNBUILT", "Trie", "build_trie", "build_trie_reference", "flatten", "trie_strings", "walk", "walk_batch",
    "walk_batch_reference", "walk_reference",
]

UNBUILT = -2  # as constraints.lexer.UNBUILT: a row not built yet


def flatten(token_bytes: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """All token bytes as one uint8 array and int64 offsets ``[V + 1]``."""
    lengths = np.fromiter((len(b) for b in token_bytes), dtype=np.int64, count=len(token_bytes))
    offsets = np.zeros(len(token_bytes) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat = np.frombuffer(b"".join(token_bytes), dtype=np.uint8).copy()
    return flat, offsets


# --- token walks ------------------------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def walk(table, state, flat, start, stop):
    """Read ``flat[start:stop]`` from ``state``: ``(state, k)``.

    ``k == stop``: all bytes read, ``state`` is where they lead (``-1``: dead). ``k < stop``: the row of ``state``
    is not built; build it and call again from ``(state, k)``.
    """
    for k in range(start, stop):
        nxt = table[state, flat[k]]
        if nxt == UNBUILT:
            return state, k
        if nxt < 0:
            return -1, stop
        state = nxt
    return state, stop


@njit(cache=True, nogil=True)
def walk_batch(table, accepting, special, is_eos, flat, offsets, states, tokens, out, unbuilt):
    """``TokenAutomaton.advance_batch``: ``out[i]`` is the state after ``tokens[i]`` from ``states[i]``.

    EOS keeps an accepting state (the sequence ends there) and kills any other; other special tokens kill. Where
    the walk needs a row that is not built, ``out[i] = -2`` and ``unbuilt[i]`` is the state whose row is missing:
    build it and walk that row again.
    """
    for i in range(states.shape[0]):
        state, token = states[i], tokens[i]
        if state < 0:
            out[i] = -1
        elif is_eos[token]:
            out[i] = state if accepting[state] else -1
        elif special[token]:
            out[i] = -1
        else:
            stop = offsets[token + 1]
            nxt, k = walk(table, state, flat, offsets[token], stop)
            if k < stop:
                out[i] = UNBUILT
                unbuilt[i] = nxt
            else:
                out[i] = nxt
    return out


def walk_reference(table, state: int, data: bytes) -> tuple[int, int]:
    """Slow reference of :func:`walk` over the bytes ``data``: ``(state, bytes read)``, as :func:`walk`."""
    for k, b in enumerate(data):
        nxt = int(table[state][b])
        if nxt == UNBUILT:
            return state, k
        if nxt < 0:
            return -1, len(data)
        state = nxt
    return state, len(data)


def walk_batch_reference(table, accepting, special, is_eos, token_bytes: list[bytes], states, tokens):
    """Slow reference of :func:`walk_batch`: ``(out, unbuilt)`` as lists (``unbuilt`` is None where not stuck)."""
    out, unbuilt = [], []
    for state, token in zip(states, tokens):
        stuck = None
        if state < 0:
            nxt = -1
        elif is_eos[token]:
            nxt = state if accepting[state] else -1
        elif special[token]:
            nxt = -1
        else:
            nxt, k = walk_reference(table, state, token_bytes[token])
            if k < len(token_bytes[token]):
                nxt, stuck = UNBUILT, nxt
        out.append(nxt)
        unbuilt.append(stuck)
    return out, unbuilt


# --- the vocabulary trie ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Trie:
    """A byte trie of token strings, nodes in preorder; node 0 is the root (the empty string).

    Attributes:
        byte: uint8 ``[N]``, the byte on the edge into each node (0 for the root).
        depth: int32 ``[N]``, the length of each node's string.
        end: int32 ``[N]``, one past the last node of each node's subtree.
        token_offsets: int64 ``[N + 1]``; the tokens whose bytes end at node ``i`` are
            ``token_ids[token_offsets[i]:token_offsets[i + 1]]``.
        token_ids: int64, the tokens in the trie, grouped by node.
        max_depth: the longest token.
    """

    byte: np.ndarray
    depth: np.ndarray
    end: np.ndarray
    token_offsets: np.ndarray
    token_ids: np.ndarray
    max_depth: int

    @property
    def n_nodes(self) -> int:
        return len(self.byte)

    @cached_property
    def root_children(self) -> np.ndarray:
        """int64: the nodes one byte deep (where every walk from the root starts); computed once per trie."""
        return np.flatnonzero(self.depth == 1).astype(np.int64)

    @cached_property
    def empty_tokens(self) -> np.ndarray:
        """The tokens at the root: in the trie (not special) but without bytes."""
        return self.token_ids[self.token_offsets[0]:self.token_offsets[1]]


@njit(cache=True, nogil=True)
def _build_trie_kernel(flat, offsets, order):
    """Nodes of the trie of the tokens listed in ``order`` (sorted by bytes), and the node of each of them."""
    capacity = 1
    for k in range(len(order)):
        capacity += offsets[order[k] + 1] - offsets[order[k]]
    byte = np.zeros(capacity, dtype=np.uint8)
    depth = np.zeros(capacity, dtype=np.int32)
    end = np.zeros(capacity, dtype=np.int32)
    node_of = np.zeros(len(order), dtype=np.int64)
    max_len = 0
    for k in range(len(order)):
        max_len = max(max_len, offsets[order[k] + 1] - offsets[order[k]])
    path = np.zeros(max_len + 1, dtype=np.int64)  # path[d]: the node at depth d on the current string
    n = 1
    current = 0  # depth of the previous string
    prev_start = 0
    for k in range(len(order)):
        t = order[k]
        start = offsets[t]
        length = offsets[t + 1] - start
        common = 0
        limit = min(length, current)
        while common < limit and flat[start + common] == flat[prev_start + common]:
            common += 1
        for d in range(common + 1, current + 1):  # leave the previous string's nodes below the common prefix
            end[path[d]] = n
        for d in range(common + 1, length + 1):
            byte[n] = flat[start + d - 1]
            depth[n] = d
            path[d] = n
            n += 1
        current = length
        prev_start = start
        node_of[k] = path[length]
    for d in range(1, current + 1):
        end[path[d]] = n
    end[0] = n
    return byte[:n].copy(), depth[:n].copy(), end[:n].copy(), node_of


def _sorted_order(token_bytes: list[bytes], include: np.ndarray) -> np.ndarray:
    ids = np.flatnonzero(include)
    keys = [token_bytes[i] for i in ids]
    return ids[np.array(sorted(range(len(keys)), key=keys.__getitem__), dtype=np.int64)].astype(np.int64)


def build_trie(token_bytes: list[bytes], include: np.ndarray | None = None,
               flat: np.ndarray | None = None, offsets: np.ndarray | None = None) -> Trie:
    """The preorder byte trie of the tokens with ``include[t]`` True (default: all).

    Sorting the byte strings makes the trie's preorder the sorted order, so one pass over them (numba) creates
    each node when its string first appears below the previous string's common prefix.
    """
    if include is None:
        include = np.ones(len(token_bytes), dtype=bool)
    if flat is None or offsets is None:
        flat, offsets = flatten(token_bytes)
    order = _sorted_order(token_bytes, include)
    byte, depth, end, node_of = _build_trie_kernel(flat, offsets, order)
    # in sorted order the tokens' nodes never decrease: order itself is grouped by node
    token_offsets = np.searchsorted(node_of, np.arange(len(byte) + 1), side="left").astype(np.int64)
    max_depth = int(depth.max()) if len(depth) else 0
    return Trie(byte, depth, end, token_offsets, order, max_depth)


def build_trie_reference(token_bytes: list[bytes], include: np.ndarray | None = None) -> dict[bytes, list[int]]:
    """Slow reference of :func:`build_trie`: every trie node as its string -> the sorted tokens ending there."""
    nodes: dict[bytes, list[int]] = {b"": []}
    for t, data in enumerate(token_bytes):
        if include is not None and not include[t]:
            continue
        for d in range(1, len(data) + 1):
            nodes.setdefault(data[:d], [])
        nodes[data].append(t)
    return nodes


def trie_strings(trie: Trie) -> dict[bytes, list[int]]:
    """The trie read back as ``{node string: sorted token ids}`` (for comparison with the reference)."""
    out: dict[bytes, list[int]] = {}
    path: list[int] = []
    for i in range(trie.n_nodes):
        d = int(trie.depth[i])
        del path[max(d - 1, 0):]
        if d:
            path.append(int(trie.byte[i]))
        ids = trie.token_ids[trie.token_offsets[i]:trie.token_offsets[i + 1]]
        out[bytes(path)] = sorted(int(t) for t in ids)
    return out
