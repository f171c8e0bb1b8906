"""Tools, their tiers, the policy that gates them, approval, and the one path every call takes.

A tool declares its tier once (`Tool.tier`, plus `escalates_to` when some calls do more, such as
`write_file` overwriting a file); the MCP annotations and the policy both follow from that
declaration. Every call, from any front door, goes through `Registry.call`:

    validate arguments -> prepare (sandbox, effective tier) -> read_only? -> policy rule
    -> approval when the rule is `ask` (or the session's allowance) -> cached result or run
    -> one audit line

A front door supplies a `Caller`: who is calling, how to ask the user (an `Approver`), the
client's roots, the client session's `SessionAllowance`, and where progress goes. With no
approver, `ask` is refused with an error that says which setting allows the call: nothing is ever
silently allowed.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
import logging
import time
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

import jsonschema

from swarm_lsp.basics import SwarmLspError
from swarm_lsp.config import ConfigError, ToolRule, ToolSettings
from swarm_lsp.redaction import redact, redact_message
from swarm_lsp.tools.audit import AuditLog
from swarm_lsp.tools.cache import ResultCache

log = logging.getLogger(__name__)

EnvT = TypeVar("EnvT")


class Tier(str, Enum):
    READ = "read"
    WRITE = "write"
    EXECUTE = "execute"
    DESTRUCTIVE = "destructive"

    @property
    def rank(self) -> int:
        return _TIER_ORDER.index(self)


_TIER_ORDER = (Tier.READ, Tier.WRITE, Tier.EXECUTE, Tier.DESTRUCTIVE)
_RULE_STRICTNESS: dict[str, int] = {"allow": 0, "ask": 1, "deny": 2}


@dataclass(frozen=True)
class Annotations:
    """The MCP tool annotations, derived from the tier (never written by hand)."""

    read_only: bool
    destructive: bool
    idempotent: bool
    open_world: bool = False

    @classmethod
    def for_tier(cls, tier: Tier, escalates_to: Tier | None = None) -> Annotations:
        highest = escalates_to if escalates_to is not None and escalates_to.rank > tier.rank else tier
        return cls(
            read_only=tier is Tier.READ,
            destructive=highest is Tier.DESTRUCTIVE,
            idempotent=tier is Tier.READ,
        )


# ------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Output:
    """What a tool returns: text for the model, optional structured data, and whether it failed."""

    text: str
    data: dict[str, Any] | None = None
    is_error: bool = False

    @property
    def size(self) -> int:
        return len(self.text.encode("utf-8", "replace"))


class ToolError(SwarmLspError):
    """A call that cannot be done as asked; the message tells the caller what to do instead."""


class Refused(ToolError):
    """A call the sandbox or the policy does not allow."""

    def __init__(self, message: str, *, decided_by: str, rule: str | None = None) -> None:
        super().__init__(message)
        self.decided_by = decided_by
        self.rule = rule


Progress = Callable[[float, "float | None", "str | None"], Awaitable[None]]
"""progress(done, total, message): a front door's progress channel (MCP progress notifications)."""


async def _no_progress(done: float, total: float | None, message: str | None) -> None:
    return None


@dataclass(frozen=True)
class Plan:
    """What one call will do, known before it is approved.

    `tier` is the effective tier (a call may be more than its tool's declared tier); `summary` is
    what the user is asked to approve, and `basis` what it was worked out from (the stat of the files
    it read), so an approval given for one state of the files never runs on another. Read calls with
    a `cache_key` are cached until a file in `depends_on` changes (or, when `index_backed`, until the
    index changes).
    """

    tier: Tier
    summary: str
    run: Callable[[Progress], Awaitable[Output]]
    cache_key: Hashable | None = None
    depends_on: tuple[Path, ...] = ()
    index_backed: bool = False
    basis: tuple[Any, ...] = ()
    details: str = ""
    """Shown with the summary when the user is asked (a preview, a diff); never logged."""


