"""Quality rules that read a pair the way a careful reviewer would.

Small models (and bigger ones, less often) fail at critique -> revise in a few
recognisable ways; a pair built from such a revision teaches the wrong thing:

- few-shot copy: the response repeats a few-shot turn or a principle's text;
- critique echo: the "revision" is mostly the critique;
- repetition loop: the response loops on one phrase, over the text or sentence after sentence;
- meta-comment: the response talks about "the answer" instead of answering;
- off-topic: the chosen drifted to another conversation's subject (a few-shot dialogue's,
  another prompt's) while the rejected kept to the prompt;
- repeated item: the chosen's list names the same item twice ("length, length and length");
- rejected kept: the chosen is the rejected text whole with a principle's phrase glued on;
- refusal not improved: the rejected already refused and the chosen only refuses again.

The last three ask that a kept pair be better, not just different. What the rules
keep on purpose is as important: a chosen that declines, redirects or answers the
safe part of a request is on-topic whatever words it uses (it drifted nowhere), and
a text that names a harm in order to reject it is not a loop or a copy.

Each rule is a pure function over texts, cheap enough to run on every pair
(bench/quality_rules.py), with its thresholds in one typed record
(`QualityRules`, the `quality:` section of the rules YAML) and an `enabled`
switch. `flags()` returns what each rule found, with the evidence, so the
audit can show why a pair was flagged.
"""

from __future__ import annotations

import re
import zlib
from collections import Counter
from dataclasses import dataclass
from functools import cached_property
from itertools import chain, compress, repeat, takewhile
from operator import itemgetter
from pathlib import Path
from typing import Iterable, Literal

from pydantic import BaseModel, ConfigDict, Field

from cai.errors import CaiError

# Drop reasons, in the order the filter applies them.
FEW_SHOT_COPY = "few-shot copy"
CRITIQUE_ECHO = "critique echo"
REPETITION_LOOP = "repetition loop"
META_COMMENT = "meta-comment"
OFF_TOPIC = "off-topic"
REPEATED_ITEM = "repeated item"
REJECTED_KEPT = "rejected kept"
REFUSAL_NOT_IMPROVED = "refusal not improved"
RULES = (FEW_SHOT_COPY, CRITIQUE_ECHO, REPETITION_LOOP, META_COMMENT, OFF_TOPIC, REPEATED_ITEM, REJECTED_KEPT,
         REFUSAL_NOT_IMPROVED)


# ----------------------------------------------------------------------------- thresholds

class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True


class FewShotCopyRule(_Rule):
    # 8 words in a row: common phrases ("if you have any questions", "I can't help with that")
    # are shorter; a copied sentence is longer (tests/test_quality.py shows both).
    min_words: int = Field(8, ge=3)


class CritiqueEchoRule(_Rule):
    max_share: float = Field(0.5, gt=0, le=1)     # share of the chosen's word 3-grams taken from the critique


class RepetitionLoopRule(_Rule):
    max_repeated_share: float = Field(0.3, gt=0, le=1)   # share of word 3-grams that repeat an earlier one
    min_compression: float = Field(0.2, ge=0, lt=1)      # zlib size / size, for 300+ characters of mostly non-words
    # The same opening of this many words beginning `phrase_repeats` sentences in a row is a loop however short the
    # text: "I can't help you with X. I can't help you with Y. I can't help you with Z."
    phrase_words: int = Field(4, ge=2)
    phrase_repeats: int = Field(3, ge=2)


class MetaCommentRule(_Rule):
    pass


class OffTopicRule(_Rule):
    scorer: Literal["lexical", "embedding"] = "lexical"
    scorer_options: dict = Field(default_factory=dict)   # embedding: {model: PATH}
    max_similarity: float = Field(0.1, ge=0, le=1)       # chosen at most this close to the prompt ...
    min_gap: float = Field(0.25, ge=0, le=1)             # ... and this much further from it than rejected ...
    # ... and its subject is another conversation's: it shares this many subject words (words few conversations
    # hold) with a few-shot dialogue or another prompt of the run and its first answer, that many being at least
    # `min_share` of its subject words and more than it shares with its own prompt, rejected text and critique.
    min_shared: int = Field(4, ge=1)
    min_share: float = Field(0.3, gt=0, le=1)


class RepeatedItemRule(_Rule):
    min_items: int = Field(3, ge=2)                      # a list this long naming one item twice


class RejectedKeptRule(_Rule):
    max_added_words: int = Field(12, ge=1)               # the rejected text whole plus at most this many words ...
    min_source_words: int = Field(4, ge=2)               # ... holding a run this long of a principle or template


class RefusalNotImprovedRule(_Rule):
    min_new_words: int = Field(3, ge=1)                  # subject words a refusal must add to a refusal


