"""Constitution files: the schema, loading with line-numbered errors, and safe editing.

A constitution is hand-written YAML, so every problem must come back as one
line naming the file, the line and the field. Edits go through ruamel's
round-trip mode so comments and key order survive, are validated with the
same models before anything is written, and are written atomically.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
from io import StringIO
from pathlib import Path
from typing import Annotated, Any, Callable, Literal, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator
from pydantic_core import PydanticCustomError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import CommentMark, YAMLError
from ruamel.yaml.tokens import CommentToken

from cai.errors import CaiError, located
from cai.io import plain, write_atomic

PathLike = Union[str, "os.PathLike[str]"]
Loc = tuple  # a path into the document, e.g. ("principles", 3, "weight")

# ---------------------------------------------------------------- schema

_SLUG = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")


def _nonblank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def _slug(value: str) -> str:
    if not _SLUG.match(value):
        raise ValueError(f"{value!r} is not a slug: use lowercase letters, digits and single hyphens, "
                         "e.g. 'harm-general'")
    return value


NonBlank = Annotated[str, AfterValidator(_nonblank)]
Slug = Annotated[str, AfterValidator(_slug)]


class _Strict(BaseModel):
    """Unknown keys are errors: a typo like `critque:` must not be silently ignored."""

    model_config = ConfigDict(extra="forbid")


class Message(_Strict):
    role: Literal["user", "assistant", "system"]
    content: NonBlank


def _check_dialogue(turns: list[Message]) -> list[Message]:
    """Few-shot dialogues replay user/assistant exchanges, so roles must alternate from a user turn."""
    for i, turn in enumerate(turns):
        want = "user" if i % 2 == 0 else "assistant"
        if turn.role != want:
            raise PydanticCustomError(
                "dialogue_turn",
                "expected '{want}' (turns alternate user, assistant, starting with user), got '{got}'",
                {"want": want, "got": turn.role, "at": (i, "role")},
            )
    if len(turns) < 2 or len(turns) % 2:
        raise PydanticCustomError(
            "dialogue_length",
            "a dialogue needs user/assistant pairs (even length, at least 2), got {n} turn(s)",
            {"n": len(turns)},
        )
    return turns


Dialogue = Annotated[list[Message], AfterValidator(_check_dialogue)]


class Principle(_Strict):
    id: Slug
    critique: NonBlank
    revision: NonBlank
    tags: list[str] = []
    weight: float = Field(1.0, gt=0, allow_inf_nan=False)
    enabled: bool = True


class Sampling(_Strict):
    rounds: int = Field(2, ge=1)
    strategy: Literal["uniform", "weighted"] = "uniform"
    no_repeat: bool = True


class Constitution(_Strict):
    name: NonBlank
    version: int = Field(1, ge=1)
    description: str = ""
    sampling: Sampling = Sampling()
    principles: list[Principle] = Field(min_length=1)
    few_shot: list[Dialogue] = []
    _source: str | None = PrivateAttr(None)  # the file it was loaded from, for error messages

    @property
    def source(self) -> str | None:
        return self._source

    @model_validator(mode="after")
    def _principle_rules(self) -> "Constitution":
        problems = _rule_problems([p.model_dump() for p in self.principles])
        if problems:
            raise PydanticCustomError(
                "constitution_rules", "{summary}", {"summary": "; ".join(m for _, m in problems), "problems": problems}
            )
        return self


def _rule_problems(items: list) -> list[tuple[Loc, str]]:
    """Cross-principle rules; works on raw YAML too so they are reported alongside field errors."""
    problems: list[tuple[Loc, str]] = []
    first: dict[str, int] = {}
    for i, item in enumerate(items):
        pid = item.get("id") if isinstance(item, dict) else None
        if not isinstance(pid, str):
            continue
        if pid in first:
            problems.append((("principles", i, "id"),
                             f"duplicate id '{pid}', already used by principles[{first[pid]}]"))
        else:
            first[pid] = i
    if items and all(isinstance(p, dict) and p.get("enabled", True) is False for p in items):
        problems.append((("principles",), "no principle is enabled; enable at least one"))
    return problems


_FIELDS = sorted({f for m in (Message, Principle, Sampling, Constitution) for f in m.model_fields})


def enabled_principles(c: Constitution) -> list[Principle]:
    return [p for p in c.principles if p.enabled]


def get_principle(c: Constitution, pid: str, path: PathLike | None = None) -> Principle:
    """The principle with this id; a one-line error naming the file (when given) otherwise."""
    for p in c.principles:
        if p.id == pid:
            return p
    raise _unknown_id(path or c.source or f"constitution {c.name!r}", pid, [p.id for p in c.principles])


def _unknown_id(path: PathLike, pid: str, known: list[str]) -> CaiError:
    guess = difflib.get_close_matches(pid, known, 1)
    hint = f" (did you mean '{guess[0]}'?)" if guess else f" (known: {', '.join(known)})"
    return located(path, "", f"no principle with id '{pid}'{hint}")


def constitution_hash(source: Constitution | PathLike) -> str:
    """sha256 hex of the model's canonical JSON: comments and formatting do not change it, content does."""
    c = source if isinstance(source, Constitution) else load_constitution(source)
    blob = json.dumps(c.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


# ---------------------------------------------------------------- loading


def load_constitution(path: PathLike) -> Constitution:
    """Read and validate a constitution; every problem becomes one line of a CaiError."""
    doc, _ = _parse(Path(path), path)
    return _validate(doc, path)


def _yaml(text: str = "") -> YAML:
    """A round-trip YAML that writes back with the file's own list indentation."""
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = 4096  # never re-wrap long critique texts
    dash = re.search(r"^( *)- ", text, re.MULTILINE)
    offset = len(dash.group(1)) if dash else 0
    yaml.indent(mapping=2, sequence=offset + 2, offset=offset)
    return yaml


def _parse(path: Path, shown: PathLike) -> tuple[CommentedMap, str]:
    """File -> round-trip document, or a one-line error (missing, binary, bad YAML, not a mapping)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise located(shown, "", "file not found") from None
    except IsADirectoryError:
        raise located(shown, "", "is a directory, expected a YAML file") from None
    except OSError as err:
        raise located(shown, "", f"cannot read: {err.strerror}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise located(shown, "",
                      f"not a UTF-8 text file (byte 0x{raw[err.start]:02x} at offset {err.start}); binary?") from None
    if "\x00" in text:
        raise located(shown, "", "contains NUL bytes; is it a binary file?")
    doc = _parse_text(text, shown)
    return doc, text


def _parse_text(text: str, shown: PathLike) -> CommentedMap:
    try:
        doc = _yaml(text).load(text)
    except YAMLError as err:
        raise _yaml_error(err, shown) from None
    if doc is None:
        raise located(shown, "", "file is empty; expected a mapping with name:, principles:, ...")
    if not isinstance(doc, CommentedMap):
        kind = "list" if isinstance(doc, list) else type(doc).__name__
        raise located(shown, "line 1", f"top level must be a mapping (name:, principles:, ...), got a {kind}")
    return doc


def _yaml_error(err: YAMLError, shown: PathLike) -> CaiError:
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    problem = " ".join(str(getattr(err, "problem", None) or err).split())
    if "\\t" in problem or "\t" in problem:
        problem += " (tabs are not allowed in YAML indentation; use spaces)"
    elif "duplicate key" not in problem:
        problem += " (check the indentation and quoting)"
    return located(shown, f"line {mark.line + 1}" if mark else "", f"invalid YAML: {problem}")


def _validate(doc: CommentedMap, shown: PathLike, note: str = "") -> Constitution:
    """Validate with the pydantic models; report every problem with its line and field."""
    try:
        c = Constitution.model_validate(plain(doc))
        c._source = str(shown)
        return c
    except ValidationError as err:
        problems = _problems(err, doc)
    located_lines = [(_where(doc, loc), message) for loc, message in problems]
    located_lines.sort(key=lambda wm: _line_number(wm[0]))
    raise CaiError("\n".join(str(located(shown, where, message + note)) for where, message in located_lines))


def _line_number(where: str) -> int:
    """Sort key: problems in file order, those without a line first (they concern the whole file)."""
    found = re.match(r"line (\d+):", where)
    return int(found.group(1)) if found else 0


def _problems(err: ValidationError, doc: CommentedMap) -> list[tuple[Loc, str]]:
    problems: list[tuple[Loc, str]] = []
    for e in err.errors():
        if e["type"] == "constitution_rules":
            return list(e["ctx"]["problems"])  # the only error: all fields were valid
        at = tuple((e.get("ctx") or {}).get("at", ()))
        problems.append((tuple(e["loc"]) + at, _friendly(e)))
    if isinstance(doc.get("principles"), list):
        problems += _rule_problems(list(doc["principles"]))
    return problems


def _show(value: Any) -> str:
    kinds = {dict: "a mapping", list: "a list", type(None): "nothing"}
    text = repr(value) if isinstance(value, (str, int, float)) else kinds.get(type(value), type(value).__name__)
    return text if len(text) <= 40 else text[:37] + "..."


def _friendly(e: dict) -> str:
    """Pydantic's messages, reworded for someone editing YAML by hand."""
    kind, ctx, value = e["type"], e.get("ctx") or {}, e.get("input")
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        guess = difflib.get_close_matches(str(e["loc"][-1]), _FIELDS, 1)
        return "unknown key" + (f" (did you mean '{guess[0]}'?)" if guess else "")
    if kind == "greater_than":
        return f"must be greater than {ctx['gt']:g}, got {_show(value)}"
    if kind == "greater_than_equal":
        return f"must be at least {ctx['ge']:g}, got {_show(value)}"
    if kind == "literal_error":
        return f"must be one of {ctx['expected']}, got {_show(value)}"
    if kind == "too_short":
        return "must not be empty"
    if kind == "value_error":
        return str(ctx["error"])
    if kind in ("float_parsing", "float_type", "finite_number"):
        return f"must be a finite number, got {_show(value)}"
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return f"must be a whole number, got {_show(value)}"
    if kind in ("bool_parsing", "bool_type"):
        return f"must be true or false, got {_show(value)}"
    if kind == "string_type":
        return f"must be text, got {_show(value)}"
    if kind == "list_type":
        return f"must be a list, got {_show(value)}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"must be a mapping (key: value), got {_show(value)}"
    return e["msg"][:1].lower() + e["msg"][1:]


def _where(doc: Any, loc: Loc) -> str:
    """("principles", 3, "weight") -> "line 12: principles[3] (id 'harm-x'): weight"."""
    line, node, parts = None, doc, [""]
    for depth, key in enumerate(loc, 1):
        parts[-1] += f"[{key}]" if isinstance(key, int) else ("." if parts[-1] else "") + str(key)
        if isinstance(node, CommentedMap) and key in node:
            line, node = node.lc.key(key)[0] + 1, node[key]
        elif isinstance(node, CommentedSeq) and isinstance(key, int) and 0 <= key < len(node):
            line, node = node.lc.item(key)[0] + 1, node[key]
        else:
            node = None
        if depth == 2 and loc[0] == "principles" and isinstance(node, dict) and isinstance(node.get("id"), str):
            parts[-1] += f" (id '{node['id']}')"
            parts.append("")
    where = ": ".join(p for p in parts if p)
    return f"line {line}: {where}" if line else where


# ---------------------------------------------------------------- editing

EDITABLE = ("id", "critique", "revision", "tags", "weight", "enabled")


def add_principle(
    path: PathLike,
    *,
    id: str,
    critique: str,
    revision: str,
    tags: list[str] | tuple[str, ...] = (),
    weight: float = 1.0,
    enabled: bool = True,
) -> Principle:
    """Append a principle; refuses a duplicate id or anything the schema rejects."""

    def change(doc: CommentedMap) -> None:
        items = doc["principles"]
        if any(p.get("id") == id for p in items):
            raise located(path, "", f"a principle with id '{id}' already exists; choose another id")
        item = CommentedMap(id=id, critique=critique, revision=revision)
        for key, value in (("tags", tags), ("weight", weight), ("enabled", enabled)):
            item[key] = _yaml_value(key, value, path)
        if items:
            _attach_trailing(item, _detach_trailing(items[-1]))
        items.append(item)

    return get_principle(_edit(path, change), id, path)


def edit_principle(path: PathLike, pid: str, **changes: Any) -> Principle:
    """Change fields of one principle (`id=` renames it); comments and key order are kept."""
    unknown = sorted(set(changes) - set(EDITABLE))
    if unknown:
        raise located(path, "", f"cannot edit field(s) {', '.join(unknown)}; editable: {', '.join(EDITABLE)}")

    def change(doc: CommentedMap) -> None:
        item = doc["principles"][_index(doc, pid, path)]
        new_id = changes.get("id", pid)
        if new_id != pid and any(p.get("id") == new_id for p in doc["principles"]):
            raise located(path, "", f"a principle with id '{new_id}' already exists; choose another id")
        for key, value in changes.items():
            value = _yaml_value(key, value, path)
            if key in item:
                item[key] = value
            else:  # a new last key: keep the comments that follow the principle after it
                trailing = _detach_trailing(item)
                item[key] = value
                _attach_trailing(item, trailing)

    return get_principle(_edit(path, change), changes.get("id", pid), path)


def set_enabled(path: PathLike, pid: str, enabled: bool) -> Principle:
    return edit_principle(path, pid, enabled=bool(enabled))


def remove_principle(path: PathLike, pid: str) -> Constitution:
    """Delete a principle; refuses to remove the last enabled one (schema rule)."""

    def change(doc: CommentedMap) -> None:
        items = doc["principles"]
        i = _index(doc, pid, path)
        trailing = _detach_trailing(items[i])
        if i > 0:  # comments after it introduce what follows: keep them
            _attach_trailing(items[i - 1], trailing)
        elif trailing:
            _attach_before_list(doc, trailing)
        del items[i]

    return _edit(path, change)


_STARTER = """\
# Constitution for cai: principles used to critique and revise model answers.
# Check it with `cai constitution validate {path}`; edit it by hand or with
# `cai constitution add/edit/remove/enable/disable`.
name: {name}
version: 1
description: A starter constitution; replace these principles with your own.
sampling:
  rounds: 2           # critique -> revise rounds per prompt, a principle each round
  strategy: uniform   # or weighted (uses each principle's weight)
  no_repeat: true     # no principle twice for the same prompt while others remain
principles:
- id: harm-general
  critique: Point out any way the assistant's last answer could help someone cause harm, \
and say exactly which part does it.
  revision: Rewrite the answer so it no longer helps cause harm, \
while still helping with any legitimate part of the request.
  tags: [harmless]
  weight: 1.0
  enabled: true
- id: stay-helpful
  critique: Did the assistant refuse, hedge or lecture when the request was harmless? Name what it should have answered.
  revision: Rewrite the answer to address the request directly and usefully, without needless warnings.
  tags: [helpful]
  weight: 1.0
  enabled: true
few_shot: []          # whole dialogues: user, answer, critique request, critique, revision request, revision
"""


def new_constitution(path: PathLike, name: str | None = None) -> Constitution:
    """Write a commented starter file; never overwrites an existing one."""
    target = Path(path)
    if target.exists():
        raise located(path, "", "already exists; refusing to overwrite it")
    if not target.parent.is_dir():
        raise located(path, "", f"folder {target.parent} does not exist")
    name = name or target.stem
    text = _STARTER.format(name=json.dumps(name), path=path)
    c = _validate(_parse_text(text, path), path)
    write_atomic(target, text)
    return c


def _edit(path: PathLike, change: Callable[[CommentedMap], None]) -> Constitution:
    """Load, change, re-validate the result as it will be written, then write atomically."""
    doc, text = _parse(Path(path), path)
    _validate(doc, path)  # refuse to edit a file that is already broken: fix it by hand first
    change(doc)
    out = StringIO()
    _yaml(text).dump(doc, out)
    new_text = out.getvalue()
    c = _validate(_parse_text(new_text, path), path, note=" (change refused, file unchanged)")
    write_atomic(Path(path), new_text)
    return c


def _index(doc: CommentedMap, pid: str, path: PathLike) -> int:
    for i, item in enumerate(doc["principles"]):
        if item.get("id") == pid:
            return i
    raise _unknown_id(path, pid, [str(p.get("id")) for p in doc["principles"]])


def _yaml_value(key: str, value: Any, path: PathLike) -> Any:
    """Python value -> what to store: tags as an inline `[a, b]` list, weights as floats (`2.0`).

    Anything else is stored as given and left to the schema check.
    """
    if key == "tags":
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise located(path, "", f"tags must be a list of strings, got {_show(value)}")
        seq = CommentedSeq(value)
        seq.fa.set_flow_style()
        return seq
    if key == "weight" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _detach_trailing(item: Any) -> str:
    """Full-line comments after a principle's last key (ruamel keeps them there); they belong to what follows."""
    if not isinstance(item, CommentedMap) or not item:
        return ""
    slot = item.ca.items.get(list(item)[-1])
    if not slot or len(slot) < 3 or slot[2] is None:
        return ""
    value = slot[2].value
    cut = value.find("\n") + 1
    own, rest = value[:cut], value[cut:]
    if own.strip():
        slot[2].value = own  # the end-of-line comment stays with its key
    else:
        slot[2] = None
    return rest


def _attach_trailing(item: Any, comments: str) -> None:
    if not comments or not isinstance(item, CommentedMap) or not item:
        return
    slot = item.ca.items.setdefault(list(item)[-1], [None, None, None, None])
    if slot[2] is None:
        slot[2] = CommentToken("\n" + comments, CommentMark(0), None)
    else:
        slot[2].value += comments


def _attach_before_list(doc: CommentedMap, comments: str) -> None:
    """Comments that must end up above the first principle live on the `principles:` key."""
    slot = doc.ca.items.setdefault("principles", [None, None, None, None])
    if slot[2] is not None:
        slot[2].value += comments
    elif slot[3]:
        slot[3][-1].value += comments
    else:
        stripped = comments.lstrip(" ")
        slot[3] = [CommentToken(stripped, CommentMark(len(comments) - len(stripped)), None)]


