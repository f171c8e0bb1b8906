"""What the fuzzers (tests/test_fuzz_*.py) share: their hypothesis settings and the awkward values
they generate (this module holds no tests).

Every fuzzer runs derandomized (a fixed seed per test, no example database), so a CI run is
reproducible and a failure is found again by the same command. `SWARM_FUZZ_SCALE=10` runs ten
times each fuzzer's examples for a longer local run (the examples of the suite's run come first).
The name is not SWARM_LSP_*: the servers the fuzzers start would refuse it as an unknown setting.
"""

from __future__ import annotations

import os
import string
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

SCALE_VARIABLE = "SWARM_FUZZ_SCALE"


def fuzz_scale() -> float:
    value = os.environ.get(SCALE_VARIABLE, "1")
    try:
        scale = float(value)
    except ValueError:
        raise ValueError(
            f"{SCALE_VARIABLE} must be a number (a multiple of the examples), got {value!r}"
        ) from None
    return max(scale, 0.01)


def fuzz_settings(examples: int, **overrides: Any) -> settings:
    """`examples` cases (times SWARM_FUZZ_SCALE), reproducible, no per-example deadline (the
    servers share two cores with the rest of the suite; a hang is caught by the clients' timeouts)."""
    return settings(
        max_examples=max(1, round(examples * fuzz_scale())),
        deadline=None,
        derandomize=True,
        database=None,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
        **overrides,
    )


# ------------------------------------------------------------------------------------------ strings

SPECIAL_STRINGS = (
    "",
    " ",
    "\x00",
    "a\x00b",
    "\r",
    "a\rb\rc",
    "a\r\nb",
    "\u2028\u2029",
    "\ufeff",
    "😀",
    "e\u0301",
    "\ud800",
    "\udfff",
    "../../../../etc/passwd",
    "/etc/passwd",
    "C:\\Windows\\system32",
    "file:///etc/passwd",
    "%2e%2e/%2e%2e/secret",
    "${HOME}",
    "$(touch pwned)",
    "`touch pwned`",
    "'; DROP TABLE files; --",
    '{"a": 1}',
    "null",
    "NaN",
    "-1",
    "9" * 40,
)
"""Values that have broken parsers, path checks and encoders elsewhere."""


def huge_strings(max_size: int = 1_000_000) -> st.SearchStrategy[str]:
    """One character repeated up to `max_size` times (cheap to make, expensive to mishandle)."""
    return st.builds(
        lambda char, size: char * size,
        st.sampled_from(["a", "é", "😀", "\n", "\r", "(", "\x00", " "]),
        st.integers(min_value=10_000, max_value=max_size),
    )


def nasty_strings(max_size: int = 60) -> st.SearchStrategy[str]:
    """Short strings from the whole of Unicode (lone surrogates too), specials, printable text."""
    return st.one_of(
        st.sampled_from(SPECIAL_STRINGS),
        st.text(max_size=max_size),
        st.text(alphabet=st.characters(exclude_categories=()), max_size=max_size),
        st.text(alphabet=string.printable, max_size=max_size),
    )


def integers_at_the_edges() -> st.SearchStrategy[int]:
    return st.one_of(
        st.sampled_from([0, 1, -1, 2**31 - 1, 2**31, -(2**31), 2**53 + 1, 2**63, -(2**63) - 1, 10**30]),
        st.integers(min_value=-5, max_value=300),
    )


def json_scalars() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.none(),
        st.booleans(),
        integers_at_the_edges(),
        st.floats(allow_nan=False, allow_infinity=False),
        nasty_strings(),
    )


def json_values(max_leaves: int = 12) -> st.SearchStrategy[Any]:
    """Any JSON value, small: scalars, lists and objects nested a few levels."""
    return st.recursive(
        json_scalars(),
        lambda children: st.one_of(
            st.lists(children, max_size=4),
            st.dictionaries(nasty_strings(12), children, max_size=4),
        ),
        max_leaves=max_leaves,
    )


def deep_json(depth: int) -> str:
    """JSON text of an array nested `depth` levels deep (parsers that recurse fail on these)."""
    return "[" * depth + "0" + "]" * depth
