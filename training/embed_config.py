"""Typed configuration of ``nexus-k train embed``; saved as ``embed_config.json|yaml`` beside the model."""

from __future__ import annotations

from dataclasses import dataclass, field

from nexus_k.core.errors import UserError

POOLING_MODES = ("mean", "last", "cls")
MINERS = ("bm25", "base", "none")


@dataclass
class EmbedConfig:
    """Everything ``nexus-k train embed`` needs; the CLI options map one to one onto these fields."""

    base: str
    """Base model: HF folder or hub name (decoder or encoder; loaded with ``AutoModel``)."""
    data: str
    """Training pairs: JSONL, one ``{"query": ..., "positive": ..., "negatives": [...]}`` per line
    (``negatives`` optional)."""
    out: str
    """Output folder: adapter or weights, tokenizer, pooling config, embed config, report, loss curve."""
    lora: bool = True
    """LoRA adapters (peft) on the projections; False fine-tunes every weight."""
    pooling: str = "mean"
    """How token vectors become one vector: ``mean`` over the attention mask, ``last`` token, or ``cls``
    (first token)."""
    normalize: bool = True
    """Scale embeddings to unit length (cosine similarity = dot product)."""
    matryoshka_dims: list[int] = field(default_factory=list)
    """Extra prefix lengths trained to work on their own (e.g. 64, 128, 256); empty: full size only."""
    temperature: float = 0.05
    """Softmax temperature of the InfoNCE loss over cosine similarities."""
    cosent_scale: float = 20.0
    """Scale of cosine differences in the CoSENT loss of scored pairs (data lines with a ``score``)."""
    init_adapter: str | None = None
    """LoRA adapter folder (from an earlier ``train embed`` on the same base) to continue training, instead of
    fresh adapters: e.g. a second stage on scored KorSTS pairs after retrieval pairs."""
    hard_negatives: int = 1
    """Hard negatives per query in each batch (given in the data first, then mined); 0: in-batch only."""
    mine: str = "bm25"
    """Mine missing hard negatives among the data's positives with ``bm25`` (Kiwi morphemes), the ``base``
    model's embeddings, or ``none``."""
    mine_rank_from: int = 3
    """Skip this many best-ranked candidates when mining (they are often unlabelled true answers)."""
    mine_rank_to: int = 30
    """Pick a mined negative at random among candidates ranked up to this."""
    max_length: int = 128
    """Tokens kept per text in training (longer texts are truncated)."""
    max_seq_length: int = 512
    """Tokens per input the saved model declares for use (``sentence_bert_config.json``); passages are
    often longer than what training needs to see."""
    group_by_length: bool = True
    """Batch pairs of similar positive length together (less padding; harder in-batch negatives)."""
    batch_size: int = 32
    """Pairs per optimizer step; each query sees the other pairs' positives as negatives."""
    epochs: float = 1.0
    """Passes over the pairs."""
    max_steps: int | None = None
    """Stop after this many optimizer steps instead of counting epochs."""
    lr: float = 2e-4
    """Peak learning rate (use ~2e-5 for full fine-tuning)."""
    warmup_ratio: float = 0.05
    """Fraction of the steps spent warming up."""
    weight_decay: float = 0.0
    """AdamW weight decay on matrices."""
    lora_r: int = 16
    """LoRA rank."""
    lora_alpha: int | None = None
    """LoRA scaling numerator (None: twice the rank)."""
    lora_dropout: float = 0.0
    """Dropout on the LoRA input."""
    target_modules: list[str] = field(default_factory=list)
    """Linear layers to adapt (empty: the attention and MLP projections found in the model)."""
    eval_sts: str | None = None
    """KorSTS-format TSV (``sentence1``, ``sentence2``, ``score`` columns) scored before and after training
    (Spearman of cosine vs gold)."""
    eval_sts_max: int | None = 500
    """Score at most this many STS pairs (the first ones; None: all)."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass (far less memory for big batches, ~30% more compute)."""
    time_budget_s: float | None = None
    """Stop training after this many seconds (the model is still saved and evaluated)."""
    precision: str = "bf16"
    """``bf16`` autocast or ``fp32``."""
    threads: int | None = None
    """torch CPU threads (None: torch's default)."""
    seed: int = 0
    """Seed for mining, data order and LoRA initialisation."""
    log_every: int = 1
    """Record the training loss every this many steps."""

    def __post_init__(self) -> None:
        if self.pooling not in POOLING_MODES:
            raise UserError(f"--pooling must be one of {', '.join(POOLING_MODES)}, not {self.pooling!r}")
        if self.mine not in MINERS:
            raise UserError(f"--mine must be one of {', '.join(MINERS)}, not {self.mine!r}")
        if self.precision not in ("bf16", "fp32"):
            raise UserError(f"--precision must be bf16 or fp32, not {self.precision!r}")
        if self.batch_size < 2:
            raise UserError("--batch-size must be at least 2 (in-batch negatives need another pair)")
        if self.temperature <= 0 or self.cosent_scale <= 0:
            raise UserError("--temperature and --cosent-scale must be positive")
        if self.init_adapter is not None and not self.lora:
            raise UserError("--init-adapter continues a LoRA adapter; it cannot go with --full")
        if self.hard_negatives < 0 or self.lora_r < 1 or self.max_length < 4:
            raise UserError("--hard-negatives must be >= 0, --lora-r >= 1 and --max-length >= 4")
        if self.epochs <= 0 and not self.max_steps:
            raise UserError("--epochs must be positive")
        if not 0 <= self.mine_rank_from < self.mine_rank_to:
            raise UserError("--mine-rank-from must be >= 0 and below --mine-rank-to")
        if any(d < 1 for d in self.matryoshka_dims):
            raise UserError("--matryoshka-dims must be positive integers")
        self.matryoshka_dims = sorted(set(self.matryoshka_dims))
