"""Redaction: what is safe to log or show. Secret-looking keys and values are replaced, long text is
reduced to its length and hash.

One rule for every place that shows what a user or a tool sent: the MCP audit log, the dashboard's
settings and request views.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

REDACTED = "[redacted]"
LONG_TEXT_CHARS = 240
"""Strings longer than this are logged as their length and hash, never their text."""

_SECRET_KEY = re.compile(
    r"(?i)(pass(word|wd|phrase)?|secret|token|api[_-]?key|apikey|auth(orization)?|credential|"
    r"private[_-]?key|access[_-]?key|session[_-]?key|cookie)"
)
_SECRET_VALUES = [
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(-----END [A-Z ]*PRIVATE KEY-----|$)", re.S),
    re.compile(r"\b(sk|pk|rk)-[A-Za-z0-9_-]{16,}"),  # OpenAI, Stripe, Anthropic style
    re.compile(r"\bgh[pousr]_[A-Za-z0-9]{20,}\b"),  # GitHub tokens
    re.compile(r"\bgithub_pat_[A-Za-z0-9_]{20,}\b"),
    re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),  # AWS access key ids
    re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}\b"),  # Slack
    re.compile(r"\bAIza[0-9A-Za-z_-]{30,}\b"),  # Google API keys
    re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\b"),  # JWTs
    re.compile(r"(?i)(?<=bearer )[A-Za-z0-9._~+/=-]{8,}"),
    re.compile(r"(?<=://)[^/\s:@]+:[^/\s@]+(?=@)"),  # user:password@ in URLs
]
_SECRET_NAME = (
    r"[A-Za-z0-9_.-]*(?:pass(?:word|wd)?|secret|token|api[_-]?key|apikey|credential)[A-Za-z0-9_.-]*"
)
_ASSIGNMENT = re.compile(
    rf"(?i)(?<![\w-])((?:--?)?{_SECRET_NAME})(\s*[=:]\s*)(\"[^\"]*\"|'[^']*'|[^\s\"';&|]+)"
)
_FLAG = re.compile(rf"(?i)(?<![\w-])(--?{_SECRET_NAME})(\s+)(\"[^\"]*\"|'[^']*'|[^\s\"';&|-][^\s\"';&|]*)")
_OPAQUE = re.compile(r"[A-Za-z0-9+_=-]{32,}")


def is_secret_key(key: str) -> bool:
    """Whether a value stored under `key` (a setting, an argument name) is a secret."""
    return bool(_SECRET_KEY.search(key))


def redact(value: Any, key: str = "") -> Any:
    """A copy of `value` safe to log: secrets replaced, long text summarised."""
    if key and is_secret_key(key):
        return REDACTED
    if isinstance(value, dict):
        return {str(k): redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        # An argv: the item after a secret-looking flag (`--token VALUE`) is the secret.
        after_flag = [
            isinstance(prev, str) and bool(re.fullmatch(rf"(?i)--?{_SECRET_NAME}", prev)) for prev in value
        ]
        return [REDACTED if i and after_flag[i - 1] else redact(item) for i, item in enumerate(value)]
    if isinstance(value, str):
        return _redact_text(value)
    return value


def _redact_text(text: str) -> str:
    if len(text) > LONG_TEXT_CHARS:
        digest = hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()[:16]
        return f"<{len(text)} chars, sha256 {digest}>"
    return redact_message(text)


def redact_message(text: str) -> str:
    """`text` with secret-looking values replaced (its length kept as it is: for error messages)."""
    for pattern in _SECRET_VALUES:
        text = pattern.sub(REDACTED, text)
    for pattern in (_ASSIGNMENT, _FLAG):
        text = pattern.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
    return _OPAQUE.sub(lambda m: REDACTED if _looks_random(m.group(0)) else m.group(0), text)


def _looks_random(token: str) -> bool:
    """A long run mixing lower case, upper case and digits reads as a key, not a word or a path."""
    classes = sum(
        (any(c.islower() for c in token), any(c.isupper() for c in token), any(c.isdigit() for c in token))
    )
    return classes == 3
