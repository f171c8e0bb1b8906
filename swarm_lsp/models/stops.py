"""Stop strings: where one begins in generated text, and how much text to hold back while streaming.

Shared by the backends that decode locally (llama.cpp, MLX); a remote server cuts its own.
"""

from __future__ import annotations

from collections.abc import Sequence


def find_stop(text: str, stops: Sequence[str], start: int = 0) -> int | None:
    """Where the earliest stop string begins in text[start:], or None."""
    found = [position for stop in stops if (position := text.find(stop, start)) != -1]
    return min(found) if found else None


def stop_prefix_length(text: str, stops: Sequence[str]) -> int:
    """The length of the longest end of `text` that could still grow into a stop string.

    Streaming holds that much back so that text sent to on_token is never taken back.
    """
    longest = 0
    for stop in stops:
        for length in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:length]):
                longest = length
                break
    return longest