@dataclass(frozen=True)
class Tool(Generic[EnvT]):
    name: str
    tier: Tier
    description: str
    input_schema: dict[str, Any]
    prepare: Callable[[EnvT, dict[str, Any]], Plan | Awaitable[Plan]]
    """Check the arguments against the sandbox and say what the call will do; does not act."""
    title: str = ""
    escalates_to: Tier | None = None
    """The tier some calls reach (write_file overwriting a file is destructive)."""

    @property
    def annotations(self) -> Annotations:
        return Annotations.for_tier(self.tier, self.escalates_to)

    @property
    def tiers(self) -> tuple[Tier, ...]:
        return (self.tier,) if self.escalates_to is None else (self.tier, self.escalates_to)


# ------------------------------------------------------------------------------------- approval

ApprovalAnswer = Literal["accept", "accept_for_session", "decline", "cancel"]
"""`accept_for_session`: run it, and later calls of this tool at this tier in this session too."""


@dataclass(frozen=True)
class ApprovalRequest:
    tool: str
    tier: Tier
    summary: str
    arguments: Mapping[str, Any]
    """Redacted: secrets and long contents never reach the approval prompt."""
    client: str
    details: str = ""
    fingerprint: str = ""
    """A digest of what is approved (summary and basis): an answer given for one fingerprint
    must not be applied to a call whose fingerprint differs."""
    session_choice: bool = False
    """Whether the user may also allow this for the rest of the session (see SessionAllowance)."""

    @property
    def session_scope(self) -> str:
        """What an "allow for this session" answer covers, in words."""
        return f"later {self.tool} calls at the {self.tier.value} tier, on any path inside the workspace"

    @property
    def message(self) -> str:
        shown = json.dumps(self.arguments, ensure_ascii=False)
        if len(shown) > 600:
            shown = shown[:600] + "..."
        head = f"{self.client} wants to run {self.tool} ({self.tier.value}): {self.summary}"
        details = f"\n{self.details}" if self.details else ""
        session = (
            f"\nYou may also allow {self.session_scope} until this session ends."
            if self.session_choice
            else ""
        )
        return f"{head}{details}\nArguments: {shown}{session}"


Approver = Callable[[ApprovalRequest], Awaitable[ApprovalAnswer]]


class ApprovalDeferred(Exception):
    """The front door asks the user out of band and will repeat the call with the answer.

    MCP 2026-07-28 has no server-to-client requests: approval travels in an `input_required`
    result, and the client calls again carrying the user's answer. Not audited: the repeated
    call is.
    """

    def __init__(self, payload: Any) -> None:
        super().__init__("approval requested")
        self.payload = payload


class SessionAllowance:
    """What the user allowed "for this session": (tool, effective tier) pairs, in memory only.

    An allowance covers later calls of the same tool at the same effective tier, whatever path they
    name (the sandbox still checks every path, and every write still refuses a file that changed
    since it was read): allowing `edit_file` lets the agent edit the workspace's files without
    asking, but not create them with `write_file`, nor overwrite one whole (a destructive call).
    Destructive calls are never allowed for a session, each is asked, since none can be undone. A
    `deny` rule or read_only mode is decided before any allowance is looked at, so it always wins.
    The front door keeps one per client session (one per process on stdio); nothing is saved, so an
    allowance ends with its session or its process.
    """

    def __init__(self) -> None:
        self._allowed: set[tuple[str, Tier]] = set()

    @staticmethod
    def can_cover(tier: Tier) -> bool:
        return tier is not Tier.DESTRUCTIVE

    def covers(self, tool: str, tier: Tier) -> bool:
        return (tool, tier) in self._allowed

    def allow(self, tool: str, tier: Tier) -> None:
        if not self.can_cover(tier):
            raise ValueError(f"a {tier.value} call is asked every time; it cannot be allowed for a session")
        self._allowed.add((tool, tier))


