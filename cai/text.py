"""Small text helpers: clean-ups applied to model output, and numbers shown to people."""

from __future__ import annotations

import math
import re

# "Sure, here is the revised response:", "Revised response:", "Here's a rewritten version:" ...
_PREAMBLE = re.compile(
    r"""^\s*
    (?:(?:sure|certainly|of\ course|okay|ok|absolutely|alright)[,!.]?\s*)?
    (?:
        (?:here(?:'s|\ is|\ are)|below\ is|this\ is)\s+(?:the\s+|a\s+|my\s+|an\s+)?
        (?:revised|rewritten|updated|improved|new|edited|corrected|safer)\s+
        (?:response|version|answer|reply|text)[^:\n]{0,60}
      |
        (?:revised|rewritten|updated|improved)\s+(?:response|version|answer|reply)
      |
        revision
    )
    \s*[:.\-]\s*\n?
    """,
    re.IGNORECASE | re.VERBOSE,
)
_WRAPPING_QUOTES = re.compile(r'^\s*"(.*)"\s*$', re.DOTALL)


def strip_preamble(text: str) -> tuple[str, bool]:
    """Drop a leading "here is the revised response:" line; say whether one was there."""
    match = _PREAMBLE.match(text)
    if not match or not text[match.end():].strip():
        return text.strip(), False
    body = text[match.end():].strip()
    quoted = _WRAPPING_QUOTES.match(body)
    return (quoted.group(1).strip() if quoted else body), True


def has_preamble(text: str) -> bool:
    return strip_preamble(text)[1]


def format_number(value, spec: str = ".3f", missing: str = "-") -> str:
    """`value` formatted with `spec`; None and NaN (an undefined statistic) show as `missing`."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return missing
    return format(value, spec)


def normalize(text: str) -> str:
    """Lower-cased, whitespace collapsed: the form texts are compared in."""
    return re.sub(r"\s+", " ", text).strip().lower()
