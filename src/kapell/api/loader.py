"""Load multi-document YAML into resources, reporting every problem with its line.

ruamel.yaml's round-trip loader keeps the line of every key and list item, so a pydantic
error location such as ``('spec', 'scaling', 'minReplicas')`` maps back to the exact line
a person has to edit. Unknown fields get the nearest valid name as a suggestion.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq, TaggedScalar
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.nodes import MappingNode, SequenceNode

from kapell.api.errors import Problem, SpecError
from kapell.api.meta import API_VERSION, DNS1123_LABEL, Resource

Loc = Sequence[str | int]
STR_TAG = "tag:yaml.org,2002:str"
Check = Callable[[Resource], Iterable[tuple[Loc, str]]]
"""A further check of a valid resource: ``(field location, message)`` for each problem found.
Callers use it for what ``api`` cannot know (what is installed, what files exist); the loader
turns each problem into ``FILE:LINE: field: message`` like its own."""


def _kinds() -> dict[str, type[Resource]]:
    from kapell.api import KINDS

    return KINDS


def load_files(paths: Iterable[str | Path], check: Check | None = None) -> list[Resource]:
    """Every resource in the given files, or a ``SpecError`` listing every problem in all
    (including what ``check`` finds in each valid resource)."""
    resources: list[Resource] = []
    problems: list[Problem] = []
    for path in paths:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            problems.append(Problem(str(path), 0, "", f"cannot read: {exc.strerror or exc}"))
            continue
        try:
            resources.extend(load_text(text, str(path), check))
        except SpecError as exc:
            problems.extend(exc.problems)
    if problems:
        raise SpecError(problems)
    return resources


def _collection_key_line(text: str) -> int:
    """The line of the first key that is itself a mapping or a list (1 if none is found)."""
    pending = list(YAML(typ="rt").compose_all(text))
    while pending:
        node = pending.pop()
        if isinstance(node, MappingNode):
            for key, value in node.value:
                if isinstance(key, MappingNode | SequenceNode):
                    return int(key.start_mark.line) + 1
                pending += [key, value]
        elif isinstance(node, SequenceNode):
            pending += node.value
    return 1


def load_text(text: str, filename: str = "<stdin>", check: Check | None = None) -> list[Resource]:
    """Every resource in one YAML text (``---``-separated documents)."""
    try:
        documents = list(YAML(typ="rt").load_all(text))
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        raise SpecError([Problem(filename, line, "", f"invalid YAML: {exc.problem}")]) from None
    except YAMLError as exc:  # e.g. a control character the reader refuses
        position = getattr(exc, "position", 0)
        line = text.count("\n", 0, position) + 1
        reason = getattr(exc, "reason", None) or str(exc).splitlines()[0]
        raise SpecError([Problem(filename, line, "", f"invalid YAML: {reason}")]) from None
    except TypeError:  # a mapping or list as a key (``? {a: 1}``): unhashable when built
        raise SpecError([Problem(
            filename, _collection_key_line(text), "",
            "invalid YAML: a mapping or list used as a key; keys must be plain names",
        )]) from None  # fmt: skip
    resources: list[Resource] = []
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for index, doc in enumerate(documents):
        if doc is None:
            continue
        doc_problems, resource = _load_document(doc, filename, index, text)
        problems.extend(doc_problems)
        if resource is None:
            continue
        line = _line(doc, [])
        if resource.key in seen:
            problems.append(
                Problem(
                    filename,
                    line,
                    "metadata.name",
                    f"{resource.key} is already defined on line {seen[resource.key]}",
                )
            )
        seen[resource.key] = line
        if check is not None:
            problems.extend(
                Problem(filename, _line(doc, loc), _dotted(loc), message)
                for loc, message in check(resource)
            )
        resources.append(resource)
    if problems:
        raise SpecError(problems)
    return resources


def _load_document(
    doc: Any, filename: str, index: int, text: str
) -> tuple[list[Problem], Resource | None]:
    if not isinstance(doc, CommentedMap):
        line = _document_line(text, index)
        return [Problem(filename, line, "", f"document {index + 1} is not a mapping")], None
    tagged = _first_custom_tag(doc, [])
    if tagged is not None:
        loc, tag = tagged
        return [
            Problem(
                filename,
                _line(doc, loc),
                _dotted(loc),
                f"YAML tag {tag!r} is not supported; remove it and write the plain value",
            )
        ], None
    kinds = _kinds()
    if doc.get("apiVersion") != API_VERSION:
        found = doc.get("apiVersion")
        msg = f"expected '{API_VERSION}'" + (f", got {found!r}" if found is not None else "")
        return [Problem(filename, _line(doc, ["apiVersion"]), "apiVersion", msg)], None
    kind = doc.get("kind")
    if not isinstance(kind, str) or kind not in kinds:
        msg = f"unknown kind {kind!r}; expected one of {', '.join(kinds)}"
        close = difflib.get_close_matches(str(kind), list(kinds), n=1)
        if close:
            msg += f" (did you mean {close[0]!r}?)"
        return [Problem(filename, _line(doc, ["kind"]), "kind", msg)], None
    model = kinds[kind]
    if "status" in doc:
        return [
            Problem(
                filename,
                _line(doc, ["status"]),
                "status",
                "status is written by kapell; remove it from the spec",
            )
        ], None
    try:
        return [], model.model_validate(_plain(doc))
    except ValidationError as exc:
        return [_problem(doc, model, err, filename) for err in exc.errors()], None


def _document_line(text: str, index: int) -> int:
    """1-based first line of document ``index`` (only scalars and sequences lack ``lc``)."""
    for position, node in enumerate(YAML(typ="rt").compose_all(text)):
        if position == index and node is not None:
            return int(node.start_mark.line) + 1
    return 1


def _tag_of(node: Any) -> str | None:
    tag = getattr(node, "tag", None)
    value = getattr(tag, "value", None)
    return value if isinstance(value, str) else None


def _first_custom_tag(node: Any, loc: list[str | int]) -> tuple[list[str | int], str] | None:
    """Where the first explicit YAML tag other than ``!!str`` is, and the tag.

    The round-trip loader keeps ``!custom`` nodes as tagged objects that are neither plain
    scalars nor what a spec means; refusing them beats passing an object pydantic never expects.
    """
    tag = _tag_of(node)
    if tag is not None and not (isinstance(node, TaggedScalar) and tag == STR_TAG):
        return loc, tag
    children: Iterable[tuple[str | int, Any]] = ()
    if isinstance(node, dict):
        children = ((str(k), v) for k, v in node.items())
    elif isinstance(node, list):
        children = enumerate(node)
    for part, child in children:
        found = _first_custom_tag(child, [*loc, part])
        if found is not None:
            return found
    return None


def _plain(node: Any) -> Any:
    """ruamel's commented containers as plain dicts and lists (``!!str`` values as str)."""
    if isinstance(node, dict):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    if isinstance(node, TaggedScalar):
        return str(node.value)
    return node


