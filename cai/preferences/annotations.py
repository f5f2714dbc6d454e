"""Import human preference annotations: validate, merge annotators, measure agreement.

The input is the alignment guide's annotation format, one object per
annotator and item, as JSONL or one JSON list:
`prompt`, `responses` (two strings), `preference` (0 or 1, the index of the
preferred response), `explanation`, `criteria_scores` (helpfulness,
harmlessness, honesty, clarity, each 1..5), and optionally `annotator`,
`item_id` and `time_seconds` / `duration_seconds`. Every problem is one
CaiError line, `FILE: line N: field: what is wrong` (`index N` inside a JSON
list, counted from 0), because annotation exports are fixed by hand.

Annotations are grouped into items by `item_id`, or else by the prompt and the
two responses in either order: annotation tools shuffle the order per
annotator to hide position bias, so each preference is turned around to the
order of the item's first annotation before votes are counted. Each item
becomes one preference row in the project's pair format, chosen by majority;
quality problems become `flag_*` columns rather than drops, so the user
decides what to filter.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.table import Table

from cai.errors import located
from cai.io import write_atomic
from cai.preferences.agreement import cohens_kappa, krippendorff_alpha, pairwise_agreement
from cai.text import format_number

_UNDEFINED = "n/a (undefined)"   # agreement on too few items is not a number

CRITERIA = ("helpfulness", "harmlessness", "honesty", "clarity")
TIME_FIELDS = ("time_seconds", "duration_seconds")
REQUIRED = ("prompt", "responses", "preference", "criteria_scores")
FLAGS = ("flag_too_fast", "flag_missing_explanation", "flag_inconsistent")


@dataclass(frozen=True)
class Annotation:
    """One annotator's judgement of one pair of responses, as read from the file."""

    where: str  # "line N" or "index N", to point back into the file
    prompt: str
    responses: tuple[str, str]
    preference: int
    explanation: str
    scores: dict[str, int]
    annotator: str | None = None
    item_id: str | None = None
    seconds: float | None = None

    @property
    def who(self) -> str:
        """The annotator; an annotation without one counts as its own annotator."""
        return self.annotator if self.annotator is not None else f"anonymous@{self.where}"


@dataclass(frozen=True)
class AgreementReport:
    """How far annotators agree, and how many items each quality flag hit.

    Preferences are compared as "which of the item's two responses" in the
    item's first-seen order; pairwise agreement does not depend on that order,
    but the chance correction of kappa and alpha does a little. kappa and alpha
    are NaN when undefined (see cai.preferences.agreement); `cohens_kappa` is None unless
    exactly two named annotators share items.
    """

    n_items: int
    n_annotations: int
    n_annotators: int
    pairwise_agreement: float
    alpha_nominal: float
    cohens_kappa: float | None
    kappa_annotators: tuple[str, str] | None
    criteria: dict[str, dict[str, float]]  # criterion -> mean, agreement (exact), alpha_interval
    flags: dict[str, int]  # flag column -> number of items flagged
    min_seconds: float


@dataclass(frozen=True)
class AnnotationImport:
    """What an import yields: preference rows ready to write, and the report to show."""

    rows: list[dict]
    report: AgreementReport


def read_annotations(path: str | os.PathLike[str]) -> list[Annotation]:
    """Read and check every annotation of a JSONL file or a JSON list (sniffed by a leading `[`)."""
    path = Path(path)
    if not path.is_file():
        raise located(path, "", "no such file")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise located(path, f"line {line}", f"not valid UTF-8 (bad byte at offset {e.start})") from None
    rows = _json_list(path, text) if text.lstrip().startswith("[") else _jsonl(path, text)
    annotations = [_annotation(path, where, row) for where, row in rows]
    if not annotations:
        raise located(path, "", "no annotations found (expected JSON objects, one a line, or a JSON list of them)")
    return annotations


def import_annotations(path: str | os.PathLike[str], *, min_seconds: float = 10.0) -> AnnotationImport:
    """Preference rows (one per item, by majority) and the agreement report of an annotation file.

    A tie keeps the row with the item's first-seen first response as chosen
    (there is no better guess) and sets `flag_inconsistent`, as does one
    annotator preferring different responses on repeats of an item.
    An item is `flag_too_fast` when any annotation took under `min_seconds`,
    `flag_missing_explanation` when any annotator gave no explanation.
    """
    annotations = read_annotations(path)
    items = _group(path, annotations)
    rows = [_row(key, votes, min_seconds) for key, votes in items.items()]
    return AnnotationImport(rows, _report(annotations, items, rows, min_seconds))


