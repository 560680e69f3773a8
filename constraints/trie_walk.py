"""The vocabulary trie walked by a lazily built lexer: the loop around :func:`kernels.trie_lexing.walk_subtrees`.

:class:`TrieWalker` runs the kernel for one vocabulary and lexer (its scratch buffers shared per trie), builds the
lexer rows it asks for and resumes the subtrees it had to leave, until every subtree is walked. What comes back is
the tokens that stay inside the lexeme and the boundaries (nodes where a lexeme ends inside a token), grouped by
the lexer state they end in. Regexes and grammars both mask through it.

Example:
    >>> walker = TrieWalker(vocabulary_index(vocabulary).trie, lexer)                  # doctest: +SKIP
    >>> tokens, boundaries = walker.from_root(lexer.start({0}))                         # doctest: +SKIP
"""

from __future__ import annotations

import threading
import weakref

import numpy as np

from decoding.constraints.lexer import Lexer
from decoding.kernels.automata import Trie
from decoding.kernels.trie_lexing import walk_subtrees

__all__ = ["TrieWalker"]


class TrieWalker:
    """Walks subtrees of ``trie`` with ``lexer`` (see the module docstring).

    Args:
        trie: the vocabulary's byte trie (:func:`kernels.automata.build_trie`).
        lexer: the lexer whose rows are built on demand.
    """

    def __init__(self, trie: Trie, lexer: Lexer):
        self.trie, self.lexer = trie, lexer

    @property
    def empty_tokens(self) -> np.ndarray:
        """The tokens without bytes: they leave every lexer state as it is."""
        return self.trie.empty_tokens

    def from_root(self, state: int) -> tuple[np.ndarray, dict[int, np.ndarray]]:
        """Every token's walk from lexer state ``state``."""
        return self.walk(self.trie.root_children, state)

    def walk(self, starts: np.ndarray, state: int) -> tuple[np.ndarray, dict[int, np.ndarray]]:
        """Walk the subtrees at node ids ``starts``, each entered from lexer state ``state``.

        Returns:
            ``(tokens, boundaries)``: int64 ids of the tokens whose bytes stay inside the lexeme, and
            ``{lexer state: node ids}`` where a lexeme in that state ends before the node's byte.
        """
        trie, lexer = self.trie, self.lexer
        marked, (rec_node, rec_state, rec_pending), stack, counts = _scratch(trie)
        tokens, nodes, states = [], [], []
        start_states = np.full(len(starts), state, dtype=np.int32)
        while len(starts):
            walk_subtrees(lexer.table, lexer.accept_any, trie.byte, trie.depth, trie.end, trie.token_offsets,
                          trie.token_ids, starts, start_states, marked, rec_node, rec_state, rec_pending, stack, counts)
            n_rec, n_marked = int(counts[0]), int(counts[1])
            tokens.append(marked[:n_marked].copy())
            pending = rec_pending[:n_rec]
            nodes.append(rec_node[:n_rec][~pending])
            states.append(rec_state[:n_rec][~pending])
            starts, start_states = rec_node[:n_rec][pending], rec_state[:n_rec][pending]
            lexer.build_all(start_states.tolist())
        return (np.concatenate(tokens) if tokens else np.empty(0, np.int64)), _group(nodes, states)


class _Scratch(threading.local):
    """The kernel's buffers, one set per thread, built on first use."""

    buffers: tuple | None = None


# per trie (by id, dropped with the trie), shared by every walker over it: allocating ~10 MB per grammar (262k
# tokens) cost more than the grammar's first mask
_SCRATCH: dict[int, _Scratch] = {}


def _scratch(trie: Trie) -> tuple:
    """This thread's walk buffers for ``trie`` (every walk copies out what it keeps before the next one runs);
    the subtrees of one kernel call are disjoint, so each token is marked at most once."""
    local = _SCRATCH.get(id(trie))
    if local is None:
        local = _SCRATCH[id(trie)] = _Scratch()
        weakref.finalize(trie, _SCRATCH.pop, id(trie), None)
    if local.buffers is None:
        n = trie.n_nodes + 1
        local.buffers = (np.empty(len(trie.token_ids) + 1, dtype=np.int64),
                         (np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int32), np.empty(n, dtype=bool)),
                         np.empty(trie.max_depth + 1, dtype=np.int32), np.zeros(2, dtype=np.int64))
    return local.buffers


def _group(nodes: list[np.ndarray], states: list[np.ndarray]) -> dict[int, np.ndarray]:
    if not nodes:
        return {}
    nodes_all, states_all = np.concatenate(nodes), np.concatenate(states)
    if not len(states_all):
        return {}
    order = np.argsort(states_all, kind="stable")
    keys, first = np.unique(states_all[order], return_index=True)
    return {int(k): part for k, part in zip(keys.tolist(), np.split(nodes_all[order], first[1:]))}
