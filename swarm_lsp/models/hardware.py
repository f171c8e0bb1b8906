"""What this machine has, and what fits on it.

The arithmetic, in one place (docs/hardware.md explains it with examples):

    needed = weights + kv_cache + compute_buffers
    weights       = the model file's size (GGUF/MLX weights are mapped into memory as they are)
    kv_cache      = kv_bytes_per_token * cells
                    kv_bytes_per_token = 2 (K and V) * layers * kv_heads * head_dim * 2 bytes (f16)
                    cells, llama.cpp = context + (voters - 1) * (new_tokens + variant_tokens)
                        (the prompt is evaluated once and its cells are shared by every voter;
                         each voter adds only the tokens it writes, and its own ending of the
                         prompt when it reads one: swarm.diversity)
                    cells, MLX/other = voters * context  (each voter keeps a whole cache)
    compute       = logits + attention scratch + activations for one batch of n_batch tokens
                  = n_batch * vocab * 4 + n_batch * context * heads * 4 + n_batch * embedding * 4 * 16

    budget, NVIDIA GPU         = 90% of the largest GPU's free memory
    budget, Apple unified      = 70% of RAM (macOS lets the GPU wire about that much)
    budget, CPU only           = 80% of (available RAM - 2 GiB kept for the editor and OS)

On a CPU, decoding speed is bound by memory bandwidth over the weights, so the recommendation
also caps the weight size by core count (about 0.35 GB per core): a 2-core box gets a sub-1B
model even when RAM would hold a 7B one that would answer at one token per second.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import psutil

from swarm_lsp.models.catalog import CATALOG, GB, Architecture, CatalogEntry, Variant

GIB = 1024**3
OS_RESERVE_BYTES = 2 * GIB
CPU_WEIGHT_BYTES_PER_CORE = 0.35 * GB
DEFAULT_VOTERS = 5
MIN_VOTERS = 3
MAX_VOTERS_REPORTED = 16
DEFAULT_NEW_TOKENS = 512
VARIANT_TOKENS = 128
"""KV cells each voter after the first may take for its own ending of the prompt (swarm.diversity);
the llama.cpp backend's `variant_reserve`."""
N_BATCH = 512


@dataclass(frozen=True)
class GPU:
    name: str
    vendor: str  # "nvidia" | "apple"
    memory_total: int
    memory_free: int


@dataclass(frozen=True)
class HardwareProfile:
    os: str
    arch: str
    physical_cores: int
    logical_cores: int
    ram_total: int
    ram_available: int
    gpus: tuple[GPU, ...] = ()
    unified_memory: bool = False
    notes: tuple[str, ...] = ()

    @property
    def accelerator(self) -> str:
        if self.unified_memory:
            return "apple"
        return "nvidia" if any(gpu.vendor == "nvidia" for gpu in self.gpus) else "cpu"

    def memory_budget(self) -> int:
        """Bytes a model may use here (see the module docstring for the reasoning)."""
        if self.accelerator == "nvidia":
            return int(0.9 * max(gpu.memory_free for gpu in self.gpus))
        if self.accelerator == "apple":
            return int(0.7 * self.ram_total)
        return int(0.8 * max(0, self.ram_available - OS_RESERVE_BYTES))

    def budget_rule(self) -> str:
        return {
            "nvidia": "90% of the largest GPU's free memory",
            "apple": "70% of unified memory",
            "cpu": "80% of available RAM after keeping 2 GiB for the OS and editor",
        }[self.accelerator]

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["accelerator"] = self.accelerator
        data["memory_budget"] = self.memory_budget()
        return data


def detect() -> HardwareProfile:
    """Read this machine: cores, memory, NVIDIA GPUs (NVML or nvidia-smi), Apple unified memory."""
    memory = psutil.virtual_memory()
    system, arch = platform.system(), platform.machine()
    unified = system == "Darwin" and arch == "arm64"
    gpus: list[GPU] = []
    notes: list[str] = []
    if unified:
        gpus.append(GPU(_apple_chip_name(), "apple", memory.total, memory.available))
    else:
        found, note = _nvidia_gpus()
        gpus.extend(found)
        if note:
            notes.append(note)
    return HardwareProfile(
        os=system,
        arch=arch,
        physical_cores=psutil.cpu_count(logical=False) or os.cpu_count() or 1,
        logical_cores=psutil.cpu_count(logical=True) or os.cpu_count() or 1,
        ram_total=memory.total,
        ram_available=memory.available,
        gpus=tuple(gpus),
        unified_memory=unified,
        notes=tuple(notes),
    )