@dataclass(frozen=True)
class Caller:
    """Who is calling and what the front door can do for the call."""

    client: str = "unknown"
    approver: Approver | None = None
    """How to ask the user; None when the client cannot ask (no MCP elicitation)."""
    no_approver_reason: str = "this client cannot ask you to approve a call"
    roots: tuple[Path, ...] | None = None
    """Folders the client says the tools may work in; None: the workspace."""
    progress: Progress = _no_progress
    session: SessionAllowance | None = None
    """What the user allowed for this client session; None where there is no session to remember
    an answer in (then "allow for this session" is not offered)."""


# --------------------------------------------------------------------------------------- policy


class Policy:
    """Per tier and per tool `allow | ask | deny`, and `read_only`.

    A per-tool rule replaces its tool's tier rule. When a call reaches a higher tier than its tool
    declares (an overwrite, a destructive command), the stricter of the tool's rule (its own, else
    its tier's) and that tier's rule applies: allowing `write_file` does not allow it to overwrite a
    file whole, and denying writes denies overwrites too.
    """

    def __init__(self, settings: ToolSettings, known_tools: Iterable[str] = ()) -> None:
        self.settings = settings
        known = set(known_tools)
        if known:
            unknown = sorted(set(settings.per_tool) - known)
            if unknown:
                raise ConfigError(
                    f"tools.per_tool names unknown tool(s) {', '.join(unknown)}; "
                    f"known tools: {', '.join(sorted(known))}"
                )

    @property
    def read_only(self) -> bool:
        return self.settings.read_only

    def listed(self, tool: Tool[Any]) -> bool:
        return not self.read_only or tool.tier is Tier.READ

    def rule(self, tool: Tool[Any], tier: Tier) -> tuple[ToolRule, str]:
        """The rule for a call of `tool` at effective `tier`, and the setting it comes from."""
        tier_rule: ToolRule = getattr(self.settings, tier.value)
        tier_source = f"tools.{tier.value} = {tier_rule}"
        own = self.settings.per_tool.get(tool.name)
        if own is None:
            # A call above its tool's tier still needs what that tier needs: with write = deny, an
            # overwrite (destructive) is denied, whatever destructive says.
            declared: ToolRule = getattr(self.settings, tool.tier.value)
            if tier.rank > tool.tier.rank and _RULE_STRICTNESS[declared] > _RULE_STRICTNESS[tier_rule]:
                return declared, f"tools.{tool.tier.value} = {declared}"
            return tier_rule, tier_source
        own_source = f"tools.per_tool.{tool.name} = {own}"
        if tier.rank > tool.tier.rank and _RULE_STRICTNESS[tier_rule] > _RULE_STRICTNESS[own]:
            return tier_rule, tier_source
        return own, own_source

    @staticmethod
    def how_to_allow(tool: Tool[Any], tier: Tier) -> str:
        if tier is tool.tier:
            return (
                f'set `{tool.name} = "allow"` under [tools.per_tool] or `{tier.value} = "allow"` under '
                f"[tools] in .swarm-lsp.toml (or SWARM_LSP_TOOLS__{tier.value.upper()}=allow)"
            )
        return (
            f'set `{tier.value} = "allow"` under [tools] in .swarm-lsp.toml '
            f"(or SWARM_LSP_TOOLS__{tier.value.upper()}=allow): this call is {tier.value}"
        )


# ------------------------------------------------------------------------------------- registry


@dataclass
class CallRecord:
    """One audit line, filled in as the call goes."""

    client: str
    tool: str
    arguments: Any
    tier: str | None = None
    decision: str | None = None
    """allow | deny; None when the call failed before the policy was consulted (bad arguments)."""
    decided_by: str | None = None
    rule: str | None = None
    cached: bool = False
    error: str | None = None
    result_bytes: int = 0
    started: float = field(default_factory=time.time)
    started_monotonic: float = field(default_factory=time.monotonic)

    def to_dict(self) -> dict[str, Any]:
        return {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(self.started))
            + f".{int(self.started % 1 * 1000):03d}Z",
            "client": self.client,
            "tool": self.tool,
            "arguments": self.arguments,
            "tier": self.tier,
            "decision": self.decision,
            "decided_by": self.decided_by,
            "rule": self.rule,
            "duration_ms": round((time.monotonic() - self.started_monotonic) * 1000, 3),
            "result_bytes": self.result_bytes,
            "cached": self.cached,
            "error": self.error,
        }


