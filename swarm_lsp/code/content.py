"""Whether a file's bytes are text at all: the first question before any language is detected."""

from __future__ import annotations

_TEXT_BYTES = bytes(range(32, 127)) + b"\n\r\t\f\b" + bytes(range(128, 256))


def is_probably_binary(head: bytes) -> bool:
    """NUL bytes, or mostly non-text bytes, in the first few KiB."""
    if not head:
        return False
    if b"\0" in head:
        return True
    # Control bytes other than common whitespace count as non-text; bytes >= 128 may be UTF-8.
    non_text = len(head.translate(None, _TEXT_BYTES))
    return non_text / len(head) > 0.3