def _dotted(loc: Loc) -> str:
    return ".".join(f"[{p}]" if isinstance(p, int) else p for p in loc).replace(".[", "[")


def _problem(doc: CommentedMap, model: type[BaseModel], err: Any, filename: str) -> Problem:
    loc = _data_loc(doc, err["loc"])
    path = _dotted(loc)
    msg = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        known = _field_names(model, loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
        msg = "unknown field" + (f"; did you mean {close[0]!r}?" if close else "")
        if not close and known:
            msg += f"; expected one of: {', '.join(sorted(known))}"
    elif err["type"] == "missing":
        msg = "required field is missing"
    elif err["type"] == "string_pattern_mismatch" and err["ctx"]["pattern"] == DNS1123_LABEL:
        msg = (
            f"invalid name {err['input']!r}: use lower-case letters, digits and '-', "
            "starting and ending with a letter or digit (DNS-1123)"
        )
    elif err["type"] == "literal_error":
        msg = f"invalid value {err['input']!r}; {msg[0].lower()}{msg[1:]}"
    return Problem(filename, _line(doc, loc), path, msg)


def _data_loc(doc: Any, loc: Loc) -> list[str | int]:
    """The parts of a pydantic location that name real keys (drops union-member tags)."""
    out: list[str | int] = []
    node: Any = doc
    for part in loc:
        if (isinstance(node, dict) and part in node) or (
            isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        ):
            out.append(part)
            node = node[part]  # type: ignore[index]
        elif isinstance(node, dict) and isinstance(part, str) and "[" not in part:
            out.append(part)  # a missing key: name it, then stop
            break
    return out


def _line(doc: Any, loc: Loc) -> int:
    """1-based line of the deepest part of ``loc`` present in the document."""
    line: int = doc.lc.line + 1
    node = doc
    for part in loc:
        if isinstance(node, CommentedMap) and part in node:
            line = int(node.lc.key(part)[0]) + 1
            node = node[part]
        elif isinstance(node, CommentedSeq) and isinstance(part, int) and part < len(node):
            line = int(node.lc.item(part)[0]) + 1
            node = node[part]
        else:
            break
    return line


def _field_names(model: type[BaseModel], loc: Loc) -> list[str]:
    """The wire names of the fields valid at ``loc`` inside ``model``."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        field = next((f for n, f in current.model_fields.items() if (f.alias or n) == part), None)
        if field is None:
            return []
        current = _model_in(field.annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [f.alias or n for n, f in current.model_fields.items()]
    return []


def _model_in(annotation: Any) -> Any:
    """The pydantic model inside ``X | None``, ``list[X]`` or ``dict[str, X]``, if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, list, dict, typing.Annotated):
        for arg in typing.get_args(annotation):
            found = _model_in(arg)
            if found is not None:
                return found
    return None