def _apple_chip_name() -> str:
    try:
        result = subprocess.run(
            ["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True, timeout=5
        )
        return result.stdout.strip() or "Apple Silicon"
    except (OSError, subprocess.SubprocessError):
        return "Apple Silicon"


def _nvidia_gpus() -> tuple[list[GPU], str]:
    """NVML when the nvidia-ml-py package is installed, else nvidia-smi, else none."""
    note = ""
    try:
        import pynvml  # optional: pip install nvidia-ml-py
    except ImportError:
        pynvml = None
    if pynvml is not None:
        try:
            return _nvml_gpus(pynvml), ""
        except Exception as error:  # NVML has its own error types; any failure means "ask nvidia-smi"
            note = f"NVML failed ({error}); asked nvidia-smi instead"
    return _nvidia_smi_gpus(note)


def _nvml_gpus(pynvml: Any) -> list[GPU]:
    pynvml.nvmlInit()
    try:
        gpus = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            info = pynvml.nvmlDeviceGetMemoryInfo(handle)
            name = pynvml.nvmlDeviceGetName(handle)
            name = name.decode() if isinstance(name, bytes) else name
            gpus.append(GPU(name, "nvidia", int(info.total), int(info.free)))
        return gpus
    finally:
        pynvml.nvmlShutdown()


def _nvidia_smi_gpus(note: str) -> tuple[list[GPU], str]:
    if shutil.which("nvidia-smi") is None:
        return [], note
    try:
        result = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total,memory.free", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError) as error:
        return [], f"nvidia-smi failed: {error}"
    if result.returncode != 0:
        return [], f"nvidia-smi failed: {result.stderr.strip() or result.returncode}"
    return parse_nvidia_smi(result.stdout), note


def parse_nvidia_smi(output: str) -> list[GPU]:
    """Rows of 'name, total MiB, free MiB'."""
    gpus = []
    for line in output.strip().splitlines():
        parts = [part.strip() for part in line.split(",")]
        if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
            gpus.append(GPU(parts[0], "nvidia", int(parts[1]) * 1024**2, int(parts[2]) * 1024**2))
    return gpus


@dataclass(frozen=True)
class MemoryPlan:
    weights: int
    kv_cache: int
    compute: int
    context: int
    voters: int
    new_tokens: int
    shared_prompt: bool
    kv_bytes_per_token: float

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.compute

    def explain(self) -> str:
        cells = (
            f"{self.context} + ({self.voters} - 1) x ({self.new_tokens} + {VARIANT_TOKENS}) cells "
            "(prompt shared by voters)"
            if self.shared_prompt
            else f"{self.voters} x {self.context} cells (one cache per voter)"
        )
        return (
            f"weights {fmt_bytes(self.weights)} + KV cache {fmt_bytes(self.kv_cache)} "
            f"[{self.kv_bytes_per_token / 1024:.0f} KiB/token x {cells}] + "
            f"compute buffers {fmt_bytes(self.compute)} = {fmt_bytes(self.total)}"
        )


def plan_memory(
    arch: Architecture,
    weights_bytes: int,
    *,
    context: int,
    voters: int,
    new_tokens: int = DEFAULT_NEW_TOKENS,
    shared_prompt: bool = True,
) -> MemoryPlan:
    per_token = arch.kv_bytes_per_token()
    cells = context + (voters - 1) * (new_tokens + VARIANT_TOKENS) if shared_prompt else voters * context
    batch = min(N_BATCH, context)
    compute = batch * arch.vocab * 4 + batch * context * arch.heads * 4 + batch * arch.embedding * 4 * 16
    return MemoryPlan(
        weights=weights_bytes,
        kv_cache=int(per_token * cells),
        compute=int(compute),
        context=context,
        voters=voters,
        new_tokens=new_tokens,
        shared_prompt=shared_prompt,
        kv_bytes_per_token=per_token,
    )


def max_voters(
    arch: Architecture, weights_bytes: int, budget: int, *, context: int, shared_prompt: bool = True
) -> int:
    """How many voters fit in `budget` at this context (0 when not even one does)."""
    fitting = 0
    for voters in range(1, MAX_VOTERS_REPORTED + 1):
        plan = plan_memory(arch, weights_bytes, context=context, voters=voters, shared_prompt=shared_prompt)
        if plan.total > budget:
            break
        fitting = voters
    return fitting


@dataclass(frozen=True)
class Recommendation:
    entry: CatalogEntry
    variant: Variant
    context: int
    voters: int
    voters_fit: int
    plan: MemoryPlan
    budget: int
    reasons: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, object]:
        return {
            "model": self.entry.name,
            "quant": self.variant.quant,
            "format": self.variant.format,
            "repo": self.variant.repo,
            "file": self.variant.filename,
            "context": self.context,
            "voters": self.voters,
            "voters_fit": self.voters_fit,
            "memory": {**asdict(self.plan), "total": self.plan.total, "explained": self.plan.explain()},
            "budget": self.budget,
            "reasons": list(self.reasons),
        }