class QualityRules(BaseModel):
    """Thresholds of the rules; the `quality:` section of the rules YAML."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    few_shot_copy: FewShotCopyRule = FewShotCopyRule()
    critique_echo: CritiqueEchoRule = CritiqueEchoRule()
    repetition_loop: RepetitionLoopRule = RepetitionLoopRule()
    meta_comment: MetaCommentRule = MetaCommentRule()
    off_topic: OffTopicRule = OffTopicRule()
    repeated_item: RepeatedItemRule = RepeatedItemRule()
    rejected_kept: RejectedKeptRule = RejectedKeptRule()
    refusal_not_improved: RefusalNotImprovedRule = RefusalNotImprovedRule()

    def rule(self, name: str) -> _Rule:
        return getattr(self, _field(name))

    def enabled(self) -> list[str]:
        return [name for name in RULES if self.rule(name).enabled]

    def summary(self) -> dict:
        """{rule: its settings}, for the dataset card."""
        return {name: self.rule(name).model_dump() for name in RULES}


def _field(name: str) -> str:
    return name.replace("-", "_").replace(" ", "_")


def rule_names() -> list[str]:
    """Names users type for --skip-rule: few-shot-copy, critique-echo, ..."""
    return [name.replace(" ", "-") for name in RULES]


def load_quality_rules(path: str | Path | None = None, skip: Iterable[str] = ()) -> QualityRules:
    """The `quality:` section of a rules YAML file (optional), with the rules in `skip` turned off."""
    data: dict = {}
    if path:
        from cai.io import load_mapping

        data = load_mapping(path, "rules file", "a mapping of rule names to values").get("quality") or {}
        if not isinstance(data, dict):
            raise CaiError(f"{path}: quality: must be a mapping of rule names to settings")
    data = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for name in skip:
        key = _field(name)
        if key not in QualityRules.model_fields:
            raise CaiError(f"--skip-rule: unknown rule {name!r}; choose from {', '.join(rule_names())}")
        section = data.setdefault(key, {})
        if isinstance(section, dict):
            section["enabled"] = False
    from cai.io import build

    return build(QualityRules, data, str(path or "quality rules"), "quality.")


# ----------------------------------------------------------------------------- text helpers

# Apostrophes are dropped ("can't" -> "cant") and every other character that is not a letter or a
# digit becomes a space. ASCII text goes through bytes.translate, a table lookup in C that lower-cases
# too, which keeps the rules far cheaper than a classifier (bench/quality_rules.py).
_APOSTROPHE_CHARS = "'\u2018\u2019\u02bc"
_NORMAL = str.maketrans({c: ("" if chr(c) in _APOSTROPHE_CHARS else " ") for c in range(0x2070)
                         if not chr(c).isalnum()})
_ASCII = bytes(ord(chr(c).lower()) if chr(c).isalnum() else ord(" ") for c in range(128)) + b" " * 128
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'"})


def words(text: str) -> list[str]:
    """Lower-cased words without punctuation: the normal form every rule compares."""
    if text.isascii():
        return text.encode().translate(_ASCII, b"'").decode().split()
    return text.lower().translate(_NORMAL).split()


def ngrams(tokens: list[str], n: int, step: int = 1) -> list[tuple[str, ...]]:
    """Word n-grams; with `step`, only those starting at every step-th word."""
    return list(zip(*[tokens[i::step] for i in range(n)]))


class Text:
    """A text and the forms the rules compare, each computed once, on first use, for all rules."""

    __slots__ = ("raw", "_words", "_trigrams", "_stems")

    def __init__(self, raw: str):
        self.raw = raw
        self._words = self._trigrams = self._stems = None

    @property
    def words(self) -> list[str]:
        if self._words is None:
            self._words = words(self.raw)
        return self._words

    def trigram_stream(self):
        """The word 3-grams in order, made on the fly (for a text read once)."""
        w = self.words
        return zip(w, w[1:], w[2:])

    @property
    def trigrams(self) -> set[tuple[str, str, str]]:
        """The distinct word 3-grams."""
        if self._trigrams is None:
            self._trigrams = set(self.trigram_stream())
        return self._trigrams

    @property
    def stems(self) -> set[str]:
        """Stems of the words that carry a subject (no stop words, no short words)."""
        if self._stems is None:
            self._stems = content_stems(self.words)
        return self._stems


def _as_text(text: str | Text) -> Text:
    return text if isinstance(text, Text) else Text(text)


@dataclass(frozen=True)
class Flag:
    """One rule a pair breaks: which text and the evidence a reviewer would look at."""

    rule: str
    field: str          # "chosen" or "rejected"
    detail: str


# ----------------------------------------------------------------------------- few-shot copy

class CopySources:
    """Word n-grams of every text the model was shown as an example or an instruction.

    Built once per run from its constitution snapshot (few-shot turns, principle
    critique and revision requests, as the templates rendered them), so each
    pair costs one pass over its words.
    """

    def __init__(self, texts: dict[str, str], min_words: int = FewShotCopyRule().min_words):
        self.texts = texts
        self.min_words = min_words
        self._shorter: dict[int, CopySources] = {}
        self.grams: dict[tuple[str, ...], list[str]] = {}
        for label, text in texts.items():
            for gram in ngrams(words(text), min_words):
                labels = self.grams.setdefault(gram, [])
                if label not in labels:
                    labels.append(label)
        # Any run of n shared words holds a shared m-gram (m = n - step + 1) starting at a multiple of
        # `step`: probing those few positions first rules out nearly every pair at a quarter of the cost.
        self._step = max(1, min_words // 2)
        self._probe = frozenset(g for text in texts.values()
                                for g in ngrams(words(text), min_words - self._step + 1))
        self._probe_at = [slice(i, None, self._step) for i in range(min_words - self._step + 1)]

    @classmethod
    def from_constitution(cls, constitution, templates=None, min_words: int = FewShotCopyRule().min_words):
        texts: dict[str, str] = {}
        for d, dialogue in enumerate(constitution.few_shot, 1):
            for t, turn in enumerate(dialogue, 1):
                texts[f"few-shot {d}, turn {t} ({turn.role})"] = turn.content
        for p in constitution.principles:
            texts[f"principle {p.id} (critique)"] = p.critique
            texts[f"principle {p.id} (revision)"] = p.revision
            if templates is not None:
                texts[f"principle {p.id} (critique request)"] = templates.render("critique", principle=p, round=1)
                texts[f"principle {p.id} (revision request)"] = templates.render("revision", principle=p, round=1)
        if templates is not None:
            texts["system prompt"] = templates.render("system", constitution=constitution)
        return cls(texts, min_words)

    def runs_of(self, min_words: int) -> CopySources:
        """The same texts searched for shared runs of `min_words` words (built once per length)."""
        if min_words == self.min_words:
            return self
        if min_words not in self._shorter:
            self._shorter[min_words] = CopySources(self.texts, min_words)
        return self._shorter[min_words]

    def _run(self, tokens: list[str], i: int, asked: set) -> int:
        """How many n-grams in a row from word i are a source's and not in `asked`, looked up in C (a copy is long)."""
        grams = list(takewhile(self.grams.__contains__, zip(*[tokens[i + m:] for m in range(self.min_words)])))
        if asked:
            in_prompt = list(map(asked.__contains__, grams))
            if True in in_prompt:
                return in_prompt.index(True)
        return len(grams)

    def longest_copy(self, text: str | Text, prompt: str | Text = "") -> tuple[str, str] | None:
        """(copied words, source) of the longest run shared with a source, ignoring words the prompt holds."""
        n, step = self.min_words, self._step
        tokens = _as_text(text).words
        if self._probe.isdisjoint(zip(*map(tokens.__getitem__, self._probe_at))):
            return None                              # the common case, kept to C: no probe is a source's
        probes = ngrams(tokens, n - step + 1, step)
        asked: set | None = None

        def shared(i: int) -> bool:
            """The n words from i are a source's, and not the prompt's."""
            nonlocal asked
            if i < 0 or i + n > len(tokens):
                return False
            gram = tuple(tokens[i:i + n])
            if gram not in self.grams:
                return False
            if asked is None:
                asked = set(ngrams(_as_text(prompt).words, n))
            return gram not in asked

        # Each run of shared n-grams holds a probe hit: grow a run from the n-grams around each hit.
        start = count = 0
        done = -1                                    # runs are found left to right; skip what one covered
        for k in compress(range(len(probes)), map(self._probe.__contains__, probes)):
            if k * step <= done:
                continue
            for i in range(max(k * step - (step - 1), done + 1), k * step + 1):
                if shared(i):
                    first, last = i, i
                    while shared(first - 1):
                        first -= 1
                    last += self._run(tokens, last + 1, asked)
                    done = last
                    if last - first + 1 > count:
                        start, count = first, last - first + 1
                    break
        if not count:
            return None
        # the source of the run's middle, preferring one that also holds its ends (texts may share openings)
        grams = [tuple(tokens[i:i + n]) for i in (start, start + count // 2, start + count - 1)]
        middle, ends = self.grams[grams[1]], (self.grams[grams[0]], self.grams[grams[2]])
        source = max(middle, key=lambda label: sum(label in labels for labels in ends))
        return " ".join(tokens[start:start + count + n - 1]), source


# ----------------------------------------------------------------------------- critique echo

def echo_share(chosen: str | Text, critique: str | Text, rejected: str | Text = "", at_least: float = 0.0) -> float:
    """Share of the chosen's distinct word 3-grams that come from the critique, not from the rejected text it quotes.

    A share under `at_least` before the rejected's 3-grams are taken out is returned as it is: taking them out
    only lowers it, so a rule comparing it with `at_least` decides the same without making them.
    """
    grams = _as_text(chosen).trigrams
    if not grams:
        return 0.0
    shared = grams.intersection(_as_text(critique).trigram_stream())
    if shared and len(shared) / len(grams) >= at_least:
        shared -= _as_text(rejected).trigrams
    return len(shared) / len(grams)


# ----------------------------------------------------------------------------- repetition loop

def repeated_share(text: str | Text) -> float:
    """Share of word 3-grams that repeat an earlier one: 0 for ordinary prose, high for a loop."""
    text = _as_text(text)
    total = len(text.words) - 2
    if total < 4:
        return 0.0
    return 1 - len(text.trigrams) / total


def compression_ratio(text: str) -> float | None:
    """zlib size / text size; None below 300 characters, where the format's overhead dominates."""
    data = text.encode("utf-8")
    if len(data) < 300:
        return None
    return len(zlib.compress(data, 1)) / len(data)


def loop_evidence(text: str | Text, rule: RepetitionLoopRule) -> str | None:
    text = _as_text(text)
    tokens = text.words
    # A repeated 3-gram ends on a repeated word, so the repeated share is at most
    # (words - distinct words) / 3-grams: most texts are cleared without making their 3-grams.
    if len(tokens) > 2 and (len(tokens) - len(set(tokens))) / (len(tokens) - 2) >= rule.max_repeated_share:
        share = repeated_share(text)
        if share >= rule.max_repeated_share:
            return f"{share:.0%} of its 3-word phrases repeat"
    # Where there are words, a loop repeats their 3-grams; zlib is for text that is mostly not words
    # ("!!!!", "=====", scripts written without spaces), where the 3-grams see nothing.
    if len(tokens) < len(text.raw) / 12:
        ratio = compression_ratio(text.raw)
        if ratio is not None and ratio < rule.min_compression:
            return f"compresses to {ratio:.0%} of its size"
    return phrase_loop(text, rule)


_SENTENCE_BREAK = re.compile(r"[.!?]+[\"')\]]*(?:\s+|$)|\n+")


def sentences(text: str) -> list[str]:
    return [part for part in _SENTENCE_BREAK.split(text) if part.strip()]


def phrase_loop(text: str | Text, rule: RepetitionLoopRule) -> str | None:
    """The opening of `phrase_words` words that begins `phrase_repeats` sentences in a row, or None.

    "I can't help you with X. I can't help you with Y. I can't help you with Z." is a loop
    however short the text; sentences that share three words ("You can ask a locksmith.
    You can ask your landlord.") are parallel, not looping.
    """
    raw = _as_text(text).raw
    n, k = rule.phrase_words, rule.phrase_repeats
    # Sentences split with str methods (C speed); their first words compared as written, lower-cased.
    parts = raw.lower().replace("\n", ". ").replace("! ", ". ").replace("? ", ". ").split(". ")
    if len(parts) < k:
        return None
    openings = list(map(itemgetter(slice(n)), map(str.split, parts, repeat(None), repeat(n))))
    if not any(map(list.__eq__, openings, openings[1:])):
        return None                          # no two sentences in a row open alike (all checked in C)
    for i in range(len(openings) - k + 1):
        if len(openings[i]) == n and openings[i:i + k].count(openings[i]) == k:
            return f"\u201c{' '.join(words(' '.join(openings[i])))}\u201d opens {k} sentences in a row"
    return None


# ----------------------------------------------------------------------------- repeated item

_LIST_LINE = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)])\s+(.+)$", re.MULTILINE)
_COMMA = re.compile(r"[,;]\s+(?:and\s+|or\s+)?")
_LAST_ITEM = re.compile(r"\s+(?:and|or)\s+")


