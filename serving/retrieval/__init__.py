"""Document Q&A's serving side: text out of office files (``ingest``, ``ingest_hwp``, ``ingest_process``),
Korean-aware chunks (``chunking``) and hybrid search over a vector store's chunks (``search``), on the index
primitives of the top-level ``retrieval`` package."""