def target_context(profile: HardwareProfile) -> int:
    """Prefill costs compute: a small CPU gets a shorter window so answers start in seconds."""
    if profile.accelerator != "cpu" or profile.physical_cores >= 8:
        return 8192
    return 4096


def recommend(
    profile: HardwareProfile, catalog: Iterable[CatalogEntry] = CATALOG, *, voters: int = DEFAULT_VOTERS
) -> Recommendation:
    """The best catalog model, quantization, voter count and context that fit this machine.

    Rules, in order: the format follows the accelerator (MLX on Apple Silicon, GGUF elsewhere);
    keep the target context if any model fits at it, and at that context prefer the
    highest-quality model whose 4-bit variant fits with MIN_VOTERS (on CPU also within the
    per-core weight cap); upgrade to 8-bit when that still leaves 40% of the budget free. Only when
    nothing fits is the context halved (down to 2048) and the search repeated.
    The smallest model is returned, flagged, when nothing fits.
    """
    budget = profile.memory_budget()
    fmt = "mlx" if profile.accelerator == "apple" else "gguf"
    shared = fmt == "gguf"
    weight_cap = (
        int(profile.physical_cores * CPU_WEIGHT_BYTES_PER_CORE) if profile.accelerator == "cpu" else None
    )
    entries = sorted(catalog, key=lambda entry: entry.quality, reverse=True)
    for context in _contexts(target_context(profile)):
        for entry in entries:
            low, high = _quant_pair(entry, fmt)
            if low is None or context > entry.context_length:
                continue
            if weight_cap is not None and low.size_bytes > weight_cap:
                continue
            fit = max_voters(entry.arch, low.size_bytes, budget, context=context, shared_prompt=shared)
            if fit < MIN_VOTERS:
                continue
            chosen, reasons = low, [f"{low.quant} fits with {fit} voters at {context} tokens"]
            if high is not None and (weight_cap is None or high.size_bytes <= weight_cap):
                high_plan = plan_memory(
                    entry.arch,
                    high.size_bytes,
                    context=context,
                    voters=min(voters, fit),
                    shared_prompt=shared,
                )
                if high_plan.total <= 0.6 * budget:
                    chosen = high
                    reasons.append(f"{high.quant} still leaves 40% of the budget free, so it is preferred")
            fit = max_voters(entry.arch, chosen.size_bytes, budget, context=context, shared_prompt=shared)
            plan = plan_memory(
                entry.arch, chosen.size_bytes, context=context, voters=min(voters, fit), shared_prompt=shared
            )
            if weight_cap is not None:
                reasons.append(
                    f"CPU only: weights capped at {fmt_bytes(weight_cap)} "
                    f"({profile.physical_cores} cores x {fmt_bytes(int(CPU_WEIGHT_BYTES_PER_CORE))}) "
                    "so decoding stays interactive"
                )
            return Recommendation(entry, chosen, context, min(voters, fit), fit, plan, budget, tuple(reasons))
    smallest = min(catalog, key=lambda entry: entry.params_b)
    variant = smallest.variants[0]
    plan = plan_memory(smallest.arch, variant.size_bytes, context=2048, voters=1, shared_prompt=shared)
    return Recommendation(
        smallest, variant, 2048, 1, 0, plan, budget, ("nothing in the catalog fits; this is the smallest",)
    )


def _quant_pair(entry: CatalogEntry, fmt: str) -> tuple[Variant | None, Variant | None]:
    """(4-bit, 8-bit) variants of an entry in one format."""
    four = ("Q4_K_M", "4bit", "Q4_1")
    eight = ("Q8_0", "8bit")
    by_quant = {variant.quant: variant for variant in entry.variants if variant.format == fmt}
    low = next((by_quant[q] for q in four if q in by_quant), None)
    high = next((by_quant[q] for q in eight if q in by_quant), None)
    return low, high


def _contexts(start: int) -> list[int]:
    contexts = [start]
    while contexts[-1] > 2048:
        contexts.append(max(2048, contexts[-1] // 2))
    return contexts


def fmt_bytes(value: float) -> str:
    for unit, size in (("GiB", GIB), ("MiB", 1024**2), ("KiB", 1024)):
        if abs(value) >= size:
            return f"{value / size:.1f} {unit}"
    return f"{int(value)} B"


def profile_from_json(text: str) -> HardwareProfile:
    """A profile from `swarm-lsp doctor --json` output or a hand-written description (for tests, docs)."""
    data = json.loads(text)
    gpus = tuple(GPU(**gpu) for gpu in data.pop("gpus", ()))
    known = {"os", "arch", "physical_cores", "logical_cores", "ram_total", "ram_available", "unified_memory"}
    return HardwareProfile(gpus=gpus, **{key: value for key, value in data.items() if key in known})
