"""vLLM's pooling runner reads the same sentence-transformers pooling as the transformers engine: same vectors;
its classify task scores (query, document) pairs as the transformers cross-encoder engine does."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from serving.engines import vllm_available
from tests.serving.test_embeddings import TEXTS, embed_model_dir  # noqa: F401  (fixture)
from tests.serving.test_rerank_cross_encoder import reranker_dir  # noqa: F401  (fixture)


@pytest.mark.slow
@pytest.mark.skipif(not vllm_available(), reason="vLLM is not installed")
def test_vllm_pooling_matches_the_transformers_engine(embed_model_dir) -> None:  # noqa: F811
    from serving.engines.hf_pooling import HFPoolingEngine
    from serving.engines.vllm import VLLMPoolingEngine

    async def both() -> tuple[list, list, list[int]]:
        vllm = await VLLMPoolingEngine.create(str(embed_model_dir), dtype="float32", kv_cache_gib=1,
                                              engine_args={"enforce_eager": True})
        try:
            ids = [vllm.tokenizer(t).input_ids for t in TEXTS]
            from_vllm = await vllm.pool(ids, "v")
            dims = vllm.matryoshka_dimensions
        finally:
            await vllm.shutdown()
        hf = await HFPoolingEngine.create(str(embed_model_dir))
        return from_vllm, await hf.pool(ids, "h"), dims

    from_vllm, from_hf, dims = asyncio.run(both())
    np.testing.assert_allclose(np.asarray(from_vllm), np.asarray(from_hf), atol=1e-4)
    assert dims == [32, 64]


@pytest.mark.slow
@pytest.mark.skipif(not vllm_available(), reason="vLLM is not installed")
def test_vllm_cross_encoder_matches_the_transformers_engine(reranker_dir) -> None:  # noqa: F811
    from serving.engines.base import PairPrompt
    from serving.engines.hf_scoring import HFScoringEngine
    from serving.engines.vllm import VLLMScoringEngine
    from tests.serving.test_rerank_cross_encoder import DOCUMENTS, QUERY

    async def both() -> tuple[list[float], list[float]]:
        vllm = await VLLMScoringEngine.create(str(reranker_dir), dtype="float32", kv_cache_gib=1,
                                              engine_args={"enforce_eager": True})
        try:
            pairs = [PairPrompt(list(ids)) for ids in vllm.tokenizer([QUERY] * len(DOCUMENTS), DOCUMENTS).input_ids]
            from_vllm = await vllm.score(pairs, "v")
        finally:
            await vllm.shutdown()
        hf = await HFScoringEngine.create(str(reranker_dir))
        return from_vllm, await hf.score(pairs, "h")

    from_vllm, from_hf = asyncio.run(both())
    np.testing.assert_allclose(from_vllm, from_hf, atol=1e-4)
