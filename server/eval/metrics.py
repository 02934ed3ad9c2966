"""Quality of one completion against the held-out truth.

Every metric is in [0, 1], higher is better except ``empty``; each compares the suggestion as the editor
would show it with the text that really followed, both with surrounding whitespace stripped (a trailing
space or newline is not a difference anyone sees):

- ``exact_match``: the suggestion is the truth;
- ``edit_similarity``: 1 - Levenshtein distance / the longer length (rapidfuzz), 1.0 when both are empty;
- ``identifier_f1``: F1 of the multisets of identifiers (keywords excluded), the measure of whether the
  right names were used even when the punctuation differs; 1.0 when neither has any;
- ``first_line_match``: the first lines are equal (a one-line accept);
- ``empty``: no suggestion at all;
- ``accepted_share``: the share of the truth that a person about to type it would take from the suggestion
  (whole, or up to a word or line boundary, as ``opportune.server.eval.typing.accept_length`` decides): the bridge
  from offline quality to accepted characters.
"""

from __future__ import annotations

import keyword
import re
from collections import Counter
from dataclasses import asdict, dataclass, fields

from rapidfuzz.distance import Levenshtein

from opportune.server.eval.typing import accept_length

_IDENTIFIER = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*")
# Words that are syntax rather than names, per language (Python's own list, plus the C-family ones).
KEYWORDS: dict[str, frozenset[str]] = {
    "python": frozenset(keyword.kwlist) | frozenset(keyword.softkwlist),
    "javascript": frozenset(
        [
            "break",
            "case",
            "catch",
            "class",
            "const",
            "continue",
            "debugger",
            "default",
            "delete",
            "do",
            "else",
            "export",
            "extends",
            "false",
            "finally",
            "for",
            "function",
            "if",
            "import",
            "in",
            "instanceof",
            "let",
            "new",
            "null",
            "return",
            "super",
            "switch",
            "this",
            "throw",
            "true",
            "try",
            "typeof",
            "undefined",
            "var",
            "void",
            "while",
            "with",
            "yield",
            "async",
            "await",
            "of",
            "static",
            "get",
            "set",
        ]
    ),
}
KEYWORDS["typescript"] = KEYWORDS["javascript"] | frozenset(
    [
        "interface",
        "type",
        "enum",
        "implements",
        "private",
        "protected",
        "public",
        "readonly",
        "declare",
        "namespace",
        "abstract",
        "as",
    ]
)
KEYWORDS["tsx"] = KEYWORDS["typescript"]


@dataclass(frozen=True)
class Scores:
    exact_match: float
    edit_similarity: float
    identifier_f1: float
    first_line_match: float
    empty: float
    accepted_share: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


METRIC_NAMES: tuple[str, ...] = tuple(f.name for f in fields(Scores))
# Metrics where lower is better (the report's arrows and verdicts follow this).
LOWER_IS_BETTER = frozenset({"empty"})


def identifiers(text: str, language: str | None = None) -> list[str]:
    skip = KEYWORDS.get(language or "", frozenset())
    return [w for w in _IDENTIFIER.findall(text) if w not in skip]


def identifier_f1(prediction: str, truth: str, language: str | None = None) -> float:
    predicted = Counter(identifiers(prediction, language))
    expected = Counter(identifiers(truth, language))
    if not predicted and not expected:
        return 1.0
    common = sum((predicted & expected).values())
    if common == 0:
        return 0.0
    precision = common / sum(predicted.values())
    recall = common / sum(expected.values())
    return 2 * precision * recall / (precision + recall)


def edit_similarity(prediction: str, truth: str) -> float:
    if not prediction and not truth:
        return 1.0
    return float(Levenshtein.normalized_similarity(prediction, truth))


def _first_line(text: str) -> str:
    return text.split("\n", 1)[0].rstrip()


def score(prediction: str, truth: str, language: str | None = None) -> Scores:
    p, t = prediction.strip(), truth.strip()
    share = accept_length(prediction, truth) / len(truth) if truth else 0.0
    return Scores(
        exact_match=float(p == t),
        edit_similarity=edit_similarity(p, t),
        identifier_f1=identifier_f1(p, t, language),
        first_line_match=float(bool(p) and _first_line(p) == _first_line(t)),
        empty=float(not p),
        accepted_share=min(1.0, share),
    )
