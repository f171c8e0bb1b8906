"""Short answers in canonical form, so that equal answers written differently count as one vote.

`final_answer` finds the line that states the answer; `normalize_answer` folds case, markup, quotes,
yes/no synonyms, number formats, path separators and call parentheses.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_ANSWER_LINE = re.compile(r"^(?:[-*>#\s]*)(?:the\s+)?(?:final\s+)?answer(?:\s+is)?\s*[:\-–—]?\s+(.+)$", re.I)
_YES = frozenset({"yes", "true", "correct", "yep", "yeah", "affirmative"})
_NO = frozenset({"no", "false", "incorrect", "nope", "negative"})
_NUMBER = re.compile(r"^[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)?(?:\.\d+)?(?:e[-+]?\d+)?$", re.I)
_QUOTES = "\"'“”‘’«»"
_TRAILING = ".,;:!?"


def final_answer(text: str) -> str:
    """The part of an answer that states the answer: an "Answer: ..." line, else the first line."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return ""
    for line in reversed(lines):
        match = _ANSWER_LINE.match(line.replace("*", "").replace("`", "").strip())
        if match:
            return match.group(1)
    return lines[0]


def normalize_answer(text: str) -> str:
    """A short answer in canonical form, so that equal answers written differently compare equal.

    `**Yes.**` -> "yes", "1,000" -> "1000", "2.0" -> "2", "./a\\b.py" -> "a/b.py", "`foo()`" -> "foo".
    """
    answer = final_answer(text)
    answer = answer.replace("```", "").replace("`", "").replace("**", "").replace("__", "")
    answer = re.sub(r"^(?:[-*+>]|#+)\s+", "", answer.strip())
    previous = None
    while previous != answer:
        previous = answer
        answer = answer.strip().strip(_QUOTES).rstrip(_TRAILING).strip()
        if len(answer) >= 2 and answer[0] == "*" and answer[-1] == "*":
            answer = answer[1:-1]
    answer = " ".join(answer.split()).casefold()
    # "Yes, it does" is a yes; "no such function" is not a no.
    first = re.match(r"^([a-z]+)(?:$|\s*[,.;:!—–-])", answer)
    if first and first.group(1) in _YES | _NO:
        return "yes" if first.group(1) in _YES else "no"
    number = _normalize_number(answer)
    if number is not None:
        return number
    if " " not in answer and ("/" in answer or "\\" in answer):
        answer = re.sub(r"/{2,}", "/", answer.replace("\\", "/"))
        while answer.startswith("./"):
            answer = answer[2:]
        if len(answer) > 1:
            answer = answer.rstrip("/")
    if re.fullmatch(r"[\w.:]+\(\)", answer):
        answer = answer[:-2]
    return answer


def _normalize_number(text: str) -> str | None:
    if not text or not _NUMBER.match(text) or not re.search(r"\d", text):
        return None
    try:
        value = Decimal(text.replace(",", ""))
    except InvalidOperation:
        return None
    if value == 0:
        return "0"
    return format(value.normalize(), "f")
