"""The pure parts of ``bench.cpu_peer``: medians over rounds, ours / llama.cpp ratios against the targets, the
table, and when a cached llama-server build counts as found."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import cpu_peer, cpu_peer_llama


def _run(name: str, round_index: int, c: int, tps: float, ttft: float, startup: float) -> dict:
    return {"contender": name, "round": round_index, "concurrency": c, "startup_s": startup,
            "output_tokens_per_s": tps, "ttft_p50_s": ttft, "ttft_p99_s": 2 * ttft, "itl_p50_s": 0.02,
            "peak_rss_mib": 500.0, "pss_mib": 400.0, "api": cpu_peer.API}


def test_medians_ratios_and_targets() -> None:
    runs = [_run("llama.cpp", 0, 1, 70, 0.030, 2.0), _run("llama.cpp", 1, 1, 74, 0.034, 1.0),
            _run("nexus-k-demo", 0, 1, 72, 0.033, 80.0), _run("nexus-k-demo", 1, 1, 76, 0.035, 70.0),
            _run("llama.cpp", 0, 64, 200, 1.0, 1.0), _run("nexus-k-demo", 0, 64, 150, 2.0, 70.0)]
    results = cpu_peer.median_rows(runs)
    demo = results["nexus-k-demo"][1]
    assert demo["output_tokens_per_s"] == 74 and demo["runs"] == 2
    assert demo["startup_s"] == 70.0  # the fastest start, not the median
    rates = cpu_peer.ratios(results)
    assert rates["nexus-k-demo/c1"]["throughput"] == pytest.approx(74 / 72, abs=1e-3)
    assert rates["nexus-k-demo/c1"]["ttft_p50"] == pytest.approx(0.034 / 0.032, abs=1e-3)
    assert rates["nexus-k-demo/c1"]["throughput_target_met"] and rates["nexus-k-demo/c1"]["ttft_target_met"]
    assert not rates["nexus-k-demo/c64"]["throughput_target_met"]
    assert rates["nexus-k-demo/c64"]["ttft_target_met"] is None  # TTFT is targeted at 1 and 16 only
    table = cpu_peer.markdown(results, rates)
    assert "| 64 | nexus-k-demo | 150 |" in table and "0.75x" in table


def test_korean_prompts_rotate_and_keep_the_measured_request_shape() -> None:
    first, second = cpu_peer._chat_body(), cpu_peer._chat_body()
    assert first["messages"] != second["messages"]
    assert first["max_tokens"] == 64 and first["ignore_eos"] and first["stream"]
    assert first["stream_options"] == {"include_usage": True}


def test_a_cached_build_counts_only_with_todays_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpu_peer_llama, "server_dir", lambda version=None: tmp_path)
    assert cpu_peer_llama.find_llama_server() is None
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "llama-server").write_bytes(b"")
    assert cpu_peer_llama.find_llama_server() is None  # no build.json: an unfinished build
    record = tmp_path / "build.json"
    record.write_text(json.dumps({"cmake_flags": ["-DGGML_NATIVE=ON"]}))
    assert cpu_peer_llama.find_llama_server() is None  # built with other flags
    record.write_text(json.dumps({"cmake_flags": cpu_peer_llama.CMAKE_FLAGS}))
    assert cpu_peer_llama.find_llama_server() == tmp_path / "bin" / "llama-server"
