"""What the vLLM engine puts in the environment before vLLM starts on a CPU: the KV cache size and the cores
kept free for vLLM's front end (none by default on a machine of at most 2 cores, as measured in
docs/serving.md), read back through vLLM's own ``envs``."""

from __future__ import annotations

import pytest

from serving.engines import vllm as vllm_engine
from serving.engines.settings import EngineSettings


@pytest.fixture
def clean_env(monkeypatch):
    for name in ("VLLM_CPU_KVCACHE_SPACE", "VLLM_CPU_NUM_OF_RESERVED_CPU"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def reserved_as_vllm_reads_it() -> int | None:
    import vllm.envs

    return vllm.envs.VLLM_CPU_NUM_OF_RESERVED_CPU


@pytest.mark.parametrize(("cores", "expected"), [(1, 0), (2, 0), (4, None), (64, None)])
def test_small_machines_reserve_no_core_by_default(clean_env, cores, expected):
    clean_env.setattr(vllm_engine, "usable_cores", lambda: cores)
    vllm_engine._prepare_cpu_environment(EngineSettings(model="m", engine="vllm", kv_cache_gib=1))
    assert reserved_as_vllm_reads_it() == expected  # None: vLLM's own rule (one core per worker)
    import vllm.envs

    assert vllm.envs.VLLM_CPU_KVCACHE_SPACE == 1


def test_the_setting_wins_and_the_users_environment_beats_the_default(clean_env):
    clean_env.setattr(vllm_engine, "usable_cores", lambda: 2)
    clean_env.setenv("VLLM_CPU_NUM_OF_RESERVED_CPU", "1")
    vllm_engine._prepare_cpu_environment(EngineSettings(model="m", engine="vllm"))
    assert reserved_as_vllm_reads_it() == 1  # what the user exported stays
    vllm_engine._prepare_cpu_environment(EngineSettings(model="m", engine="vllm", cpu_reserved_cores=3))
    assert reserved_as_vllm_reads_it() == 3  # an explicit setting is applied


def test_the_flag_is_a_checked_vllm_setting_and_reaches_side_engines():
    from nexus_k.core.errors import UserError
    from serving.config import resolve_settings

    settings = resolve_settings({"engine": "vllm", "cpu_reserved_cores": 0, "embedding_model": "e"})
    assert settings.embedding_engine_settings().cpu_reserved_cores == 0
    with pytest.raises(UserError, match="cpu-reserved-cores"):
        resolve_settings({"engine": "hf", "cpu_reserved_cores": 1})
    with pytest.raises(UserError):
        resolve_settings({"engine": "vllm", "cpu_reserved_cores": -1})