def list_items(text: str) -> list[list[str]]:
    """The lists of a text: its bulleted or numbered lines, and what follows a colon written as "A, B and C"."""
    lists = [_LIST_LINE.findall(text)]
    for sentence in sentences(text):
        if ":" not in sentence:
            continue
        *items, last = _COMMA.split(sentence.split(":", 1)[1])
        lists.append(items + _LAST_ITEM.split(last, maxsplit=1))
    return lists


def repeated_item(text: str | Text, rule: RepeatedItemRule) -> str | None:
    """The item a list of `min_items` or more names twice ("a password needs: length, length and length"), or None.

    Items compare by their subject words, so "the mileage" and "The mileage." are one
    item, and items with no subject word ("again and again") are not compared.
    """
    raw = _as_text(text).raw
    if ":" not in raw and "\n" not in raw:
        return None
    for items in list_items(raw):
        keys = [(frozenset(content_stems(words(item))), item.strip(" .!?")) for item in items]
        keys = [(key, item) for key, item in keys if key]
        if len(keys) < rule.min_items:
            continue
        counts = Counter(key for key, _ in keys)
        key, times = counts.most_common(1)[0]
        if times >= 2:
            item = next(item for k, item in keys if k == key)
            return f"\u201c{item}\u201d {times} times in a list of {len(keys)}"
    return None


