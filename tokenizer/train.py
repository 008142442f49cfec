"""Train a Korean-efficient tokenizer and save it as a Hugging Face fast tokenizer.

Two back ends:
- ``hf`` (default): Hugging Face ``tokenizers`` BPE or Unigram over a byte-level alphabet, so every byte
  sequence has a token (byte fallback by construction: nothing is ever unknown, every string round-trips).
- ``sentencepiece``: SentencePiece BPE or Unigram with ``byte_fallback``, converted to a fast tokenizer.

Both normalise to NFC, add the project's special tokens and ChatML chat template, and write the resolved
config (plus corpus size and training time) to ``nexus_k_tokenizer.json`` beside ``tokenizer.json``.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from nexus_k.core.chat_templates import CHATML_TEMPLATE, SPECIAL_TOKENS
from nexus_k.core.errors import UserError
from tokenizer.normalize import MORPHEME_SEPARATOR, KiwiSplitter
from tokenizer.sources import SourceOptions, iter_corpus

logger = logging.getLogger(__name__)

CONFIG_FILE = "nexus_k_tokenizer.json"


@dataclass
class TrainConfig:
    """Everything that determines a trained tokenizer (saved beside it as ``nexus_k_tokenizer.json``)."""

    corpus: list[str]
    """Corpus specs: text / gzip / JSONL / TSV / CSV files, or ``hf:NAME_OR_DIR`` for a `datasets` source."""
    out: str
    """Output folder (created); receives tokenizer.json, tokenizer_config.json and the config file."""
    vocab_size: int = 32000
    """Vocabulary size including special tokens and the 256 byte tokens."""
    algorithm: Literal["bpe", "unigram"] = "bpe"
    """Subword algorithm."""
    backend: Literal["auto", "hf", "sentencepiece"] = "auto"
    """``hf``: Hugging Face tokenizers (byte-level); ``sentencepiece``: SentencePiece with byte fallback;
    ``auto``: ``hf`` for BPE, ``sentencepiece`` for Unigram (its Unigram trainer is many times faster)."""
    pretokenize: Literal["none", "kiwi"] = "none"
    """``kiwi``: learned tokens never cross a morpheme boundary found by Kiwi (training only)."""
    min_frequency: int = 2
    """BPE: a pair must occur this often to be merged."""
    max_token_length: int = 24
    """Longest token in alphabet units (bytes for ``hf``, characters for ``sentencepiece``)."""
    max_chars: int | None = None
    """Read at most this many characters of corpus (in order); ``None`` reads everything."""
    seed: int = 0
    """Seed for SentencePiece's sentence sampling; ``hf`` training is deterministic without one."""
    text_field: str = "text"
    """JSONL field, TSV/CSV column or `datasets` column holding the text."""
    split: str = "train"
    """Split of a `datasets` source."""
    dataset_config: str | None = None
    """Configuration name of a `datasets` source."""
    model_max_length: int = 8192
    """Maximum sequence length recorded in tokenizer_config.json."""
    kiwi_workers: int = 0
    """Threads for Kiwi (0: all cores)."""
    show_progress: bool = True
    """Show progress bars while reading and training."""
    special_tokens: list[str] = field(default_factory=lambda: list(SPECIAL_TOKENS))
    """Special tokens, first ids in this order (the tiny model's: unk, bos, eos, pad, ChatML markers)."""

    def __post_init__(self) -> None:
        if self.algorithm not in ("bpe", "unigram"):
            raise UserError(f"--algorithm must be bpe or unigram, not {self.algorithm!r}")
        if self.backend not in ("auto", "hf", "sentencepiece"):
            raise UserError(f"--backend must be auto, hf or sentencepiece, not {self.backend!r}")
        if self.backend == "auto":
            self.backend = "hf" if self.algorithm == "bpe" else "sentencepiece"
        if self.pretokenize not in ("none", "kiwi"):
            raise UserError(f"--pretokenize must be none or kiwi, not {self.pretokenize!r}")
        minimum = 256 + len(self.special_tokens) + 1
        if self.vocab_size < minimum:
            raise UserError(f"--vocab-size must be at least {minimum} (bytes + special tokens)")
        if not self.corpus:
            raise UserError("give at least one --corpus")


@dataclass
class TrainResult:
    """What a training run produced."""

    out: Path
    vocab_size: int
    corpus_texts: int
    corpus_chars: int
    read_seconds: float
    train_seconds: float


def _read_texts(config: TrainConfig) -> list[str]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    options = SourceOptions(config.text_field, config.split, config.dataset_config)
    texts: list[str] = []
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, disable=not config.show_progress, transient=True) as progress:
        task = progress.add_task("reading corpus (chars)", total=config.max_chars)
        for text in iter_corpus(config.corpus, options, config.max_chars):
            texts.append(text)
            progress.advance(task, len(text))
        if config.pretokenize == "kiwi":
            splitter = KiwiSplitter(config.kiwi_workers)
            task = progress.add_task("Kiwi morpheme boundaries (texts)", total=len(texts))
            split_texts, batch = [], 2048
            for start in range(0, len(texts), batch):
                split_texts.extend(splitter.split(texts[start : start + batch]))
                progress.advance(task, min(batch, len(texts) - start))
            texts = split_texts
    if not texts:
        raise UserError(f"no text found in {', '.join(config.corpus)}")
    return texts