def write_pairs_jsonl(rows: list[dict], path: str | os.PathLike[str]) -> int:
    """Write rows as JSONL in one atomic step (no half-written file); return how many."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    return len(rows)


def report_table(report: AgreementReport) -> Table:
    """The report as a two-column rich table; undefined statistics show as n/a."""
    table = Table(title="Annotation agreement")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("items", str(report.n_items))
    table.add_row("annotations", str(report.n_annotations))
    table.add_row("annotators", str(report.n_annotators), end_section=True)
    table.add_row("preference: pairwise agreement", format_number(report.pairwise_agreement, missing=_UNDEFINED))
    table.add_row("preference: Krippendorff's alpha (nominal)", format_number(report.alpha_nominal, missing=_UNDEFINED))
    if report.cohens_kappa is None:
        kappa = "n/a (not exactly 2 annotators share items)"
    else:
        kappa = (f"{format_number(report.cohens_kappa, missing=_UNDEFINED)} "
                 f"({' vs '.join(report.kappa_annotators or ())})")
    table.add_row("preference: Cohen's kappa", kappa, end_section=True)
    for name, stats in report.criteria.items():
        table.add_row(f"{name}: mean score", format_number(stats["mean"], ".2f", _UNDEFINED))
        table.add_row(f"{name}: exact agreement", format_number(stats["agreement"], missing=_UNDEFINED))
        table.add_row(f"{name}: Krippendorff's alpha (interval)",
                      format_number(stats["alpha_interval"], missing=_UNDEFINED), end_section=True)
    labels = {"flag_too_fast": f"items annotated too fast (< {report.min_seconds:g} s)",
              "flag_missing_explanation": "items with a missing explanation",
              "flag_inconsistent": "items with a tie or a self-contradicting annotator"}
    for flag, count in report.flags.items():
        table.add_row(labels[flag], str(count))
    return table


# --- reading -------------------------------------------------------------------


def _jsonl(path: Path, text: str):
    # split("\n"), not splitlines(): JSON strings may hold U+2028, which splitlines breaks on.
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            yield f"line {number}", json.loads(line)
        except json.JSONDecodeError as e:
            raise located(path, f"line {number}", f"invalid JSON: {e.msg} (column {e.colno})") from None


def _json_list(path: Path, text: str):
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as e:
        raise located(path, f"line {e.lineno}", f"invalid JSON: {e.msg} (column {e.colno})") from None
    return [(f"index {i}", row) for i, row in enumerate(rows)]


def _annotation(path: Path, where: str, row: Any) -> Annotation:
    """Check one record field by field; the first problem is the error."""

    def fail(field: str, message: str):
        return located(path, where, f"{field}: {message}")

    if not isinstance(row, dict):
        raise located(path, where, f"expected a JSON object, got {_kind(row)}")
    for name in REQUIRED:
        if name not in row:
            raise fail(name, f"missing (required: {', '.join(REQUIRED)})")

    prompt = row["prompt"]
    if not isinstance(prompt, str) or not prompt.strip():
        raise fail("prompt", f"must be a non-empty string, got {_show(prompt)}")

    responses = row["responses"]
    if not isinstance(responses, list) or len(responses) != 2:
        count = f"{len(responses)} element(s)" if isinstance(responses, list) else _kind(responses)
        raise fail("responses", f"must be a list of exactly 2 responses, got {count}")
    for i, text in enumerate(responses):
        if not isinstance(text, str) or not text.strip():
            raise fail(f"responses[{i}]", f"must be a non-empty string, got {_show(text)}")
    responses = (responses[0].strip(), responses[1].strip())
    if responses[0] == responses[1]:
        raise fail("responses", "the two responses are identical, so a preference between them means nothing")

    preference = row["preference"]
    if type(preference) is not int or preference not in (0, 1):
        raise fail("preference",
                   f"must be the integer 0 or 1 (index of the preferred response), got {_show(preference)}")

    explanation = row.get("explanation")
    if explanation is not None and not isinstance(explanation, str):
        raise fail("explanation", f"must be a string, got {_kind(explanation)}")

    scores = row["criteria_scores"]
    if not isinstance(scores, dict):
        raise fail("criteria_scores", f"must be an object, got {_kind(scores)}")
    for name, value in scores.items():
        if name not in CRITERIA:
            raise fail(f"criteria_scores.{name}", f"unknown criterion; expected {', '.join(CRITERIA)}")
        if type(value) is not int or not 1 <= value <= 5:
            raise fail(f"criteria_scores.{name}", f"must be an integer from 1 to 5, got {_show(value)}")
    for name in CRITERIA:
        if name not in scores:
            raise fail(f"criteria_scores.{name}", "missing")

    given = [name for name in TIME_FIELDS if row.get(name) is not None]
    if len(given) > 1:
        raise fail(given[1], f"give {' or '.join(TIME_FIELDS)}, not both")
    seconds = row[given[0]] if given else None
    if seconds is not None and (type(seconds) not in (int, float) or not math.isfinite(seconds) or seconds < 0):
        raise fail(given[0], f"must be a number of seconds >= 0, got {_show(seconds)}")

    return Annotation(where, prompt.strip(), responses, preference, (explanation or "").strip(), dict(scores),
                      annotator=_label(fail, row, "annotator"), item_id=_label(fail, row, "item_id"),
                      seconds=None if seconds is None else float(seconds))


def _label(fail, row: dict, name: str) -> str | None:
    """An optional id field: a non-empty string or an integer, or absent/null."""
    value = row.get(name)
    if value is None:
        return None
    if type(value) not in (str, int) or not str(value).strip():
        raise fail(name, f"must be a non-empty string or an integer, got {_show(value)}")
    return str(value).strip()


def _kind(value: Any) -> str:
    """A JSON-flavoured type name for error messages."""
    names = {type(None): "null", bool: "boolean", int: "number", float: "number",
             str: "string", list: "array", dict: "object"}
    return names.get(type(value), type(value).__name__)


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 40 else text[:37] + "..."


# --- merging -------------------------------------------------------------------


def _group(path, annotations: list[Annotation]) -> dict[str, list[tuple[Annotation, int]]]:
    """Annotations by item, each with its preference turned to the item's first-seen order."""
    items: dict[str, list[tuple[Annotation, int]]] = {}
    for a in annotations:
        key = a.item_id or _content_id(a)
        votes = items.setdefault(key, [])
        if not votes:
            votes.append((a, a.preference))
            continue
        first = votes[0][0]
        if a.prompt != first.prompt or set(a.responses) != set(first.responses):
            raise located(path, a.where, f"item_id: {key!r} has a different prompt or responses than at {first.where}")
        votes.append((a, a.preference if a.responses == first.responses else 1 - a.preference))
    return items