# ----------------------------------------------------------------------------- rejected kept

def rejected_kept(chosen: str | Text, rejected: str | Text, rule: RejectedKeptRule,
                  sources: CopySources | None, prompt: str | Text = "") -> str | None:
    """Evidence that the chosen is the rejected text whole with a principle's phrase glued on, or None."""
    if sources is None:
        return None
    c, r = _as_text(chosen).words, _as_text(rejected).words
    if len(r) < 3 or not 0 < len(c) - len(r) <= rule.max_added_words:
        return None
    joined, inner = f" {' '.join(c)} ", f" {' '.join(r)} "
    at = joined.find(inner)
    if at < 0:
        return None
    start = joined[:at].count(" ")
    added = " ".join(c[:start] + c[start + len(r):])
    copy = sources.runs_of(rule.min_source_words).longest_copy(added, prompt)
    if copy is None:
        return None
    return f"the rejected text whole, plus \u201c{copy[0]}\u201d ({len(copy[0].split())} words of {copy[1]})"


# ----------------------------------------------------------------------------- refusal not improved

# A word each refusal pattern of cai.safety.refusal needs (normalized as `words` does).
_REFUSAL_WORDS = frozenset("cant cannot wont not unable shouldnt sorry apologize apologise ai artificial language "
                           "llm refuse decline against rather".split())


