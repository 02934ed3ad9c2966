"""Likely secrets taken out of source text before it is written anywhere (the dataset export).

Two passes, each replacing what it finds with ``[REDACTED]``:

1. Patterns for what must go whole: private key blocks (BEGIN to END, across lines), values assigned to
   names that say password / secret / token / api key / access key / auth (``=``, ``:``, ``:=``, ``=>``,
   keyword arguments), and well-known token shapes (GitHub, OpenAI / Anthropic style ``sk-``, AWS access
   key ids, Google API keys, Slack tokens, JWTs).
2. Yelp's ``detect-secrets`` (a maintained detector: its keyword, entropy and provider plugins with their
   own false-positive filters) on every line of the result, with its default settings.

Redaction errs on the side of removing too much: a high-entropy identifier may go too.  If
``detect-secrets`` is not installed, ``redact`` raises ``RedactionUnavailable`` rather than write text
that only the patterns looked at.
"""

from __future__ import annotations

import re
from typing import Any

MARK = "[REDACTED]"

_PRIVATE_KEY = re.compile(
    r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY( BLOCK)?-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY( BLOCK)?-----|\Z)",
    re.DOTALL,
)
_NAME = r"[\w.-]*(?:password|passwd|passphrase|pwd|secret|token|api[_-]?key|apikey|access[_-]?key|auth|credential)[\w.-]*"
# name = "value" / name: 'value' / name => "value" / name="value" (keyword argument); the quotes stay.
_ASSIGNED = re.compile(rf"(?i)(\b{_NAME}[\"']?\s*(?:=|:=|:|=>)\s*)([\"'])([^\"'\n]{{3,}})\2")
# name = value without quotes (.env files, shell, YAML): up to the end of the line or a space.
_BARE = re.compile(rf"(?i)^(\s*(?:export\s+)?{_NAME}\s*[=:]\s*)([^\s\"'#][^\s#]{{5,}})", re.MULTILINE)
_TOKENS = re.compile(
    r"\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}"
    r"|sk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}"
    r"|AKIA[0-9A-Z]{16}|ASIA[0-9A-Z]{16}"
    r"|AIza[0-9A-Za-z_-]{35}"
    r"|xox[abposr]-[A-Za-z0-9-]{10,}"
    r"|eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,})"
)
MIN_DETECTED = 6  # shorter values found by detect-secrets are parts of a match, not the secret


class RedactionUnavailable(RuntimeError):
    """The secret detector library is missing: nothing should be written."""


def redact_patterns(text: str) -> str:
    """Only the first pass (no detector library, cheap): for messages built on the request path, such as a
    model's error text shown to the user."""
    return _patterns(text)


def _patterns(text: str) -> str:
    text = _PRIVATE_KEY.sub(MARK, text)
    text = _ASSIGNED.sub(lambda m: f"{m.group(1)}{m.group(2)}{MARK}{m.group(2)}", text)
    text = _BARE.sub(lambda m: f"{m.group(1)}{MARK}", text)
    return _TOKENS.sub(MARK, text)


def _detector() -> Any:
    try:
        from detect_secrets.core.scan import _process_line_based_plugins
        from detect_secrets.settings import default_settings
    except ImportError:
        raise RedactionUnavailable(
            "redacting secrets needs detect-secrets: pip install detect-secrets"
        ) from None
    return _process_line_based_plugins, default_settings


def redact(text: str | None) -> str | None:
    """``text`` with likely secrets replaced by ``[REDACTED]`` (None stays None)."""
    if not text:
        return text
    scan, default_settings = _detector()
    text = _patterns(text)
    lines = text.split("\n")
    with default_settings():
        # detect-secrets' line scanner with its filters and entropy limits (scan_line, its ad-hoc entry
        # point, reports every candidate string regardless of entropy).
        found = list(scan(list(enumerate(lines, 1)), "snippet.py"))
    for secret in found:
        value = secret.secret_value
        if value and len(value) >= MIN_DETECTED and MARK not in value:
            index = secret.line_number - 1
            lines[index] = lines[index].replace(value, MARK)
    return "\n".join(lines)
