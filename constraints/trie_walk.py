"""The vocabulary trie walked by a lazily built lexer: the loop around :func:`kernels.trie_lexing.walk_subtrees`.

:class:`TrieWalker` owns the kernel's scratch buffers for one vocabulary and lexer, runs the kernel, builds the
lexer rows it asks for and resumes the subtrees it had to leave, until every subtree is walked. What comes back is
the tokens that stay inside the lexeme and the boundaries (nodes where a lexeme ends inside a token), grouped by
the lexer state they end in. Regexes and grammars both mask through it.

Example:
    >>> walker = TrieWalker(vocabulary_index(vocabulary).trie, lexer)                  # doctest: +SKIP
    >>> tokens, boundaries = walker.from_root(lexer.start({0}))                         # doctest: +SKIP
"""

from __future__ import annotations

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
        n_tokens: the vocabulary size (capacity of the token buffer).
    """

    def __init__(self, trie: Trie, lexer: Lexer, n_tokens: int):
        self.trie, self.lexer = trie, lexer
        self.root_children = np.flatnonzero(trie.depth == 1).astype(np.int64)
        self.empty_tokens = trie.token_ids[trie.token_offsets[0]:trie.token_offsets[1]]  # non-special, no bytes
        n = trie.n_nodes + 1
        self._marked = np.empty(max(n_tokens, 1), dtype=np.int64)
        self._records = (np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int32), np.empty(n, dtype=bool))
        self._stack = np.empty(trie.max_depth + 1, dtype=np.int32)
        self._counts = np.zeros(2, dtype=np.int64)

    def from_root(self, state: int) -> tuple[np.ndarray, dict[int, np.ndarray]]:
        """Every token's walk from lexer state ``state``."""
        return self.walk(self.root_children, state)

    def walk(self, starts: np.ndarray, state: int) -> tuple[np.ndarray, dict[int, np.ndarray]]:
        """Walk the subtrees at node ids ``starts``, each entered from lexer state ``state``.

        Returns:
            ``(tokens, boundaries)``: int64 ids of the tokens whose bytes stay inside the lexeme, and
            ``{lexer state: node ids}`` where a lexeme in that state ends before the node's byte.
        """
        trie, lexer = self.trie, self.lexer
        rec_node, rec_state, rec_pending = self._records
        tokens, nodes, states = [], [], []
        start_states = np.full(len(starts), state, dtype=np.int32)
        while len(starts):
            walk_subtrees(lexer.table, lexer.accept_any, trie.byte, trie.depth, trie.end, trie.token_offsets,
                          trie.token_ids, starts, start_states, self._marked, rec_node, rec_state, rec_pending,
                          self._stack, self._counts)
            n_rec, n_marked = int(self._counts[0]), int(self._counts[1])
            tokens.append(self._marked[:n_marked].copy())
            pending = rec_pending[:n_rec]
            nodes.append(rec_node[:n_rec][~pending])
            states.append(rec_state[:n_rec][~pending])
            starts, start_states = rec_node[:n_rec][pending], rec_state[:n_rec][pending]
            lexer.build_all(start_states.tolist())
        return (np.concatenate(tokens) if tokens else np.empty(0, np.int64)), _group(nodes, states)


def _group(nodes: list[np.ndarray], states: list[np.ndarray]) -> dict[int, np.ndarray]:
    if not nodes:
        return {}
    nodes_all, states_all = np.concatenate(nodes), np.concatenate(states)
    if not len(states_all):
        return {}
    order = np.argsort(states_all, kind="stable")
    keys, first = np.unique(states_all[order], return_index=True)
    return {int(k): part for k, part in zip(keys.tolist(), np.split(nodes_all[order], first[1:]))}