def refusal_not_improved(prompt: str | Text, chosen: str | Text, rejected: str | Text,
                         rule: RefusalNotImprovedRule) -> str | None:
    """Evidence that the rejected already refused and the chosen only refuses again, or None.

    A refusal that improves on a refusal says why, points to help, or answers the
    safe part: it brings subject words of its own (`min_new_words`, counting neither
    the rejected's nor the prompt's).
    """
    from cai.safety.refusal import refusal_match

    chosen, rejected = _as_text(chosen), _as_text(rejected)
    if _REFUSAL_WORDS.isdisjoint(rejected.words[:40]) or _REFUSAL_WORDS.isdisjoint(chosen.words[:40]):
        return None                      # neither text can open with a refusal: skip the regexes
    before = refusal_match(rejected.raw)
    if before is None or before == "empty" or refusal_match(chosen.raw) is None:
        return None
    new = chosen.stems - rejected.stems - _as_text(prompt).stems
    if len(new) >= rule.min_new_words:
        return None
    return (f"the rejected already refused (\u201c{before}\u201d) and the chosen refuses again, adding "
            f"{len(new)} subject word{'' if len(new) == 1 else 's'}")


# ----------------------------------------------------------------------------- meta-comment

_ABOUT = r"(?:answer|response|reply|revision)"
_WHICH = (r"(?:last|previous|prior|original|initial|above|earlier|revised|rewritten|improved|"
          r"assistant's|model's|ai's|critiqued)")
_VERBS = (r"(?:contains?|contained|does|did|doesn't|didn't|fails?|failed|lacks?|lacked|provides?|provided|gives?|"
          r"gave|includes?|included|should|could|would|seems?|appears?|mentions?|suggests?|encourages?|promotes?|"
          r"addresses|addressed|refuses|refused|explains|explained|focuses|needs|uses|offers)")
# Always a comment on the answer, never an answer to the user.
META_PATTERNS: tuple[tuple[str, str], ...] = (
    ("the last answer", rf"\b(?:the|this|that|my|your|its)\s+{_WHICH}\s+{_ABOUT}s?\b"),
    ("the response contains", rf"\b(?:the|this|that)\s+{_ABOUT}\s+{_VERBS}\b"),
    ("the assistant", r"\bthe\s+(?:assistant|chatbot|ai\s+model|language\s+model)\b"),
    ("the user asked", r"\bthe\s+user(?:'s)?\s+(?:asked|asks|is\s+asking|wants|wanted|requested|question|request|"
                       r"prompt|message)\b"),
    ("the critique", r"\b(?:the|this|my|your)\s+critique\b"),
    ("rewritten response", rf"\b(?:revised|rewritten|improved|updated|safer)\s+(?:version|{_ABOUT})\b"),
)
# A comment on the answer unless the text also speaks to the user ("The answer is yes, you can ...").
WEAK_META_PATTERNS: tuple[tuple[str, str], ...] = (
    ("the answer is", rf"\b(?:the|this|that)\s+{_ABOUT}\s+(?:is|was|has|had)\b"),
    ("it explains", r"^\W*(?:it|this)\s+(?:explains|suggests|provides|gives|encourages|contains|describes|"
                    r"does\s+not|doesn't|fails|is\s+(?:not\s+)?(?:helpful|harmful|clear|accurate|appropriate))\b"),
)
_META = re.compile("|".join(f"(?:{p})" for _, p in META_PATTERNS), re.IGNORECASE)
_WEAK_META = re.compile("|".join(f"(?:{p})" for _, p in WEAK_META_PATTERNS), re.IGNORECASE)
_SECOND_PERSON = re.compile(r"\b(?:you|your|you're|yours|yourself)\b", re.IGNORECASE)


