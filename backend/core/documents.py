"""Bounded parsing of untrusted YAML and JSON text.

Every document a client, a merchant or a file hands us (request bodies, policy files, dashboard
uploads, `--params` files) is parsed here, so its cost is bounded before any Python object is
built: a 432-byte YAML "billion laughs" expands to 10⁹ values and 1,000 nested brackets blow
the interpreter's stack. Each limit below is checked up front, in time proportional to the text
(aliases are walked once per distinct node, never per use), and a breach raises one error type,
`DocumentError`, whose `code` callers turn into a 400.

Limits (defaults; callers may pass tighter or looser ones):
- `MAX_BYTES` of UTF-8 JSON text, `MAX_YAML_BYTES` of YAML text: PyYAML's scanner is pure
  Python (about 1 s of CPU per MiB of blank lines, and some 15 µs per value), and the only
  YAML we are sent is a policy, a few KB;
- `MAX_DEPTH` nested lists/mappings, counted after alias expansion;
- `MAX_ALIASES` alias uses (`*name`) in one YAML document;
- `MAX_NODES` values in a YAML document, counted while it is composed (so a flat list of a
  million values stops at the limit) and again after alias expansion (each use of an alias
  counts the whole aliased value again). The largest seed policy has 144.
Only plain data tags are accepted (str, int, float, bool, null, list, mapping, the `<<` merge
key); anything else (`!!python/object/apply:…`, `!!binary`, `!!set`, custom tags) is refused,
and dates stay strings as in JSON. Pure Python plus PyYAML: no Flask, no peewee.

Long because it is one guard: the JSON and YAML readers share the limits, the one error type
with its codes, the size check and the storable-string rule, and `load_text` chooses
between them: split apart, each reader would reach into the other's private helpers.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import yaml

MAX_BYTES = 1024 * 1024
MAX_YAML_BYTES = 64 * 1024
MAX_DEPTH = 64
MAX_ALIASES = 1000
MAX_NODES = 5_000

TOO_LARGE = "document_too_large"
TOO_DEEP = "document_too_deep"
TOO_MANY_ALIASES = "too_many_aliases"
UNSAFE_TAG = "unsafe_tag"
INVALID_YAML = "invalid_yaml"
INVALID_JSON = "invalid_json"
DUPLICATE_KEY = "duplicate_key"
UNSTORABLE = "unstorable_string"
# Codes that describe the document's size or shape rather than its content.
LIMIT_CODES = frozenset({TOO_LARGE, TOO_DEEP, TOO_MANY_ALIASES, UNSAFE_TAG})

_YAML = "tag:yaml.org,2002:"
_SAFE_TAGS = frozenset(
    _YAML + t for t in ("str", "int", "float", "bool", "null", "seq", "map", "merge")
)


_BAD_CHAR = re.compile("[\x00\ud800-\udfff]")


class DocumentError(ValueError):
    """A document refused before use; `code` is a stable snake_case reason for the API."""

    def __init__(self, code: str, problem: str, *, line: int | None = None, path: str = ""):
        where = path
        if line is not None:
            where = f"line {line}: {where}" if where else f"line {line}"
        super().__init__(f"{where}: {problem}" if where else problem)
        self.code = code
        self.problem = problem
        self.line = line
        self.path = path


def json_path(parts, root: str = "") -> str:
    """`events[3].ts` style path of a location in parsed data, under an optional root name."""
    out = root
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
            continue
        name = _BAD_CHAR.sub(lambda m: f"\\u{ord(m.group()):04x}", str(p))
        out += f".{name}" if out else name
    return out


# ---------------------------------------------------------------- strings that cannot be stored


def string_problem(text: str) -> str | None:
    """Why a string cannot be stored on every database, or None.

    PostgreSQL text cannot hold U+0000, and a lone UTF-16 surrogate (`"\\ud800"` in JSON, which
    Python keeps as is) is not Unicode at all: no database, log or JSON encoder takes it.
    """
    bad = _BAD_CHAR.search(text)
    if bad is None:
        return None
    if bad.group() == "\x00":
        return "strings must not contain U+0000"
    return f"strings must not contain an unpaired surrogate (U+{ord(bad.group()):04X})"


def unstorable(value: Any, root: str = "") -> str | None:
    """'path: problem' for the first string (key or value) or number that cannot be stored.

    NaN and Infinity are not JSON. Iterative, so any depth the parser allowed is fine. A value
    with nothing wrong in it (nearly all) is cleared by one C-speed `json.dumps`; walking it
    in Python cost a second of CPU for a 2 MiB request body of `[1,1,…]`.
    """
    if _plainly_storable(value):
        return None
    stack: list[tuple[Any, tuple]] = [(value, ())]
    while stack:
        item, parts = stack.pop()
        problem = None
        if isinstance(item, str):
            problem = string_problem(item)
        elif isinstance(item, float) and not math.isfinite(item):
            problem = "NaN and Infinity are not allowed"
        elif isinstance(item, dict):
            for k in item:
                if isinstance(k, str) and string_problem(k):
                    return f"{json_path((*parts, k), root)}: {string_problem(k)} (in the key)"
            stack.extend((v, (*parts, k)) for k, v in reversed(item.items()))
        elif isinstance(item, list | tuple):
            stack.extend((v, (*parts, i)) for i, v in reversed(list(enumerate(item))))
        if problem:
            return f"{json_path(parts, root) or 'body'}: {problem}"
    return None


_SURROGATE = re.compile("[\ud800-\udfff]")


def _plainly_storable(value: Any) -> bool:
    """True when no string or number in `value` can be a problem; False means "walk it".

    `ensure_ascii=False` keeps a lone surrogate as it is and writes U+0000 as `\\u0000`
    (which a string holding that text also gives: a false alarm the walk then clears).
    """
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False, check_circular=False)
    except (TypeError, ValueError, RecursionError):  # NaN, Infinity, a non-JSON type
        return False
    return "\\u0000" not in text and _SURROGATE.search(text) is None


# ---------------------------------------------------------------------------------------- JSON

# A JSON string, or an unterminated one to the end of the text (json.loads refuses that text
# anyway). The closing quote is optional so that a match never fails once it has started: a
# required quote made `"\"\"\"…` with no closing quote rescan the rest of the text from every
# quote, O(n²) (80 KB took 12 s).
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?', re.S)
_BRACKET = re.compile(r"[\[\]{}]")


def _json_depth_ok(text: str, max_depth: int) -> None:
    """Refuse nesting deeper than `max_depth` before json.loads recurses into it."""
    if text.count("[") + text.count("{") <= max_depth:
        return  # cannot nest deeper than it has brackets: the common, cheap case
    depth = 0
    for m in _BRACKET.finditer(_JSON_STRING.sub('""', text)):
        if m.group() in "[{":
            depth += 1
            if depth > max_depth:
                raise DocumentError(TOO_DEEP, f"nested deeper than {max_depth} levels")
        else:
            depth -= 1


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for k, _ in pairs:
            if k in seen:
                raise DocumentError(DUPLICATE_KEY, f"duplicate key {k!r}")
            seen.add(k)
    return out


def _size_ok(text: str | bytes, max_bytes: int) -> None:
    size = len(text) if isinstance(text, bytes) else len(text.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise DocumentError(TOO_LARGE, f"{size} bytes; the limit is {max_bytes}")


def load_json(
    data: str | bytes,
    *,
    max_bytes: int = MAX_BYTES,
    max_depth: int = MAX_DEPTH,
    max_nodes: int | None = None,
    reject_duplicates: bool = False,
    check_strings: bool = True,
) -> Any:
    """The value of a JSON text, within the limits; DocumentError otherwise.

    Bytes may be UTF-8 (with or without BOM), UTF-16 or UTF-32, as json.loads accepts.
    `check_strings=False` leaves unstorable strings to the caller (an event batch rejects the
    one event that has them, not the whole body). `max_nodes` (keys count, as in YAML) is for
    documents whose every value is then checked in Python: json.loads itself is fast, but
    validating 30,000 policy values against the schema is not.
    """
    _size_ok(data, max_bytes)
    if isinstance(data, bytes):
        try:
            text = data.decode(json.detect_encoding(data))
        except UnicodeDecodeError:
            raise DocumentError(INVALID_JSON, "not UTF-8 text") from None
        text = text.removeprefix("\ufeff")
    else:
        text = data
    _json_depth_ok(text, max_depth)
    try:
        value = json.loads(
            text,
            parse_constant=_reject_constant,
            object_pairs_hook=_unique_pairs if reject_duplicates else None,
        )
    except DocumentError:  # a duplicate key, from the pairs hook
        raise
    except RecursionError:  # not reachable after the depth check; kept as a last guard
        raise DocumentError(TOO_DEEP, f"nested deeper than {max_depth} levels") from None
    except json.JSONDecodeError as exc:
        raise DocumentError(INVALID_JSON, f"not valid JSON: {exc}", line=exc.lineno) from None
    except ValueError as exc:  # NaN/Infinity, integers of more than 4,300 digits
        raise DocumentError(INVALID_JSON, f"not valid JSON: {exc}") from None
    if max_nodes is not None:
        _count_values(value, max_nodes)
    if check_strings:
        _raise_unstorable(value)
    return value


def _count_values(value: Any, max_nodes: int) -> None:
    """Refuse parsed JSON of more than `max_nodes` values, counting as the YAML loader does."""
    count = 0
    stack = [value]
    while stack:
        item = stack.pop()
        count += 1
        if isinstance(item, dict):
            count += len(item)  # the keys
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        if count > max_nodes:
            raise DocumentError(TOO_LARGE, f"more than {max_nodes} values")


def _raise_unstorable(value: Any) -> None:
    problem = unstorable(value)
    if problem:
        path, _, why = problem.rpartition(": ")
        raise DocumentError(UNSTORABLE, why, path="" if path == "body" else path)


# ---------------------------------------------------------------------------------------- YAML


class _Loader(yaml.SafeLoader):
    """SafeLoader that counts alias uses, nesting and values while composing.

    The composer recurses once per level, so the depth count must stop it before Python's
    stack does; and the pure-Python scanner, parser and composer cost some 20 µs a value, so
    the value count must stop it at `max_nodes`, not after it has built every node of a
    500,000-element list (10 s of CPU for 1 MiB of `[1,1,…]`).
    """

    max_depth = MAX_DEPTH
    max_aliases = MAX_ALIASES
    max_nodes = MAX_NODES

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._aliases = 0
        self._nodes = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > self.max_aliases:
                line = self.peek_event().start_mark.line + 1
                raise DocumentError(
                    TOO_MANY_ALIASES, f"more than {self.max_aliases} alias uses", line=line
                )
            return super().compose_node(parent, index)
        # Distinct values only: what aliases expand to is counted by _check_graph, from these.
        self._nodes += 1
        if self._nodes > self.max_nodes:
            line = self.peek_event().start_mark.line + 1
            raise DocumentError(TOO_LARGE, f"more than {self.max_nodes} values", line=line)
        nested = self.check_event(yaml.SequenceStartEvent, yaml.MappingStartEvent)
        if nested:
            self._depth += 1
            if self._depth > self.max_depth:
                line = self.peek_event().start_mark.line + 1
                raise DocumentError(
                    TOO_DEEP, f"nested deeper than {self.max_depth} levels", line=line
                )
        try:
            return super().compose_node(parent, index)
        finally:
            if nested:
                self._depth -= 1


# Dates stay strings (as in JSON): a datetime cannot be stored or compared with text.
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != _YAML + "timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _short_tag(tag: str) -> str:
    return "!!" + tag[len(_YAML) :] if tag.startswith(_YAML) else tag


def _children(node: yaml.Node, parts: tuple) -> list[tuple[yaml.Node, tuple]]:
    if isinstance(node, yaml.SequenceNode):
        return [(v, (*parts, i)) for i, v in enumerate(node.value)]
    if isinstance(node, yaml.MappingNode):
        return [
            item for k, v in node.value for item in ((k, (*parts, k.value)), (v, (*parts, k.value)))
        ]
    return []


def _check_node(node: yaml.Node, parts: tuple) -> None:
    """The per-node rules: a safe tag, storable text, plain unique mapping keys."""
    line = node.start_mark.line + 1
    where = json_path(parts)
    if node.tag not in _SAFE_TAGS:
        raise DocumentError(
            UNSAFE_TAG,
            f"tag {_short_tag(node.tag)} is not allowed; only plain data",
            line=line,
            path=where,
        )
    if isinstance(node, yaml.ScalarNode):
        problem = string_problem(node.value)
        if problem:
            raise DocumentError(UNSTORABLE, problem, line=line, path=where)
    elif isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for k, _ in node.value:
            if not isinstance(k, yaml.ScalarNode):
                raise DocumentError(
                    INVALID_YAML,
                    "a mapping key must be a plain value",
                    line=k.start_mark.line + 1,
                    path=where,
                )
            if k.value in seen:
                raise DocumentError(
                    DUPLICATE_KEY,
                    "duplicate key",
                    line=k.start_mark.line + 1,
                    path=json_path((*parts, k.value)),
                )
            seen.add(k.value)


def _check_graph(root: yaml.Node, max_depth: int, max_nodes: int, aliased: bool) -> None:
    """One walk over the composed node graph, each distinct node visited once.

    An alias is the very same Node object used again, so sizes and depths are memoised by
    identity: the expanded size of a billion laughs is computed from its nine nodes. A node
    that contains an alias to itself has no finite expansion and is refused.
    """
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    open_: set[int] = set()
    stack: list[tuple[yaml.Node, tuple, bool]] = [(root, (), False)]
    while stack:
        node, parts, done = stack.pop()
        key = id(node)
        kids = _children(node, parts)
        if done:
            open_.discard(key)
            size[key] = min(1 + sum(size[id(c)] for c, _ in kids), max_nodes + 1)
            nested = not isinstance(node, yaml.ScalarNode)
            depth[key] = nested + max((depth[id(c)] for c, _ in kids), default=0)
            line = node.start_mark.line + 1
            if size[key] > max_nodes:
                raise DocumentError(
                    TOO_MANY_ALIASES if aliased else TOO_LARGE,
                    f"more than {max_nodes} values"
                    + (" once its aliases are expanded" if aliased else ""),
                    line=line,
                    path=json_path(parts),
                )
            if depth[key] > max_depth:
                raise DocumentError(
                    TOO_DEEP,
                    f"nested deeper than {max_depth} levels once its aliases are expanded",
                    line=line,
                    path=json_path(parts),
                )
            continue
        if key in size:
            continue
        if key in open_:
            raise DocumentError(
                TOO_MANY_ALIASES,
                "an alias refers to a value that contains it (infinite expansion)",
                line=node.start_mark.line + 1,
                path=json_path(parts),
            )
        _check_node(node, parts)
        open_.add(key)
        stack.append((node, parts, True))
        stack.extend((c, p, False) for c, p in reversed(kids) if id(c) not in size)


def compose_yaml(
    text: str,
    *,
    max_bytes: int = MAX_YAML_BYTES,
    max_depth: int = MAX_DEPTH,
    max_aliases: int = MAX_ALIASES,
    max_nodes: int = MAX_NODES,
) -> tuple[yaml.Node | None, _Loader]:
    """The checked node graph of a YAML text (None if empty) and the loader that made it."""
    _size_ok(text, max_bytes)
    loader = _Loader(text)
    loader.max_depth, loader.max_aliases, loader.max_nodes = max_depth, max_aliases, max_nodes
    try:
        root = loader.get_single_node()
    except yaml.YAMLError as exc:
        loader.dispose()
        # The context mark is where the unfinished construct began (an unclosed bracket's
        # line), nearer the mistake than where the parser noticed it.
        mark = getattr(exc, "context_mark", None) or getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        line = mark.line + 1 if mark else None
        raise DocumentError(INVALID_YAML, f"not valid YAML: {problem}", line=line) from None
    except DocumentError:
        loader.dispose()
        raise
    if root is not None:
        try:
            _check_graph(root, max_depth, max_nodes, aliased=loader._aliases > 0)
        except DocumentError:
            loader.dispose()
            raise
    return root, loader


def load_yaml(
    text: str,
    *,
    max_bytes: int = MAX_YAML_BYTES,
    max_depth: int = MAX_DEPTH,
    max_aliases: int = MAX_ALIASES,
    max_nodes: int = MAX_NODES,
) -> tuple[Any, yaml.Node | None]:
    """(value, root node) of a YAML text within the limits; the node gives line numbers."""
    root, loader = compose_yaml(
        text,
        max_bytes=max_bytes,
        max_depth=max_depth,
        max_aliases=max_aliases,
        max_nodes=max_nodes,
    )
    try:
        if root is None:
            return None, None
        try:
            return loader.construct_document(root), root
        except (yaml.YAMLError, ValueError, TypeError) as exc:
            # e.g. `!!int abc`, or an integer of more than 4,300 digits
            mark = getattr(exc, "problem_mark", None)
            problem = getattr(exc, "problem", None) or str(exc)
            line = mark.line + 1 if mark else None
            raise DocumentError(INVALID_YAML, f"not valid YAML: {problem}", line=line) from None
    finally:
        loader.dispose()


def looks_like_json(text: str) -> bool:
    """Whether a document that may be either is read as JSON: it opens with `{` or `[`."""
    return text.lstrip()[:1] in ("{", "[")


def load_text(text: str, **limits: int) -> tuple[Any, yaml.Node | None]:
    """A document that may be JSON or YAML, the same way every time it is read.

    JSON text (duplicate keys refused) is read as JSON, since YAML 1.1 reads some JSON
    differently (`1e-05` is a string to it, `"\\ud83d\\ude00"` two lone surrogates); anything
    else, flow-style YAML like `{name: x}` included, is read as YAML. The root node is None for
    JSON. Either is held to the YAML limits (size, values), so its cost does not depend on
    which syntax the sender chose.
    """
    limits = {"max_bytes": MAX_YAML_BYTES, "max_nodes": MAX_NODES, **limits}
    if looks_like_json(text):
        json_limits = {
            k: v for k, v in limits.items() if k in ("max_bytes", "max_depth", "max_nodes")
        }
        try:
            return load_json(text, reject_duplicates=True, **json_limits), None
        except DocumentError as exc:
            if exc.code != INVALID_JSON:
                raise
    return load_yaml(text, **limits)