class Registry(Generic[EnvT]):
    def __init__(
        self,
        tools: Sequence[Tool[EnvT]],
        policy: Policy,
        *,
        make_env: Callable[[Caller], EnvT],
        audit: AuditLog | None = None,
        cache: ResultCache | None = None,
    ) -> None:
        names = [tool.name for tool in tools]
        duplicates = {name for name in names if names.count(name) > 1}
        if duplicates:
            raise ValueError(f"tool names must be unique; repeated: {', '.join(sorted(duplicates))}")
        self._tools = {tool.name: tool for tool in tools}
        self.policy = policy
        self.make_env = make_env
        self.audit = audit
        self.cache = cache
        self._validators = {tool.name: jsonschema.Draft202012Validator(tool.input_schema) for tool in tools}

    def tools(self) -> list[Tool[EnvT]]:
        """The tools a client may see: all of them, or only the read tools in read_only mode."""
        return [tool for tool in self._tools.values() if self.policy.listed(tool)]

    def get(self, name: str) -> Tool[EnvT] | None:
        tool = self._tools.get(name)
        return tool if tool is not None and self.policy.listed(tool) else None

    async def call(self, name: str, arguments: Mapping[str, Any] | None, caller: Caller) -> Output:
        """Run one call through validation, sandbox, policy, approval, cache and audit."""
        arguments = dict(arguments or {})
        record = CallRecord(client=caller.client, tool=name, arguments=redact(arguments))
        try:
            output = await self._call(name, arguments, caller, record)
        except ApprovalDeferred:
            raise
        except Refused as refused:
            record.decision, record.decided_by, record.rule = "deny", refused.decided_by, refused.rule
            record.error = redact_message(str(refused))
            output = Output(str(refused), is_error=True)
        except ToolError as error:
            record.error = redact_message(str(error))
            output = Output(str(error), is_error=True)
        except asyncio.CancelledError:
            record.error = "cancelled by the client"
            self._write_audit(record)
            raise
        except Exception as error:  # a tool bug must not take the server down; it is reported and logged
            log.exception("tool %s failed", name)
            record.error = redact_message(f"internal error: {type(error).__name__}: {error}")
            output = Output(f"{name} failed with an internal error: {error}", is_error=True)
        record.result_bytes = output.size
        self._write_audit(record)
        return output

    async def _call(self, name: str, arguments: dict[str, Any], caller: Caller, record: CallRecord) -> Output:
        tool = self._tools.get(name)
        if tool is None:
            raise ToolError(f"unknown tool {name!r}; available: {', '.join(t.name for t in self.tools())}")
        if not self.policy.listed(tool):
            record.tier = tool.tier.value
            raise Refused(
                f"{name} is not available: the server is in read_only mode (tools.read_only = true)",
                decided_by="read_only",
                rule="tools.read_only = true",
            )
        problems = sorted(self._validators[name].iter_errors(arguments), key=lambda e: list(e.absolute_path))
        if problems:
            record.tier = tool.tier.value
            raise ToolError(_explain_schema_errors(name, problems))
        where = _lone_surrogate(arguments)
        if where is not None:
            record.tier = tool.tier.value
            raise ToolError(
                f"invalid arguments for {name}: {where} holds a lone UTF-16 surrogate, which is not text "
                "(no file, command or search can take it); send valid Unicode"
            )
        env = self.make_env(caller)
        try:
            plan = tool.prepare(env, arguments)
            if inspect.isawaitable(plan):
                plan = await plan
        except ToolError:
            record.tier = tool.tier.value
            raise
        assert isinstance(plan, Plan)
        record.tier = plan.tier.value
        if self.policy.read_only and plan.tier is not Tier.READ:
            raise Refused(
                f"{name} would be a {plan.tier.value} action ({plan.summary}); the server is in read_only "
                "mode (tools.read_only = true)",
                decided_by="read_only",
                rule="tools.read_only = true",
            )
        rule, source = self.policy.rule(tool, plan.tier)
        record.rule = source
        if rule == "deny":
            raise Refused(
                f"{name} is denied by the settings ({source}): {plan.summary}",
                decided_by="policy",
                rule=source,
            )
        if rule == "ask":
            await self._approve(tool, plan, arguments, caller, record, source)
        else:
            record.decision, record.decided_by = "allow", "policy"
        if self.cache is not None and plan.cache_key is not None and plan.tier is Tier.READ:
            hit = self.cache.get(plan.cache_key)
            if hit is not None:
                record.cached = True
                return hit
            generation, stamps = self.cache.generation, self.cache.stamps(plan.depends_on)
            output = await plan.run(caller.progress)
            if not output.is_error:
                self.cache.put(plan.cache_key, output, stamps, plan.index_backed, generation)
            return output
        return await plan.run(caller.progress)

    async def _approve(
        self,
        tool: Tool[Any],
        plan: Plan,
        arguments: dict[str, Any],
        caller: Caller,
        record: CallRecord,
        source: str,
    ) -> None:
        session = caller.session
        if session is not None and session.covers(tool.name, plan.tier):
            record.decision, record.decided_by = "allow", "session"
            return
        if caller.approver is None:
            raise Refused(
                f"{tool.name} needs your approval ({source}) but {caller.no_approver_reason}. "
                f"To allow it without asking, {self.policy.how_to_allow(tool, plan.tier)}. "
                f"The call was: {plan.summary}",
                decided_by="client",
                rule=source,
            )
        what = (plan.tier.value, plan.summary, plan.details, plan.basis)
        request = ApprovalRequest(
            tool.name,
            plan.tier,
            plan.summary,
            redact(arguments),
            caller.client,
            details=plan.details,
            fingerprint=hashlib.sha256(repr(what).encode()).hexdigest(),
            session_choice=session is not None and session.can_cover(plan.tier),
        )
        answer = await caller.approver(request)
        if answer == "accept_for_session" and session is not None and request.session_choice:
            session.allow(tool.name, plan.tier)
            record.decision, record.decided_by = "allow", "user_for_session"
            return
        if answer in ("accept", "accept_for_session"):
            record.decision, record.decided_by = "allow", "user"
            return
        verb = "declined" if answer == "decline" else "cancelled"
        raise Refused(
            f"{tool.name} was not run: you {verb} it ({plan.summary})", decided_by="user", rule=source
        )

    def _write_audit(self, record: CallRecord) -> None:
        if self.audit is None:
            return
        try:
            self.audit.append(record.to_dict())
        except OSError as error:  # an unwritable log is reported, never silently skipped
            log.error("could not write the audit log %s: %s", self.audit.path, error)


def _lone_surrogate(value: Any, where: str = "arguments") -> str | None:
    """Where in `value` a string holds a lone surrogate (JSON's "\\ud800" decodes to one), or None."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return where
    elif isinstance(value, dict):
        for key, item in value.items():
            found = _lone_surrogate(key, where) or _lone_surrogate(item, f"{where}.{key}")
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _lone_surrogate(item, f"{where}[{index}]")
            if found is not None:
                return found
    return None


def _explain_schema_errors(name: str, problems: list[jsonschema.ValidationError]) -> str:
    lines = []
    for problem in problems[:5]:
        where = ".".join(str(part) for part in problem.absolute_path) or "arguments"
        message = problem.message  # quotes the value: a megabyte string must not come back whole
        lines.append(f"{where}: {message if len(message) <= 300 else message[:300] + '...'}")
    return f"invalid arguments for {name}: " + "; ".join(lines) + " (see the tool's input schema)"
