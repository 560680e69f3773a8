"""``$ref`` resolution in a JSON Schema document: base URIs set by ``$id`` (``id`` in draft 4), anchors, pointers.

:func:`local_refs` copies the document and rewrites every ``$ref`` that resolves inside it as a JSON pointer from
the document root (``#/$defs/a``), so a translator can follow references, and merge subschemas of different
resources, without tracking base URIs. A ``$ref`` that leaves the document or names a missing anchor is kept as
written.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, unquote, urldefrag, urljoin

__all__ = ["local_refs"]

# Base URI of a root without $id (its retrieval URI is unknown); a URL so that relative references join onto it.
_ROOT_URI = "https://root.invalid/schema.json"
_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas", "dependencies")
_DATA = ("enum", "const", "default", "examples")  # JSON values, not schemas: an "$id" inside is data
_LEGACY = ("draft-03", "draft-04", "draft-06", "draft-07")  # $ref ignores its siblings, $id included


def local_refs(root: dict) -> dict:
    """A copy of ``root`` whose in-document ``$ref`` values are ``"#" + pointer from the root``; ``root`` itself
    when it holds no ``$ref`` (nothing to rewrite: most schemas, so no copy and no walk)."""
    if not _has_ref(root):
        return root
    doc = _copy(root)
    index = _Index(doc)
    for node, base in index.refs:
        node["$ref"] = index.resolve(node["$ref"], base)
    return doc


def _has_ref(value: Any) -> bool:
    """Whether some object inside ``value`` has a ``$ref`` key (data included: a superset is enough here)."""
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if "$ref" in node:
                return True
            stack += node.values()
        elif isinstance(node, list):
            stack += node
    return False


def _copy(value: Any) -> Any:
    """A copy that shares no dict or list (one subschema object used twice may sit under two base URIs)."""
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _join(base: str, ref: str) -> str:
    if not ref or ref.startswith("#"):  # also for bases that urljoin does not join onto (urn:, tag:)
        return urldefrag(base)[0] + ref
    return urljoin(base, ref)


def _esc(key: Any) -> str:
    return str(key).replace("~", "~0").replace("/", "~1")


class _Index:
    """Every resource (``$id``) and anchor of a document by absolute URI, and every ``$ref`` with its base URI."""

    def __init__(self, root: dict):
        dialect = root.get("$schema") if isinstance(root.get("$schema"), str) else ""
        self.id_key = "id" if any(d in dialect for d in _LEGACY[:2]) else "$id"
        self.legacy = any(d in dialect for d in _LEGACY)
        self.resources: dict[str, str] = {_ROOT_URI: ""}  # absolute URI -> pointer
        self.anchors: dict[tuple[str, str], str] = {}  # (resource URI, name) -> pointer
        self.refs: list[tuple[dict, str]] = []  # (schema holding a $ref, its base URI)
        self.walk(root, "", _ROOT_URI)

    def walk(self, node: Any, ptr: str, base: str) -> None:
        if isinstance(node, list):
            for i, item in enumerate(node):
                self.walk(item, f"{ptr}/{i}", base)
            return
        if not isinstance(node, dict):
            return
        base = self.enter(node, ptr, base)
        if isinstance(node.get("$ref"), str):
            self.refs.append((node, base))
        for key, value in node.items():
            if key in _DATA:
                continue
            if key in _SCHEMA_MAPS and isinstance(value, dict):  # names -> schemas; the names are not keywords
                for name, sub in value.items():
                    self.walk(sub, f"{ptr}/{_esc(key)}/{_esc(name)}", base)
            else:  # a subschema, a list of them, or an unknown keyword (a $ref may point into it)
                self.walk(value, f"{ptr}/{_esc(key)}", base)

    def enter(self, node: dict, ptr: str, base: str) -> str:
        """Register the resource and anchors ``node`` declares; its base URI."""
        ident = node.get(self.id_key)
        if isinstance(ident, str) and not (self.legacy and "$ref" in node):
            uri, fragment = urldefrag(_join(base, ident))
            if not ident.startswith("#"):
                base = uri
                self.resources.setdefault(uri, ptr)
            if fragment:  # draft 6/7 plain-name fragment: "$id": "#name"
                self.anchors.setdefault((uri, fragment), ptr)
        for key in ("$anchor", "$dynamicAnchor"):
            if isinstance(node.get(key), str):
                self.anchors.setdefault((base, node[key]), ptr)
        return base

    def resolve(self, ref: str, base: str) -> str:
        """``"#" + pointer`` of the target, or ``ref`` unchanged when the document does not hold it."""
        uri, fragment = urldefrag(_join(base, ref))
        where = self.resources.get(uri)
        fragment = unquote(fragment)
        if where is not None and fragment and not fragment.startswith("/"):
            where = self.anchors.get((uri, fragment))
        elif where is not None:
            where += fragment
        return ref if where is None else "#" + quote(where, safe="/~$!&'()*+,;=:@")