def _content_id(a: Annotation) -> str:
    """The same prompt and pair of responses, in either order, give the same id."""
    text = json.dumps([a.prompt, *sorted(a.responses)], ensure_ascii=False)
    return "h-" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def _row(key: str, votes: list[tuple[Annotation, int]], min_seconds: float) -> dict:
    first = votes[0][0]
    tally = Counter(p for _, p in votes)
    winner = 0 if tally[0] >= tally[1] else 1  # a tie keeps the first response as chosen
    by_annotator = defaultdict(set)
    for a, p in votes:
        if a.annotator is not None:
            by_annotator[a.annotator].add(p)
    self_contradiction = any(len(prefs) > 1 for prefs in by_annotator.values())

    prompt = [{"role": "user", "content": first.prompt}]
    chosen = [{"role": "assistant", "content": first.responses[winner]}]
    row = {
        "prompt": prompt,
        "chosen": chosen,
        "rejected": [{"role": "assistant", "content": first.responses[1 - winner]}],
        "messages": prompt + chosen,
        "source": "human",
        "item_id": key,
        "n_annotators": len({a.who for a, _ in votes}),
        "n_annotations": len(votes),
        "agreement": tally[winner] / len(votes),
        "explanation": "\n".join(a.explanation for a, _ in votes if a.explanation),
    }
    for name in CRITERIA:
        row[f"mean_{name}"] = statistics.fmean(a.scores[name] for a, _ in votes)
    row["flag_too_fast"] = any(a.seconds is not None and a.seconds < min_seconds for a, _ in votes)
    row["flag_missing_explanation"] = any(not a.explanation for a, _ in votes)
    row["flag_inconsistent"] = tally[0] == tally[1] or self_contradiction
    return row


def _report(annotations, items, rows, min_seconds) -> AgreementReport:
    preferences = [[p for _, p in votes] for votes in items.values()]
    criteria = {}
    for name in CRITERIA:
        units = [[a.scores[name] for a, _ in votes] for votes in items.values()]
        criteria[name] = {"mean": statistics.fmean(a.scores[name] for a in annotations),
                          "agreement": pairwise_agreement(units),
                          "alpha_interval": krippendorff_alpha(units, "interval")}
    kappa, pair = _kappa(items)
    return AgreementReport(
        n_items=len(items),
        n_annotations=len(annotations),
        n_annotators=len({a.who for a in annotations}),
        pairwise_agreement=pairwise_agreement(preferences),
        alpha_nominal=krippendorff_alpha(preferences, "nominal"),
        cohens_kappa=kappa,
        kappa_annotators=pair,
        criteria=criteria,
        flags={flag: sum(row[flag] for row in rows) for flag in FLAGS},
        min_seconds=min_seconds,
    )


def _kappa(items) -> tuple[float | None, tuple[str, str] | None]:
    """Cohen's kappa when exactly two named annotators share items (first vote of each per item)."""
    per_item = []
    for votes in items.values():
        first_vote: dict[str, int] = {}
        for a, p in votes:
            if a.annotator is not None:
                first_vote.setdefault(a.annotator, p)
        per_item.append(first_vote)
    sharing = {name for first_vote in per_item if len(first_vote) > 1 for name in first_vote}
    if len(sharing) != 2:
        return None, None
    x, y = sorted(sharing)
    shared = [v for v in per_item if x in v and y in v]
    return cohens_kappa([v[x] for v in shared], [v[y] for v in shared]), (x, y)


