"""The swarm end to end on the bundled model: engine (degraded mode, cancellation), runner, chat, CLI.

Real parts throughout: the bundled SmolLM2-135M through llama.cpp, a real index of a small fixture
repository. The one stand-in is `_FailingBackend` below, a test double that plays a voter host which
is down or misses its deadline, so degraded mode can be checked deterministically.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from swarm_lsp.basics import CancellationToken
from swarm_lsp.config import load_settings
from swarm_lsp.models.base import (
    BackendInfo,
    BackendUnavailable,
    Candidate,
    GenerationRequest,
    GenerationTimeout,
    Message,
)
from swarm_lsp.models.llamacpp.backend import LlamaCppBackend
from swarm_lsp.swarm.engine import Cancelled, SwarmEngine, SwarmError
from swarm_lsp.swarm.runner import SwarmRunner
from swarm_lsp.swarm.tasks import Task, TextRange
from swarm_lsp.workspace import Workspace

pytestmark = pytest.mark.slow

FILES = {
    "web/routing.py": '''"""URL routing for the tiny web framework."""


def match_route(routes, path):
    """Return the handler registered for path, or None when no route matches."""
    for pattern, handler in routes:
        if pattern == path:
            return handler
    return None
''',
    "geometry/shapes.py": '''import math


def circle_area(radius):
    """The area of a circle."""
    return math.pi * radius * radius


class Rectangle:
    def __init__(self, width, height):
        self.width = width
        self.height = height

    def area(self):
        return self.width * self.height
''',
    "README.md": "# tiny\n\nA tiny web framework with routing and some geometry helpers.\n",
}
QUESTION = "Which file defines the function match_route?"
SHORT = [Message("user", "Say hello in one short sentence.")]
COUNTING = [Message("user", "Write the numbers from 1 to 1000, separated by commas.")]


class _FailingBackend:
    """Test double: a voter host that is down (`error`) or never answers in time (`timeout`)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.info = BackendInfo(
            backend="test-double", model=f"{mode}-host", context_length=2048, max_parallel=2
        )

    async def generate(self, request: GenerationRequest) -> list[Candidate]:
        if self.mode == "timeout":
            raise GenerationTimeout("deadline passed", partial=[])
        raise BackendUnavailable("connection refused by 127.0.0.1:9 (test double)")

    async def aclose(self) -> None:
        return None


@pytest.fixture(scope="module")
def model(bundled_gguf: Path) -> Iterator[LlamaCppBackend]:
    loaded = LlamaCppBackend(bundled_gguf, n_ctx=4096, n_seq_max=5, generation_reserve=192)
    yield loaded
    loaded.close()


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiny")
    for rel, text in FILES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