# Words one of the patterns needs: a text without any of them is not searched.
_META_WORDS = frozenset("answer answers response responses reply replies revision revisions assistant chatbot model "
                        "user users critique version".split())


def meta_comment(text: str | Text) -> str | None:
    """The phrase showing that `text` talks about an answer instead of answering, or None."""
    tokens = _as_text(text).words
    if _META_WORDS.isdisjoint(tokens) and (not tokens or tokens[0] not in ("it", "this")):
        return None
    text = _as_text(text).raw.translate(_APOSTROPHES)
    match = _META.search(text) or (None if _SECOND_PERSON.search(text) else _WEAK_META.search(text))
    return match.group(0) if match else None


# ----------------------------------------------------------------------------- off-topic

_STOPWORDS = """
a about above after again against all also am an and any are aren't as at be because been before being below
between both but by can can't cannot could couldn't did didn't do does doesn't doing don't down during each even
ever every few for from further get gets getting give go going got had hadn't has hasn't have haven't having he
he'd he'll he's her here here's hers herself him himself his how how's however i i'd i'll i'm i've if in into is
isn't it it's its itself just know let let's like make makes making may me might more most much must mustn't my
myself need no nor not now of off on once one only or other ought our ours ourselves out over own please really
right same say see shall shan't she she'd she'll she's should shouldn't so some something such sure tell than
that that's the their theirs them themselves then there there's these they they'd they'll they're they've thing
things think this those through to too try under until up upon us use used using very want was wasn't way ways we
we'd we'll we're we've well were weren't what what's when when's where where's whether which while who who's
whom why why's will with without won't would wouldn't yes yet you you'd you'll you're you've your yours yourself
yourselves best good better help helps sorry thanks thank okay ok
"""
STOPWORDS = frozenset(w.replace("'", "") for w in _STOPWORDS.split())
_SUFFIXES = ("ing", "ed", "es", "s", "ly")


# word -> stem ("" for stop words and words too short to carry a subject): one lookup in C per word
_STEMS: dict[str, str] = dict.fromkeys(STOPWORDS, "")


def _stem(word: str) -> str:
    if len(word) < 3:
        return ""
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)][:5]
    return word[:5]


def content_stems(text: str | Text | list[str]) -> set[str]:
    """Stems of the words that carry a subject (no stop words, no short words)."""
    if not isinstance(text, list):
        return _as_text(text).stems
    stems = set(map(_STEMS.get, text))         # one lookup in C per word; None marks a word not seen yet
    if None in stems:
        stems = _stem_new(text)
    stems.discard("")
    return stems


def _stem_new(text: list[str]) -> set[str]:
    """The stems of `text`, after adding its unseen words to the stem table (kept under 500,000 words)."""
    unique = set(text)
    new = unique.difference(_STEMS)
    if len(_STEMS) + len(new) > 500_000:
        _STEMS.clear()
        _STEMS.update(dict.fromkeys(STOPWORDS, ""))
        new = unique.difference(_STEMS)
    for word in new:
        _STEMS[word] = _stem(word)
    return set(map(_STEMS.__getitem__, unique))


def topic_overlap(prompt: str | Text, text: str | Text) -> float | None:
    """Share of the prompt's subject words that `text` mentions; None when the prompt has none."""
    asked = content_stems(prompt)
    if not asked:
        return None
    return len(asked & content_stems(text)) / len(asked)