def _train_hf(texts: list[str], config: TrainConfig):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if config.algorithm == "bpe":
        tok = Tokenizer(models.BPE())
        trainer = trainers.BpeTrainer(
            vocab_size=config.vocab_size,
            min_frequency=config.min_frequency,
            special_tokens=config.special_tokens,
            initial_alphabet=alphabet,
            max_token_length=config.max_token_length,
            show_progress=config.show_progress,
        )
    else:
        tok = Tokenizer(models.Unigram())
        trainer = trainers.UnigramTrainer(
            vocab_size=config.vocab_size,
            special_tokens=config.special_tokens,
            initial_alphabet=alphabet,
            unk_token=config.special_tokens[0],
            max_piece_length=config.max_token_length,
            show_progress=config.show_progress,
        )
    tok.normalizer = normalizers.NFC()
    if config.pretokenize == "kiwi":
        split = pre_tokenizers.Split(MORPHEME_SEPARATOR, behavior="removed")
        tok.pre_tokenizer = pre_tokenizers.Sequence([split, byte_level])
    else:
        tok.pre_tokenizer = byte_level
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    # Inference needs no Kiwi: the morpheme-shaped vocabulary works with plain byte-level splitting.
    tok.pre_tokenizer = byte_level
    return tok


def _train_sentencepiece(texts: list[str], config: TrainConfig):
    import io

    import sentencepiece as spm
    from tokenizers import normalizers

    from tokenizer.spm_convert import sentencepiece_to_fast

    unk, bos, eos, pad, *rest = config.special_tokens
    spm.set_random_generator_seed(config.seed)
    model = io.BytesIO()
    arguments: dict = dict(
        sentence_iterator=iter(texts),
        model_writer=model,
        model_type=config.algorithm,
        vocab_size=config.vocab_size,
        byte_fallback=True,
        character_coverage=0.9995,
        hard_vocab_limit=False,  # a small corpus gives a smaller vocabulary instead of an error
        normalization_rule_name="identity",  # NFC is applied when reading and by the fast tokenizer
        remove_extra_whitespaces=False,
        add_dummy_prefix=False,
        allow_whitespace_only_pieces=True,
        split_digits=True,
        max_sentencepiece_length=config.max_token_length,
        unk_piece=unk,
        bos_piece=bos,
        eos_piece=eos,
        pad_piece=pad,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=3,
        user_defined_symbols=rest,
        pretokenization_delimiter=MORPHEME_SEPARATOR if config.pretokenize == "kiwi" else "",
        num_threads=2,
        max_sentence_length=1 << 16,
        minloglevel=2,
    )
    try:
        spm.SentencePieceTrainer.train(**arguments)
    except RuntimeError as err:  # e.g. "Vocabulary size is smaller than required_chars"
        raise UserError(f"SentencePiece training failed: {str(err).split('] ')[-1]}") from err
    tok = sentencepiece_to_fast(model.getvalue())
    tok.normalizer = normalizers.Sequence([normalizers.NFC(), tok.normalizer])
    return tok


def save_fast_tokenizer(tok, out: Path, special_tokens: list[str], model_max_length: int):
    """Wrap a ``tokenizers.Tokenizer`` with the project's special tokens and chat template; save to ``out``."""
    from transformers import PreTrainedTokenizerFast

    unk, bos, eos, pad, *rest = special_tokens
    extra = [eos, *rest]
    im_end = "<|im_end|>" if "<|im_end|>" in special_tokens else eos
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=bos,
        eos_token=im_end,
        unk_token=unk,
        pad_token=pad,
        additional_special_tokens=[t for t in extra if t != im_end],
        model_max_length=model_max_length,
    )
    fast.chat_template = CHATML_TEMPLATE
    out.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(out)
    return fast


def train_tokenizer(config: TrainConfig, texts: list[str] | None = None) -> TrainResult:
    """Read the corpus (or take ``texts`` already read from it), train, save the tokenizer and its resolved
    config; return sizes and timings."""
    import tokenizers

    start = time.perf_counter()
    if texts is None:
        texts = _read_texts(config)
    read_seconds = time.perf_counter() - start
    chars = sum(len(t) for t in texts) - sum(t.count(MORPHEME_SEPARATOR) for t in texts)
    logger.info("training %s/%s on %d texts (%d chars)", config.backend, config.algorithm, len(texts), chars)
    start = time.perf_counter()
    if config.backend == "hf":
        tok = _train_hf(texts, config)
    else:
        tok = _train_sentencepiece(texts, config)
    train_seconds = time.perf_counter() - start
    out = Path(config.out)
    fast = save_fast_tokenizer(tok, out, config.special_tokens, config.model_max_length)
    result = TrainResult(out, len(fast), len(texts), chars, round(read_seconds, 2), round(train_seconds, 2))
    record = {
        "config": asdict(config),
        "result": {k: v for k, v in asdict(result).items() if k != "out"},
        "versions": {"tokenizers": tokenizers.__version__},
    }
    (out / CONFIG_FILE).write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    logger.info("saved %d-token tokenizer to %s (%.1fs training)", result.vocab_size, out, train_seconds)
    return result
