"""The swarm tools through the MCP client, on the bundled model (2 voters, 32 tokens each): a voted
answer with agreement and sources, progress while the voters run, and propose_refactor returning a
diff (or saying no valid edit won) without writing anything."""

from __future__ import annotations

import pytest
from test_mcp_support import FILES, Bench, audit, connect, text

pytestmark = pytest.mark.slow


@pytest.fixture
async def toolbox(tmp_path, bundled_gguf):
    bench = Bench(tmp_path)
    yield bench.toolbox()
    await bench.aclose()


async def test_swarm_tools_answer_by_vote_and_write_nothing(toolbox):
    root = toolbox.workspace.root
    before = (root / "pkg" / "greeting.py").read_text()
    updates: list[str | None] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        updates.append(message)

    async with connect(toolbox) as client:
        asked = await client.call_tool(
            "ask_swarm",
            {"question": "Which function says hello?", "voters": 2},
            progress_callback=on_progress,
        )
        explained = await client.call_tool(
            "explain_code", {"path": "pkg/greeting.py", "start_line": 4, "end_line": 6}
        )
        proposed = await client.call_tool(
            "propose_refactor",
            {
                "path": "pkg/greeting.py",
                "start_line": 4,
                "end_line": 6,
                "instruction": "rename greet to salute",
            },
        )
        secret = await client.call_tool("ask_swarm", {"question": "What is the API_KEY in the .env file?"})
        bad_range = await client.call_tool(
            "propose_refactor",
            {"path": "pkg/greeting.py", "start_line": 90, "end_line": 95, "instruction": "x"},
        )

    assert not asked.is_error, text(asked)
    data = asked.structured_content
    assert data["kind"] == "ask" and 0.0 <= data["agreement"] <= 1.0
    assert data["voters"] == 2 and data["finished_voters"] >= 1
    assert data["sources"] and any(source.startswith("pkg/") for source in data["sources"])
    # "agreement 0.xx", or "LOW AGREEMENT: ..." when the voters differ (as two voters may).
    assert "agreement" in text(asked).lower() and "sources:" in text(asked)
    assert any(message and message.startswith("generating") for message in updates), updates

    assert not explained.is_error and explained.structured_content["kind"] == "explain"

    # The 135M model may or may not produce a valid edit; either way nothing is written.
    if proposed.is_error:
        assert "no valid refactoring" in text(proposed)
    else:
        diff = proposed.structured_content["diff"]
        assert diff.startswith("--- a/pkg/greeting.py\n+++ b/pkg/greeting.py\n@@")
        assert "Nothing was written" in text(proposed)
    assert (root / "pkg" / "greeting.py").read_text() == before == FILES["pkg/greeting.py"]
    assert bad_range.is_error and "past its end" in text(bad_range)
    # Whether or not retrieval put .env in the context, its value never reaches the client.
    assert "secretvalue1234567890" not in text(secret)
    assert secret.is_error or ".env" not in str(secret.structured_content["sources"])
    assert [entry["tool"] for entry in audit(toolbox)] == [
        "ask_swarm",
        "explain_code",
        "propose_refactor",
        "ask_swarm",
        "propose_refactor",
    ]


async def test_propose_refactor_without_a_path_renames_every_reference_and_applies_on_request(tmp_path):
    bench = Bench(tmp_path)
    toolbox = bench.toolbox(write="allow")
    root = toolbox.workspace.root
    try:
        async with connect(toolbox) as client:
            proposed = await client.call_tool("propose_refactor", {"instruction": "rename greet to salute"})
            unchanged = {rel: (root / rel).read_text() for rel in ("pkg/greeting.py", "pkg/uses.py")}
            applied = await client.call_tool(
                "propose_refactor", {"instruction": "rename greet to salute", "apply": True}
            )
            unknown = await client.call_tool("propose_refactor", {"instruction": "rename nothing_here to x"})
    finally:
        await bench.aclose()
    assert not proposed.is_error, text(proposed)
    data = proposed.structured_content
    assert "+++ b/pkg/greeting.py" in data["diff"] and "+++ b/pkg/uses.py" in data["diff"]
    (radius,) = data["blast_radius"]
    assert radius["certain"] == 3 and radius["files"] == ["pkg/greeting.py", "pkg/uses.py"]
    assert data["check"]["broken"] is False and "imports" in data["check"]["summary"]
    assert unchanged == {rel: FILES[rel] for rel in unchanged}, "without apply nothing is written"
    assert not applied.is_error and applied.structured_content["applied"] is True, text(applied)
    assert "def salute(name):" in (root / "pkg/greeting.py").read_text()
    assert "from pkg.greeting import Registry, salute" in (root / "pkg/uses.py").read_text()
    assert unknown.is_error and "no definition of nothing_here" in text(unknown)
    entries = audit(toolbox)
    assert [(entry["tool"], entry["tier"]) for entry in entries][:2] == [
        ("propose_refactor", "write"),
        ("propose_refactor", "write"),
    ]
