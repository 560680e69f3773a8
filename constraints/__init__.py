"""Constraints: languages of byte strings, bound to a vocabulary for token-level decoding."""

from decoding.constraints.base import DEAD, Constraint, TokenConstraint
from decoding.constraints.cfg import Cfg, GrammarBuilder, GrammarError
from decoding.constraints.grammar import Grammar, GrammarState, TokenGrammar
from decoding.constraints.json_schema import JsonSchema, UnsupportedSchemaError
from decoding.constraints.predicate import Predicate, PredicateError
from decoding.constraints.regex import Regex, TokenAutomaton

__all__ = [
    "DEAD", "Cfg", "Constraint", "Grammar", "GrammarBuilder", "GrammarError", "GrammarState", "JsonSchema",
    "Predicate", "PredicateError", "Regex", "TokenAutomaton", "TokenConstraint", "TokenGrammar",
    "UnsupportedSchemaError",
]
