"""The vLLM engine lowers its engine-core child's CPU priority; checked on a stand-in process with that name."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from serving.engines.vllm import _lower_engine_core_priority
from tests.serving.conftest import thread_priorities

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread priorities are Linux's")


@pytest.fixture
def children(tmp_path):
    """A child named like vLLM's engine core (the kernel keeps 15 characters) and one that is not."""
    sleep = shutil.which("sleep")
    assert sleep
    core, other = tmp_path / "VLLM::EngineCore", tmp_path / "helper"
    shutil.copy(sleep, core)
    shutil.copy(sleep, other)
    procs = [subprocess.Popen([str(path), "60"]) for path in (core, other)]
    yield procs
    for proc in procs:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize(("priority", "expected"), [("low", (0, 10)), ("idle", (os.SCHED_IDLE, 0))])
def test_only_the_engine_core_is_lowered(children, priority, expected):
    core, other = children
    assert _lower_engine_core_priority(priority) == [core.pid]
    assert thread_priorities(core.pid) == {expected}
    assert thread_priorities(other.pid) == {(os.sched_getscheduler(0), os.getpriority(os.PRIO_PROCESS, 0))}