@pytest.fixture(scope="module")
def workspace(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    data = tmp_path_factory.mktemp("data")
    loaded = load_settings(
        repo,
        {"index": {"location": str(data), "embedder": "none"}},
        env={},
        user_file=data / "none.toml",
    )
    with Workspace(repo, loaded=loaded) as ws:
        ws.index()
        yield ws


def runner_for(model: LlamaCppBackend, workspace: Workspace, **options) -> SwarmRunner:
    options.setdefault("voters", 3)
    options.setdefault("max_tokens", 48)
    options.setdefault("context_length", model.info.context_length)
    return SwarmRunner(
        model,
        workspace.retriever,
        workspace.root,
        temperature=0.7,
        voter_timeout=120.0,
        **options,
    )


# ----------------------------------------------------------------------------------------- engine


async def test_voter_zero_is_greedy_and_the_rest_sample_with_distinct_seeds(model) -> None:
    engine = SwarmEngine([model], temperature=0.8, seed=11)
    samplings = engine.samplings(4)
    assert samplings[0].temperature == 0.0
    assert {s.temperature for s in samplings[1:]} == {0.8}
    assert len({s.seed for s in samplings[1:]}) == 3
    result = await engine.generate(SHORT, 4, max_tokens=24)
    assert [c.index for c in result.candidates] == [0, 1, 2, 3]
    assert not result.degraded and result.failures == []
    assert all(c.text.strip() for c in result.candidates)


@pytest.mark.parametrize("mode", ["timeout", "error"])
async def test_degraded_mode_votes_with_the_voters_that_finished(model, mode: str) -> None:
    engine = SwarmEngine([model, _FailingBackend(mode)], voter_timeout=30.0)
    result = await engine.generate(SHORT, 4, max_tokens=16)
    assert result.degraded
    assert result.voters_requested == 4
    assert 1 <= len(result.candidates) < 4
    assert all(c.backend.startswith("llama.cpp") or "llama" in c.backend for c in result.candidates)
    expected = "missed the 30s deadline" if mode == "timeout" else "connection refused"
    assert any(expected in failure for failure in result.failures), result.failures


async def test_real_deadline_with_no_voter_finished_is_an_error_that_says_why(model) -> None:
    engine = SwarmEngine([model], voter_timeout=0.5)
    with pytest.raises(SwarmError, match="deadline"):
        await engine.generate(COUNTING, 2, max_tokens=2000)


async def test_every_backend_failing_is_an_error_naming_each(model) -> None:
    engine = SwarmEngine([_FailingBackend("error"), _FailingBackend("timeout")])
    with pytest.raises(SwarmError, match=r"connection refused.*deadline|deadline.*connection refused"):
        await engine.generate(SHORT, 4, max_tokens=8)


async def test_cancelling_stops_every_voter_within_a_step(model) -> None:
    engine = SwarmEngine([model])
    cancel = CancellationToken()
    seen: list[int] = []

    def on_progress(event) -> None:
        seen.append(event.tokens)
        if event.tokens >= 5:
            cancel.cancel()

    with pytest.raises(Cancelled):
        await engine.generate(COUNTING, 3, max_tokens=2000, cancel=cancel, on_progress=on_progress)
    assert seen and max(seen) < 200
    # The model is usable right after.
    after = await engine.generate(SHORT, 2, max_tokens=8)
    assert len(after.candidates) == 2


async def test_task_cancellation_propagates_and_leaves_the_model_usable(model) -> None:
    engine = SwarmEngine([model])
    loop = asyncio.get_running_loop()
    decoding = asyncio.Event()

    def on_progress(event) -> None:  # called on the decoding thread
        if event.tokens:
            loop.call_soon_threadsafe(decoding.set)

    job = asyncio.ensure_future(engine.generate(COUNTING, 3, max_tokens=2000, on_progress=on_progress))
    await asyncio.wait_for(decoding.wait(), 120)  # cancel mid-decoding, once the first token is out
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    after = await engine.generate(SHORT, 1, max_tokens=8)
    assert after.candidates[0].finish_reason in ("stop", "length")


# ----------------------------------------------------------------------------------------- runner


async def test_ask_end_to_end_returns_an_answer_with_sources(model, workspace) -> None:
    runner = runner_for(model, workspace)
    result = await runner.run(Task(kind="ask", prompt=QUESTION))
    assert result.answer.strip()
    assert result.voters == 3 and len(result.candidates) == 3 and not result.degraded
    assert result.winner in {c.index for c in result.candidates}
    assert 0.0 <= result.agreement <= 1.0
    assert result.strategy in ("majority", "medoid")
    # The retrieved context cites the defining file; every source names real lines.
    assert any(source.startswith("web/routing.py:") for source in result.sources), result.sources
    for source in result.sources:
        if source.endswith(" (outline)"):  # a file's outline: a file-level source
            assert (workspace.root / source.removesuffix(" (outline)")).is_file()
            continue
        path, _, lines = source.rpartition(":")
        start, _, end = lines.partition("-")
        total = (workspace.root / path).read_text().count("\n") + 1
        assert 1 <= int(start) <= int(end) <= total
    assert set(result.timings) >= {"retrieve", "generate", "vote", "total"}


async def test_with_diversity_voters_after_the_first_read_their_own_ending(model, workspace) -> None:
    task = Task(kind="ask", prompt=QUESTION)
    plain = await runner_for(model, workspace, diversity=False).run(task)
    assert model.last_stats.variant_tokens == 0
    diverse = await runner_for(model, workspace, diversity=True).run(Task(kind="ask", prompt=QUESTION))
    stats = model.last_stats
    # One shared prompt evaluated once; voters 1 and 2 each evaluated their own tail beside it.
    assert stats.variant_tokens > 0 and stats.waves == 1
    assert stats.prompt_tokens == plain.prompt_tokens < diverse.prompt_tokens  # the longest a voter read
    # Voter 0 reads the same prompt either way: greedy, it writes the same answer.
    assert diverse.candidates[0].text == plain.candidates[0].text


async def test_a_context_the_estimate_undercounts_is_refitted_to_the_window(model, tmp_path) -> None:
    # Hex tables tokenize at about 2 characters a token: the 4-characters estimate undercounts them
    # by half, so a pack sized by the estimate alone would overflow a 1,024-token window.
    root = tmp_path / "dense"
    root.mkdir()
    for number in range(6):
        rows = "\n".join(
            f"    0x{(number * 997 + row * 31) % 65536:04x}, 0x{(row * 7919) % 65536:04x}, {row}.{number}e-3,"
            for row in range(60)
        )
        (root / f"table_{number}.py").write_text(f"CRC_TABLE_{number} = [\n{rows}\n]\n")
    loaded = load_settings(
        root,
        {"index": {"location": str(tmp_path / "data"), "embedder": "none"}},
        env={},
        user_file=tmp_path / "x",
    )
    with Workspace(root, loaded=loaded) as dense:
        dense.index()
        runner = SwarmRunner(
            model,
            dense.retriever,
            dense.root,
            context_length=1024,
            voters=2,
            max_tokens=24,
            temperature=0.7,
            voter_timeout=120.0,
            compress=False,
        )
        result = await runner.run(Task(kind="ask", prompt="Which table holds the CRC_TABLE_3 values?"))
    assert result.answer.strip() and len(result.candidates) == 2
    assert model.last_stats.prompt_tokens + 24 <= 1024


async def test_refactor_candidates_are_validated_and_an_invalid_one_never_wins(model, workspace) -> None:
    text = FILES["geometry/shapes.py"]
    task = Task(
        kind="refactor",
        prompt="Rename the function circle_area to area_of_circle.",
        path="geometry/shapes.py",
        range=TextRange(4, 6),
        file_text=text,
    )
    result = await runner_for(model, workspace, max_tokens=96).run(task)
    assert result.kind == "refactor"
    assert result.strategy == "exec"  # Python code: compiled and checked, not just compared
    invalid = {c.index for c in result.candidates if not c.valid}
    assert result.winner not in invalid
    if result.winner is None:
        assert result.edit is None and "no candidate was valid; nothing to apply" in result.notes
    else:
        assert result.edit is not None and result.edit.path == "geometry/shapes.py"
        assert result.edit.original_text == task.selection_text()


async def test_chat_second_turn_reuses_the_conversation_prefix(model, workspace) -> None:
    runner = runner_for(model, workspace, voters=2, max_tokens=32)
    first = await runner.run(Task(kind="chat", prompt="What does match_route return?", conversation_id="c1"))
    assert first.answer.strip()
    first_prompt = model.last_stats.prompt_tokens
    second = await runner.run(Task(kind="chat", prompt="And when nothing matches?", conversation_id="c1"))
    assert second.answer.strip()
    history = runner.conversations["c1"].history
    assert [m.role for m in history] == ["user", "assistant", "user", "assistant"]
    stats = model.last_stats
    # The second turn re-reads only its new tokens (the backend always re-evaluates the last 64
    # prompt tokens, see LlamaCppBackend._reusable_prefix), not the context and the first turn.
    assert stats.prompt_tokens > first_prompt
    assert stats.evaluated_prompt_tokens <= stats.prompt_tokens - first_prompt + 64 + 2
    assert stats.reused_tokens >= first_prompt - 64


async def test_a_chat_that_outgrows_the_window_leaves_out_its_oldest_turns(model, workspace) -> None:
    runner = runner_for(model, workspace, voters=1, max_tokens=40, context_length=900, compress=False)
    filler = "Please keep in mind that the routing table may hold many patterns and handlers. " * 6
    trimmed = []
    for turn in range(5):
        task = Task(
            kind="chat", prompt=f"Turn {turn}: {filler} What does match_route do?", conversation_id="long"
        )
        result = await runner.run(task)
        assert result.answer.strip()
        assert model.last_stats.prompt_tokens + 40 <= 900
        trimmed += [note for note in result.notes if "left out to fit" in note]
    assert trimmed, "five long turns cannot fit a 900-token window without leaving some out"
    history = runner.conversations["long"].history
    assert history[-2].content.startswith("Turn 4:") or "Turn 4:" in history[-2].content
    assert len(history) < 10


async def test_a_chat_turn_too_long_for_the_first_context_gets_a_context_that_fits(model, workspace) -> None:
    # Found by bench/soak.py: a second turn longer than the first (another file, a longer question)
    # no longer fit beside the first turn's context, and every voter failed on the window.
    runner = runner_for(model, workspace, voters=1, max_tokens=40, context_length=900, compress=False)
    first = await runner.run(Task(kind="chat", prompt="What does match_route do?", conversation_id="grow"))
    assert first.answer.strip()
    longer = "Please keep in mind that the routing table may hold many patterns and handlers. " * 36
    second = await runner.run(
        Task(kind="chat", prompt=f"{longer} So what does it return?", conversation_id="grow")
    )
    assert second.answer.strip()
    assert model.last_stats.prompt_tokens + 40 <= 900
    assert "this chat's context was chosen again to fit the model's window" in second.notes
    assert runner.conversations["grow"].history[-2].content.endswith("So what does it return?")


async def test_workspace_run_uses_the_configured_model(repo: Path, tmp_path: Path) -> None:
    loaded = load_settings(
        repo,
        {
            "index": {"location": str(tmp_path / "data"), "embedder": "none"},
            "model": {"name": "bundled", "context_length": 2048},
            "swarm": {"voters": 2, "max_tokens": 24},
        },
        env={},
        user_file=tmp_path / "none.toml",
    )
    workspace = Workspace(repo, loaded=loaded)
    try:
        workspace.index()
        result = await workspace.run(Task(kind="ask", prompt=QUESTION))
        assert result.voters == 2 and len(result.candidates) == 2
        assert "SmolLM2" in result.model
    finally:
        await workspace.aclose()


# --------------------------------------------------------------------------------------------- CLI


def test_cli_ask_json_schema(repo: Path, tmp_path: Path) -> None:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "SWARM_LSP_CACHE_DIR": str(tmp_path / "cache"),
        "SWARM_LSP_CONFIG_FILE": str(tmp_path / "none.toml"),
        "SWARM_LSP_INDEX__EMBEDDER": "none",
        "SWARM_LSP_MODEL__NAME": "bundled",
        "SWARM_LSP_MODEL__CONTEXT_LENGTH": "2048",
        "SWARM_LSP_SWARM__MAX_TOKENS": "24",
    }
    command = [sys.executable, "-m", "swarm_lsp", "ask", QUESTION, "--workspace", str(repo)]
    done = subprocess.run(
        [*command, "--voters", "3", "--json", "--show-candidates"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    expected = {
        "kind": str,
        "answer": str,
        "edit": type(None),
        "agreement": float,
        "low_agreement": bool,
        "strategy": str,
        "winner": int,
        "sources": list,
        "voters": int,
        "finished_voters": int,
        "degraded": bool,
        "notes": list,
        "timings": dict,
        "model": str,
        "prompt_tokens": int,
        "completion_tokens": int,
        "candidates": list,
        "placed": dict,
        "failed_nodes": list,
        "retried": int,
    }
    assert set(data) == set(expected)
    for key, kind in expected.items():
        assert isinstance(data[key], kind), (key, data[key])
    assert data["kind"] == "ask" and data["voters"] == 3 and data["finished_voters"] == 3
    assert sum(data["placed"].values()) == 3 and data["failed_nodes"] == [] and data["retried"] == 0
    candidate_keys = {
        "index",
        "text",
        "valid",
        "invalid_reason",
        "score",
        "votes",
        "finish_reason",
        "temperature",
        "completion_tokens",
        "backend",
        "model",
        "evidence",
    }
    assert all(set(c) == candidate_keys for c in data["candidates"])
    assert all(c["model"] == data["model"] for c in data["candidates"])
    for candidate in data["candidates"]:
        if candidate["valid"]:  # an ask is checked against the index: what checked out, per candidate
            assert set(candidate["evidence"]) == {"score", "supported", "neutral", "missing"}
    assert any(s.startswith("web/routing.py:") for s in data["sources"])

    bad = subprocess.run([*command, "--lines", "3-9"], capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode != 0 and "--lines needs --file" in bad.stderr
