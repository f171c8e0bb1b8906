from __future__ import annotations

import json

import pytest

from swarm_lsp.models.catalog import find_entry
from swarm_lsp.models.hardware import (
    GIB,
    GPU,
    VARIANT_TOKENS,
    HardwareProfile,
    detect,
    max_voters,
    parse_nvidia_smi,
    plan_memory,
    profile_from_json,
    recommend,
)

LAPTOP_8GB = HardwareProfile("Linux", "x86_64", 4, 8, 8 * GIB, 6 * GIB)
APPLE_16GB = HardwareProfile(
    "Darwin", "arm64", 8, 8, 16 * GIB, 10 * GIB, (GPU("Apple M2", "apple", 16 * GIB, 10 * GIB),), True
)
GPU_24GB = HardwareProfile(
    "Linux", "x86_64", 8, 16, 32 * GIB, 28 * GIB, (GPU("RTX 4090", "nvidia", 24 * GIB, 23 * GIB),)
)
CI_BOX = HardwareProfile("Linux", "x86_64", 2, 2, 24 * GIB, 23 * GIB)
TINY = HardwareProfile("Linux", "x86_64", 1, 1, 2 * GIB, 1 * GIB)


def test_kv_cache_arithmetic_matches_the_formula() -> None:
    arch = find_entry("qwen2.5-coder-7b-instruct").arch
    # 2 (K,V) * 28 layers * 4 kv heads * 128 dims * 2 bytes
    assert arch.kv_bytes_per_token() == 2 * 28 * 4 * 128 * 2
    shared = plan_memory(arch, 4 * GIB, context=8192, voters=5, new_tokens=512)
    separate = plan_memory(arch, 4 * GIB, context=8192, voters=5, shared_prompt=False)
    assert shared.kv_cache == arch.kv_bytes_per_token() * (8192 + 4 * (512 + VARIANT_TOKENS))
    assert separate.kv_cache == arch.kv_bytes_per_token() * 5 * 8192
    assert shared.total == shared.weights + shared.kv_cache + shared.compute
    assert "prompt shared by voters" in shared.explain()


def test_more_voters_fit_when_the_prompt_is_shared() -> None:
    arch = find_entry("qwen2.5-coder-14b-instruct").arch
    budget = 12 * GIB
    assert max_voters(arch, 9 * GIB, budget, context=8192) > max_voters(
        arch, 9 * GIB, budget, context=8192, shared_prompt=False
    )


def test_8gb_laptop_gets_a_small_coder_model_within_its_core_budget() -> None:
    rec = recommend(LAPTOP_8GB)
    assert rec.entry.name == "qwen2.5-coder-1.5b-instruct"
    assert rec.variant.format == "gguf"
    assert rec.voters == 5 and rec.context == 4096
    assert rec.plan.total <= rec.budget
    assert any("CPU only" in reason for reason in rec.reasons)


def test_16gb_apple_silicon_gets_mlx_7b_at_full_context() -> None:
    rec = recommend(APPLE_16GB)
    assert (rec.entry.name, rec.variant.quant, rec.variant.format) == (
        "qwen2.5-coder-7b-instruct",
        "4bit",
        "mlx",
    )
    assert rec.context == 8192
    assert rec.plan.total <= rec.budget == int(0.7 * 16 * GIB)
    assert not rec.plan.shared_prompt


def test_24gb_gpu_gets_14b_and_not_32b_which_would_not_leave_room_for_context() -> None:
    rec = recommend(GPU_24GB)
    assert rec.entry.name == "qwen2.5-coder-14b-instruct"
    assert rec.variant.quant == "Q4_K_M"
    assert rec.context == 8192
    big = find_entry("qwen2.5-coder-32b-instruct")
    plan = plan_memory(big.arch, big.variant("Q4_K_M").size_bytes, context=8192, voters=3)
    assert plan.total > GPU_24GB.memory_budget()


def test_two_core_ci_box_is_capped_by_compute_not_memory() -> None:
    rec = recommend(CI_BOX)
    assert rec.entry.params_b < 1.0
    assert rec.variant.size_bytes <= 2 * 0.35e9
    assert rec.context == 4096


def test_nothing_fits_falls_back_to_the_smallest_model_and_says_so() -> None:
    rec = recommend(TINY)
    assert rec.entry.name == "smollm2-135m-instruct"
    assert "nothing in the catalog fits" in rec.reasons[0]


def test_budget_rules() -> None:
    assert GPU_24GB.memory_budget() == int(0.9 * 23 * GIB)
    assert APPLE_16GB.accelerator == "apple"
    assert CI_BOX.memory_budget() == int(0.8 * (23 - 2) * GIB)
    assert TINY.memory_budget() == 0


def test_nvidia_smi_output_is_parsed() -> None:
    gpus = parse_nvidia_smi("NVIDIA H100 80GB HBM3, 81559, 80000\nbroken line\n")
    assert gpus == [GPU("NVIDIA H100 80GB HBM3", "nvidia", 81559 * 1024**2, 80000 * 1024**2)]


def test_detect_reads_this_machine() -> None:
    profile = detect()
    assert profile.physical_cores >= 1
    assert profile.ram_total >= profile.ram_available > 0
    round_trip = profile_from_json(json.dumps(profile.to_dict()))
    assert round_trip.ram_total == profile.ram_total
    assert round_trip.gpus == profile.gpus


@pytest.mark.parametrize("profile", [LAPTOP_8GB, APPLE_16GB, GPU_24GB, CI_BOX])
def test_recommendation_always_fits_its_budget(profile: HardwareProfile) -> None:
    rec = recommend(profile)
    assert rec.voters >= 3
    assert rec.plan.total <= rec.budget
