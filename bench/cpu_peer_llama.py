"""llama.cpp's ``llama-server`` for ``bench/cpu_peer.py``: found in the cache, or built once from the llama.cpp
source vendored in the ``llama-cpp-python`` sdist on PyPI (what Ollama and LM Studio run, built for this CPU).

    python -m bench.cpu_peer_llama            # build (10-20 min on 2 cores) or print the cached binary

The binary lands in ``~/.cache/nexus-k/llama.cpp/<version>/bin/llama-server``, statically linked, with a
``build.json`` beside it (source, cmake flags, seconds); a later call reuses it.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from nexus_k.core.paths import cache_dir

logger = logging.getLogger(__name__)

LLAMA_CPP_PYTHON_VERSION = "0.3.36"
"""The sdist whose vendored llama.cpp is built (pinned: a newer one is a different contender)."""
CMAKE_FLAGS = [
    "-DCMAKE_BUILD_TYPE=Release",
    "-DGGML_NATIVE=ON",  # this CPU's instruction set (AVX-512, VNNI, bf16), as a local build would be
    "-DLLAMA_CURL=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",  # else cmake fetches the web UI from a model hub
    "-DBUILD_SHARED_LIBS=OFF",  # one self-contained binary in the cache
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    # Without AMX: on this Sapphire Rapids machine the AMX matmul of this llama.cpp segfaults on the first
    # warm-up (ggml_backend_amx_mul_mat); the AVX-512 VNNI/bf16 kernels and weight repacking stay on.
    "-DCMAKE_C_FLAGS=-mno-amx-tile -mno-amx-int8 -mno-amx-bf16",
    "-DCMAKE_CXX_FLAGS=-mno-amx-tile -mno-amx-int8 -mno-amx-bf16",
]


def server_dir(version: str = LLAMA_CPP_PYTHON_VERSION) -> Path:
    """The cache folder of one llama.cpp build."""
    return cache_dir("llama.cpp", version)


def find_llama_server(version: str = LLAMA_CPP_PYTHON_VERSION) -> Path | None:
    """The cached ``llama-server`` of ``version``, when a finished build with today's flags left one."""
    folder = server_dir(version)
    binary, record = folder / "bin" / "llama-server", folder / "build.json"
    if not (binary.is_file() and record.is_file()):
        return None
    return binary if json.loads(record.read_text()).get("cmake_flags") == CMAKE_FLAGS else None


def _download_sdist(version: str, into: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps",
                    f"llama-cpp-python=={version}", "-d", str(into)],
                   check=True, stdout=subprocess.DEVNULL)
    return next(into.glob("llama_cpp_python-*.tar.gz"))


def build_llama_server(version: str = LLAMA_CPP_PYTHON_VERSION, jobs: int = 2) -> Path:
    """Download the sdist, build only ``llama-server`` with cmake and install it into the cache."""
    for tool in ("cmake", "c++"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found: install the Debian packages of scripts/system-deps.sh")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="nexus-k-llama-cpp-") as tmp:
        work = Path(tmp)
        sdist = _download_sdist(version, work)
        with tarfile.open(sdist) as archive:
            archive.extractall(work, filter="data")
        source = next(work.glob("llama_cpp_python-*/vendor/llama.cpp"))
        build = work / "build"
        folder = server_dir(version)
        # The compiler's warnings (thousands of lines) go to a log beside the binary.
        with (folder / "build.log").open("w") as log:
            for command in (["cmake", "-S", str(source), "-B", str(build), *CMAKE_FLAGS],
                            ["cmake", "--build", str(build), "--target", "llama-server", "-j", str(jobs)]):
                subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT)
        (folder / "bin").mkdir(exist_ok=True)
        shutil.copy2(build / "bin" / "llama-server", folder / "bin" / "llama-server")
    binary = folder / "bin" / "llama-server"
    record = {"llama_cpp_python": version, "sdist": sdist.name, "llama_server_version": server_version(binary),
              "cmake_flags": CMAKE_FLAGS,
              "jobs": jobs, "machine": platform.machine(), "seconds": round(time.perf_counter() - started)}
    # Written last: its presence marks a finished build.
    (folder / "build.json").write_text(json.dumps(record, indent=2) + "\n")
    logger.info("llama-server %s built in %d s", version, record["seconds"])
    return binary


def llama_server(version: str = LLAMA_CPP_PYTHON_VERSION, jobs: int = 2) -> Path:
    """The cached ``llama-server``, built first when absent."""
    return find_llama_server(version) or build_llama_server(version, jobs)


def server_version(binary: Path) -> str:
    """What ``llama-server --version`` says (build number and commit)."""
    done = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=60)
    return " ".join((done.stdout + done.stderr).split())[:200]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", default=LLAMA_CPP_PYTHON_VERSION, help="llama-cpp-python sdist version")
    parser.add_argument("--jobs", type=int, default=2, help="parallel compile jobs")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    binary = llama_server(args.version, args.jobs)
    print(binary, server_version(binary))


if __name__ == "__main__":
    main()
