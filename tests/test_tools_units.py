"""The tool modules on their own: tiers and policy, patches, redaction, the result cache, and the
destructive-command patterns."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from swarm_lsp.config import ConfigError, ToolSettings
from swarm_lsp.redaction import redact
from swarm_lsp.tools.audit import AuditLog, read_audit
from swarm_lsp.tools.cache import ResultCache
from swarm_lsp.tools.patch import PatchError, apply_file_patch, parse_patch
from swarm_lsp.tools.registry import Annotations, Output, Policy, Tier, Tool
from swarm_lsp.tools.shell import destructive_match


def _tool(name: str, tier: Tier, escalates_to: Tier | None = None) -> Tool:
    return Tool(
        name, tier, "test", {"type": "object"}, prepare=lambda env, args: None, escalates_to=escalates_to
    )


# ----------------------------------------------------------------------------------- tiers


@pytest.mark.parametrize(
    ("tier", "escalates", "expected"),
    [
        (Tier.READ, None, Annotations(read_only=True, destructive=False, idempotent=True)),
        (Tier.WRITE, None, Annotations(read_only=False, destructive=False, idempotent=False)),
        (Tier.WRITE, Tier.DESTRUCTIVE, Annotations(read_only=False, destructive=True, idempotent=False)),
        (Tier.EXECUTE, None, Annotations(read_only=False, destructive=False, idempotent=False)),
        (Tier.DESTRUCTIVE, None, Annotations(read_only=False, destructive=True, idempotent=False)),
    ],
)
def test_annotations_follow_from_the_tier(tier, escalates, expected):
    assert _tool("t", tier, escalates).annotations == expected
    assert expected.open_world is False


def test_policy_rules_per_tier_per_tool_and_escalation():
    settings = ToolSettings(
        write="allow", destructive="ask", per_tool={"write_file": "allow", "grep": "deny"}
    )
    policy = Policy(settings, ["write_file", "grep", "edit_file"])
    write_file = _tool("write_file", Tier.WRITE, Tier.DESTRUCTIVE)
    assert policy.rule(write_file, Tier.WRITE) == ("allow", "tools.per_tool.write_file = allow")
    # Allowing the tool does not allow its destructive calls: the stricter rule wins.
    assert policy.rule(write_file, Tier.DESTRUCTIVE) == ("ask", "tools.destructive = ask")
    assert policy.rule(_tool("grep", Tier.READ), Tier.READ) == ("deny", "tools.per_tool.grep = deny")
    assert policy.rule(_tool("edit_file", Tier.WRITE), Tier.WRITE) == ("allow", "tools.write = allow")
    denied = Policy(ToolSettings(destructive="allow", per_tool={"write_file": "deny"}), ["write_file"])
    assert denied.rule(write_file, Tier.DESTRUCTIVE)[0] == "deny"


def test_policy_defaults_and_read_only():
    settings = ToolSettings()
    assert (settings.read, settings.write, settings.execute, settings.destructive) == (
        "allow",
        "ask",
        "ask",
        "ask",
    )
    policy = Policy(settings.model_copy(update={"read_only": True}))
    assert policy.listed(_tool("a", Tier.READ)) and not policy.listed(_tool("b", Tier.WRITE))


def test_policy_names_unknown_tools_in_settings():
    with pytest.raises(ConfigError, match=r"unknown tool.*rm_everything.*known tools: read_file"):
        Policy(ToolSettings(per_tool={"rm_everything": "allow"}), ["read_file"])


# --------------------------------------------------------------------------------- patches


def test_patch_applies_moved_hunks_creates_and_deletes():
    original = "a\nb\nc\nd\ne\n"
    shifted = "new top\n" + original  # the hunk now matches one line lower than it says
    [patch] = parse_patch("--- a/f.txt\n+++ b/f.txt\n@@ -2,3 +2,3 @@\n b\n-c\n+C\n d\n")
    assert apply_file_patch(original, patch) == "a\nb\nC\nd\ne\n"
    assert apply_file_patch(shifted, patch) == "new top\na\nb\nC\nd\ne\n"
    [create] = parse_patch("--- /dev/null\n+++ b/new.py\n@@ -0,0 +1,2 @@\n+x = 1\n+y = 2\n")
    assert create.creates and apply_file_patch(None, create) == "x = 1\ny = 2\n"
    [delete] = parse_patch("--- a/old.py\n+++ /dev/null\n@@ -1 +0,0 @@\n-x = 1\n")
    assert delete.deletes and apply_file_patch("x = 1\n", delete) is None


def test_patch_keeps_crlf_and_the_missing_final_newline():
    [patch] = parse_patch("--- a/f\n+++ b/f\n@@ -1,2 +1,2 @@\n one\n-two\n\\ No newline at end of file\n+2\n")
    assert apply_file_patch("one\r\ntwo", patch) == "one\r\n2\r\n"
    [keep] = parse_patch("--- a/f\n+++ b/f\n@@ -1,2 +1,2 @@\n-one\n+1\n two\n\\ No newline at end of file\n")
    assert apply_file_patch("one\ntwo", keep) == "1\ntwo"


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ("just some text", "no file changes found"),
        ("--- a/f\n+++ b/f\n", "has no hunks"),
        ("--- a/f\n+++ b/f\n@@ -1,2 +1,2 @@\n a\n", "counts in its header"),
        ("rename from a\nrename to b\n", "renames and copies are not supported"),
    ],
)
def test_bad_patches_say_what_is_wrong(patch, message):
    with pytest.raises(PatchError, match=message):
        parse_patch(patch)


def test_a_hunk_that_matches_nowhere_is_refused():
    [patch] = parse_patch("--- a/f\n+++ b/f\n@@ -1 +1 @@\n-missing\n+x\n")
    with pytest.raises(PatchError, match="does not match the file near line 1"):
        apply_file_patch("present\n", patch)


# ------------------------------------------------------------------------------- redaction


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("password reset flow", "password reset flow"),
        ("API_KEY=sk-abcdefghijklmnop1234 make", "API_KEY=[redacted] make"),
        ("curl -H 'Authorization: Bearer abcdefgh12345678'", "curl -H 'Authorization: Bearer [redacted]'"),
        (
            "git clone https://user:hunter2@example.com/r.git",
            "git clone https://[redacted]@example.com/r.git",
        ),
        ("export GITHUB_TOKEN=ghp_abcdefghijklmnopqrstuvwx", "export GITHUB_TOKEN=[redacted]"),
        ("mysql --password hunter2 -u root", "mysql --password [redacted] -u root"),
        ("packages/MyApp2/src/Components/Button.tsx", "packages/MyApp2/src/Components/Button.tsx"),
        ("id Xy7aB9kLmN0pQrStUvWxYz1234567890AbCd", "id [redacted]"),
    ],
)
def test_redaction_of_strings(value, expected):
    assert redact(value) == expected


def test_redaction_of_keys_lists_and_long_text():
    redacted = redact(
        {"api_key": "x", "nested": {"Password": "y", "q": "ok"}, "argv": ["--token", "abc", "-v"]}
    )
    assert redacted == {
        "api_key": "[redacted]",
        "nested": {"Password": "[redacted]", "q": "ok"},
        "argv": ["--token", "[redacted]", "-v"],
    }
    long = "secret stuff " * 100
    summary = redact({"content": long})["content"]
    assert summary.startswith(f"<{len(long)} chars, sha256 ") and "secret stuff" not in summary


def test_audit_log_appends_lines_and_skips_a_torn_one(tmp_path):
    log = AuditLog(tmp_path / "deep" / "audit.jsonl")
    log.append({"tool": "a"})
    with log.path.open("a") as handle:
        handle.write('{"tool": "torn')  # a line cut short by a crash
    log.append({"tool": "b"})
    assert [entry["tool"] for entry in read_audit(log.path)] == ["a"]
    assert oct(log.path.stat().st_mode & 0o777) == "0o600"
    assert list(read_audit(tmp_path / "missing.jsonl")) == []


# ----------------------------------------------------------------------------------- cache


def test_cache_drops_entries_when_a_file_or_the_index_changes(tmp_path):
    path = tmp_path / "f.txt"
    path.write_text("one")
    cache = ResultCache(max_entries=10)
    stamps = cache.stamps([path])
    cache.put("read", Output("one"), stamps, index_backed=False, generation=cache.generation)
    cache.put("search", Output("hits"), {}, index_backed=True, generation=cache.generation)
    assert cache.get("read").text == "one" and cache.get("search").text == "hits"
    path.write_text("two!")
    assert cache.get("read") is None
    cache.index_changed()
    assert cache.get("search") is None
    generation = cache.generation
    cache.index_changed()  # a sync finished while the result was being computed: never stored
    cache.put("late", Output("x"), {}, index_backed=True, generation=generation)
    assert cache.get("late") is None


def test_cache_is_bounded_and_evicts_the_least_recently_used(tmp_path):
    cache = ResultCache(max_entries=3, max_bytes=1000)
    for key in "abc":
        cache.put(key, Output(key * 10), {}, False, 0)
    assert cache.get("a") is not None  # a is now the most recent
    cache.put("d", Output("d"), {}, False, 0)
    assert cache.get("b") is None and len(cache) == 3
    cache.put("huge", Output("x" * 600), {}, False, 0)  # over a quarter of the byte budget: not kept
    assert cache.get("huge") is None
    cache.put("e", Output("e" * 240), {}, False, 0)
    cache.put("f", Output("f" * 240), {}, False, 0)
    cache.put("g", Output("g" * 240), {}, False, 0)
    cache.put("h", Output("h" * 240), {}, False, 0)
    assert sum(len(cache.get(k).text) for k in "fgh") == 720 and cache.get("e") is None


def test_cache_invalidates_by_path(tmp_path):
    path = tmp_path / "f.txt"
    path.write_text("x")
    cache = ResultCache()
    cache.put("k", Output("x"), cache.stamps([path]), False, 0)
    cache.invalidate_paths([path])
    assert cache.get("k") is None


# ---------------------------------------------------------------------- destructive commands


@pytest.mark.parametrize(
    "command",
    [
        "rm -rf build",
        "rm file.txt",
        "find . -name '*.pyc' -delete",
        "ls | xargs rm",
        "git reset --hard HEAD~1",
        "git clean -fdx",
        "git push --force origin main",
        "git push -f",
        "git push origin +main",
        "git checkout -- .",
        "git branch -D feature",
        "git stash drop",
        "cd src && rm -r old",
        "sudo rm x",
        "dd if=/dev/zero of=disk.img",
        "chmod -R 777 .",
    ],
)
def test_destructive_commands_are_recognised(command):
    assert destructive_match(command) is not None


@pytest.mark.parametrize(
    "command",
    [
        "ls -la",
        "git status",
        "git push origin main",
        "pytest -q",
        "echo firm",
        "git checkout main",
        "grep -r rm .",
    ],
)
def test_ordinary_commands_are_not_destructive(command):
    assert destructive_match(command) is None


def test_extra_destructive_patterns_from_settings():
    assert destructive_match("make deploy-prod", (r"\bdeploy-prod\b",)) is not None


def test_settings_file_configures_the_tools(tmp_path: Path):
    from swarm_lsp.config import load_settings

    (tmp_path / ".swarm-lsp.toml").write_text(
        '[tools]\nwrite = "allow"\nread_only = true\n[tools.per_tool]\nrun_command = "deny"\n'
    )
    settings = load_settings(tmp_path, env={}, user_file=tmp_path / "none.toml").settings.tools
    assert settings.write == "allow" and settings.read_only and settings.per_tool == {"run_command": "deny"}
    with pytest.raises(ConfigError, match=r"tools.per_tool = 'sometimes' is invalid"):
        load_settings(
            tmp_path,
            env={"SWARM_LSP_TOOLS__PER_TOOL": '{ run_command = "sometimes" }'},
            user_file=tmp_path / "x",
        )
    assert os.environ.get("SWARM_LSP_TOOLS__WRITE") is None


def test_the_approval_form_is_a_valid_elicitation_schema():
    import mcp_types as types

    from swarm_lsp.mcp.server import APPROVAL_SCHEMA

    form = types.ElicitRequestFormParams(message="run it?", requested_schema=APPROVAL_SCHEMA)
    assert form.requested_schema["required"] == ["approve"]


def test_git_prefixes_are_dropped_only_when_both_sides_have_them():
    assert parse_patch("--- a/x.py\n+++ b/x.py\n@@ -1 +1 @@\n-a\n+b\n")[0].path == "x.py"
    assert parse_patch("--- /dev/null\n+++ b/new.py\n@@ -0,0 +1 @@\n+b\n")[0].path == "new.py"
    plain = parse_patch("--- a/x.py\t2024-01-01\n+++ a/x.py\t2024-01-02\n@@ -1 +1 @@\n-a\n+b\n")[0]
    assert plain.path == "a/x.py"  # diff -u of a file in a folder named a


def test_a_proposed_refactoring_diff_applies_back_with_apply_patch():
    from swarm_lsp.swarm.tasks import Edit, TextRange
    from swarm_lsp.tools.swarm import edit_diff

    text = "import os\n\n\ndef greet(name):\n    return 'hi ' + name\n\nX = 1"
    edit = Edit(
        "m.py",
        TextRange(4, 5),
        "def salute(name):\n    return f'hi {name}'",
        "def greet(name):\n    return 'hi ' + name",
    )
    diff = edit_diff("pkg/m.py", text, edit)
    assert diff.startswith("--- a/pkg/m.py\n+++ b/pkg/m.py\n@@")
    [patch] = parse_patch(diff)
    assert patch.path == "pkg/m.py"
    assert apply_file_patch(text, patch) == text.replace("greet", "salute").replace(
        "'hi ' + name", "f'hi {name}'"
    )