def _gist(text: str, chars: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= chars else text[:chars - 3].rstrip() + "..."


class Topics:
    """The subjects a chosen text could have drifted to: the few-shot dialogues and the run's other prompts.

    Each conversation is the subject words of its question and first answer (for a
    few-shot dialogue, its final revision too: that is what a model pastes). A chosen
    is off-topic only when its own subject is one of these, so a revision that
    declines or redirects ("talk to a counsellor") is never taken for drift: it is
    about nothing else the run holds. The index is built on the first question, so a
    run where no chosen leaves its prompt never pays for it.
    """

    def __init__(self, conversations: dict[str, tuple[str, tuple[str, ...]]]):
        """`conversations`: key -> (what it is about, shown in the evidence; its texts, its question first)."""
        self.conversations = conversations
        self._questions: dict[str, Text] = {}

    @classmethod
    def from_rows(cls, rows: Iterable[dict], constitution=None) -> Topics:
        conversations: dict[str, tuple[str, tuple[str, ...]]] = {}
        for d, dialogue in enumerate(getattr(constitution, "few_shot", None) or [], 1):
            turns = [turn.content for turn in dialogue]
            conversations[f"few-shot {d}"] = (f"few-shot dialogue {d}", tuple(turns[:2] + turns[-1:]))
        for row in rows:
            key = str(row.get("generation_id") or row.get("pair_id") or len(conversations))
            if key not in conversations:
                conversations[key] = ("another prompt", (user_turns(row.get("prompt")), _text(row.get("rejected"))))
        return cls(conversations)

    def question(self, raw: str) -> Text:
        """The parsed question `raw`, shared by the index and every pair asking it (questions are short and repeat)."""
        text = self._questions.get(raw)
        if text is None:
            text = self._questions[raw] = Text(raw)
        return text

    def _stems(self, texts: tuple[str, ...]) -> set[str]:
        """Subject words of a conversation: its question's parsed once for the run, the rest as read."""
        if not texts:
            return set()
        return self.question(texts[0]).stems.union(*(content_stems(words(text)) for text in texts[1:]))

    @cached_property
    def specific(self) -> dict[str, list[str]]:
        """Subject word -> the conversations holding it, for words few conversations hold."""
        stems = {key: self._stems(texts) for key, (_, texts) in self.conversations.items()}
        # A word many conversations hold ("think", "people", "question") says nothing about which one a text
        # is about: only words of at most three conversations, or 1% of them in a large run, are compared.
        # (At two, one unrelated prompt sharing a subject word with the one a text drifted to hid the drift.)
        most = max(3, len(self.conversations) // 100)
        counts = Counter(chain.from_iterable(stems.values()))
        rare = {stem for stem, n in counts.items() if n <= most}
        index: dict[str, list[str]] = {}
        for key, held in stems.items():
            for stem in held & rare:
                index.setdefault(stem, []).append(key)
        return index

    def label(self, key: str) -> str:
        """What conversation `key` is, as the evidence shows it: its kind and the gist of its first line."""
        kind, texts = self.conversations[key]
        first_line = (texts[0] if texts else "").split("\n", 1)[0]
        return f"{kind} (\u201c{_gist(first_line)}\u201d)"

    def closest(self, stems: set[str], exclude: str = "") -> tuple[str, int]:
        """(key, shared specific subject words) of the conversation sharing the most with `stems`, not `exclude`."""
        shared = Counter(key for stem in stems for key in self.specific.get(stem, ()) if key != exclude)
        return shared.most_common(1)[0] if shared else ("", 0)


def off_topic(prompt: str | Text, chosen: str | Text, rejected: str | Text, rule: OffTopicRule,
              similarity: tuple[float, float] | None = None, *, topics: Topics | None = None, own: str = "",
              context: str | Text = "") -> str | None:
    """Evidence that the chosen drifted to another conversation's subject while the rejected kept to the prompt.

    `similarity` is (chosen, rejected) from an embedding scorer; without it the
    lexical overlap of subject words is used. `topics` are the conversations it
    could have drifted to (`own` is this pair's key there), `context` the rest of
    its own conversation (the critiques): without `topics` nothing is drift.
    """
    chosen = _as_text(chosen)
    if topics is None:
        return None
    if similarity is None:
        c = topic_overlap(prompt, chosen)
        if c is None or c > rule.max_similarity:
            return None
        r = topic_overlap(prompt, rejected)
    else:
        c, r = similarity
    if c > rule.max_similarity or r - c < rule.min_gap:
        return None
    stems = chosen.stems
    key, shared = topics.closest(stems, exclude=own)
    if shared < rule.min_shared or shared < rule.min_share * len(stems):
        return None
    home = content_stems(prompt) | _as_text(rejected).stems | _as_text(context).stems
    if shared <= len(stems & home):
        return None
    return (f"prompt similarity {c:.2f} (rejected {r:.2f}); {shared} of its {len(stems)} subject words are "
            f"{topics.label(key)}'s")


# ----------------------------------------------------------------------------- all rules over a pair

def _text(messages) -> str:
    if isinstance(messages, list) and messages and isinstance(messages[-1], dict):
        return str(messages[-1].get("content", ""))
    return messages if isinstance(messages, str) else ""


def user_turns(messages) -> str:
    """Every user turn of a prompt, joined: a multi-turn prompt's subject is in all of them."""
    if isinstance(messages, list):
        return "\n".join(str(m.get("content", "")) for m in messages if isinstance(m, dict) and m.get("role") == "user")
    return messages if isinstance(messages, str) else ""


@dataclass
class _Pair:
    """A pair row's texts as the rules read them, with what the run around it holds."""

    row: dict
    prompt: Text
    chosen: Text
    rejected: Text
    sources: CopySources | None
    topics: Topics | None

    @property
    def critiques(self) -> list[str]:
        return [c for c in self.row.get("critiques") or [self.row.get("critic_response") or ""] if c]

    @cached_property
    def critique_texts(self) -> list[Text]:
        return [Text(c) for c in self.critiques]

    @cached_property
    def context(self) -> Text:
        """The critiques as one text (the rest of its own conversation); one critique's parse is reused."""
        texts = self.critique_texts
        return texts[0] if len(texts) == 1 else Text(" ".join(self.critiques))

    @cached_property
    def asked(self) -> Text:
        """Every user turn of the prompt (its subject), parsed once for the run when the run's topics are known."""
        raw = user_turns(self.row.get("prompt"))
        if raw == self.prompt.raw:
            return self.prompt
        return self.topics.question(raw) if self.topics else Text(raw)


NOTHING: tuple = ()


# The rules reading both texts yield the chosen's finding first, so the pairs filter, which stops at the first
# finding, never reads the rejected text of a pair whose chosen already broke the rule.

def _copy(pair: _Pair, rule: FewShotCopyRule):
    if pair.sources is None:
        return
    for field in ("chosen", "rejected"):
        copy = pair.sources.longest_copy(getattr(pair, field), pair.prompt)
        if copy:
            yield field, f"\u201c{copy[0]}\u201d ({len(copy[0].split())} words, {copy[1]})"


def _echo(pair: _Pair, rule: CritiqueEchoRule):
    share = max((echo_share(pair.chosen, c, pair.rejected, rule.max_share) for c in pair.critique_texts), default=0.0)
    if share >= rule.max_share:
        return (("chosen", f"{share:.0%} of its 3-word phrases come from the critique"),)
    return NOTHING


def _loop(pair: _Pair, rule: RepetitionLoopRule):
    return ((field, found) for field in ("chosen", "rejected") if (found := loop_evidence(getattr(pair, field), rule)))


def _meta(pair: _Pair, rule: MetaCommentRule):
    phrase = meta_comment(pair.chosen)
    return (("chosen", f"\u201c{phrase}\u201d"),) if phrase else NOTHING


def _off_topic(pair: _Pair, rule: OffTopicRule):
    if pair.topics is None:
        return NOTHING
    row = pair.row
    similarity = None
    if "chosen_prompt_similarity" in row and "rejected_prompt_similarity" in row:
        similarity = (row["chosen_prompt_similarity"], row["rejected_prompt_similarity"])
    found = off_topic(pair.asked, pair.chosen, pair.rejected, rule, similarity, topics=pair.topics,
                      own=str(row.get("generation_id") or row.get("pair_id") or ""), context=pair.context)
    return (("chosen", found),) if found else NOTHING


def _repeated_item(pair: _Pair, rule: RepeatedItemRule):
    found = repeated_item(pair.chosen, rule)
    return (("chosen", found),) if found else NOTHING


def _rejected_kept(pair: _Pair, rule: RejectedKeptRule):
    found = rejected_kept(pair.chosen, pair.rejected, rule, pair.sources, pair.prompt)
    return (("chosen", found),) if found else NOTHING


def _refusal_not_improved(pair: _Pair, rule: RefusalNotImprovedRule):
    found = refusal_not_improved(pair.prompt, pair.chosen, pair.rejected, rule)
    return (("chosen", found),) if found else NOTHING


# (rule, its field in QualityRules, its check), in the order the filter applies them
CHECKS = tuple((name, _field(name), check) for name, check in (
    (FEW_SHOT_COPY, _copy), (CRITIQUE_ECHO, _echo), (REPETITION_LOOP, _loop), (META_COMMENT, _meta),
    (OFF_TOPIC, _off_topic), (REPEATED_ITEM, _repeated_item), (REJECTED_KEPT, _rejected_kept),
    (REFUSAL_NOT_IMPROVED, _refusal_not_improved)))


def flags(row: dict, rules: QualityRules, sources: CopySources | None = None, *, topics: Topics | None = None,
          first_only: bool = False) -> list[Flag]:
    """What every enabled rule finds in a pair row (TRL format plus `critiques`), in rule order.

    `sources` (the run's constitution texts) turns on the few-shot-copy and rejected-kept
    rules, `topics` (the run's other conversations) the off-topic rule.
    """
    prompt = _text(row.get("prompt"))
    pair = _Pair(row, topics.question(prompt) if topics else Text(prompt),
                 *(Text(_text(row.get(k))) for k in ("chosen", "rejected")), sources, topics)
    found: list[Flag] = []
    for name, field, check in CHECKS:
        rule = getattr(rules, field)
        if not rule.enabled:
            continue
        for field, detail in check(pair, rule):
            found.append(Flag(name, field, detail))
            if first_only:
                return found
    return found


def first_flag(row: dict, rules: QualityRules, sources: CopySources | None = None,
               topics: Topics | None = None) -> Flag | None:
    found = flags(row, rules, sources, topics=topics, first_only=True)
    return found[0] if found else None
