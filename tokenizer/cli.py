"""``nexus-k tokenizer``: train, measure, trim and extend Korean tokenizers.

Heavy libraries (tokenizers, transformers, torch) are imported inside the commands.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

app = typer.Typer(no_args_is_help=True)

CorpusOpt = typer.Option(..., "--corpus", help="Text/gzip/JSONL/TSV/CSV file or hf:NAME_OR_DIR; repeatable.")
TextFieldOpt = typer.Option("text", "--text-field", help="JSONL field or TSV/CSV/datasets column with the text.")


@app.command()
def train(
    corpus: list[str] = CorpusOpt,
    out: Path = typer.Option(..., "--out", help="Output folder for the tokenizer."),
    vocab_size: int = typer.Option(32000, "--vocab-size", help="Vocabulary size including specials and bytes."),
    algorithm: str = typer.Option("bpe", "--algorithm", help="bpe or unigram."),
    pretokenize: str = typer.Option("none", "--pretokenize", help="none or kiwi (morpheme-aware, training only)."),
    backend: str = typer.Option(
        "auto", "--backend", help="hf (Hugging Face tokenizers), sentencepiece, or auto (hf BPE, SP Unigram)."
    ),
    min_frequency: int = typer.Option(2, "--min-frequency", help="BPE: minimum pair count to merge."),
    max_chars: int | None = typer.Option(None, "--max-chars", help="Read at most this many characters."),
    seed: int = typer.Option(0, "--seed", help="Seed (SentencePiece sampling)."),
    text_field: str = TextFieldOpt,
    split: str = typer.Option("train", "--split", help="Split of a datasets source."),
    dataset_config: str | None = typer.Option(None, "--dataset-config", help="Config of a datasets source."),
) -> None:
    """Train a Korean tokenizer (NFC, byte fallback, ChatML specials) loadable by AutoTokenizer and vLLM."""
    from tokenizer.train import TrainConfig, train_tokenizer

    config = TrainConfig(
        corpus=corpus,
        out=str(out),
        vocab_size=vocab_size,
        algorithm=algorithm,  # type: ignore[arg-type]
        backend=backend,  # type: ignore[arg-type]
        pretokenize=pretokenize,  # type: ignore[arg-type]
        min_frequency=min_frequency,
        max_chars=max_chars,
        seed=seed,
        text_field=text_field,
        split=split,
        dataset_config=dataset_config,
    )
    result = train_tokenizer(config)
    typer.echo(
        f"saved {result.vocab_size}-token tokenizer to {result.out} "
        f"({result.corpus_chars:,} chars, trained in {result.train_seconds:.1f}s)"
    )


@app.command()
def stats(
    tokenizer: list[str] = typer.Option(..., "--tokenizer", help="Folder, hub name or .gguf file; repeatable."),
    text: list[str] = typer.Option(..., "--text", help="Text file (any corpus format); repeatable."),
    text_field: str = TextFieldOpt,
    max_texts: int | None = typer.Option(None, "--max-texts", help="Use at most this many texts per file."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Tokens per character / eojeol, bytes per token, unknown rate and round-trip exactness, side by side."""
    from itertools import islice

    from rich.console import Console

    from tokenizer.sources import SourceOptions, iter_source
    from tokenizer.stats import compare, load_tokenizer, rows_as_dicts, stats_table

    options = SourceOptions(text_field=text_field)
    sources = {name: list(islice(iter_source(name, options), max_texts)) for name in text}
    loaded = {name: load_tokenizer(name) for name in tokenizer}
    rows = compare(loaded, sources)
    if as_json:
        typer.echo(json.dumps(rows_as_dicts(rows), indent=2, ensure_ascii=False))
    else:
        Console().print(stats_table(rows))


@app.command()
def trim(
    model: str = typer.Option(..., "--model", help="Model folder, hub name or .gguf file."),
    corpus: list[str] | None = typer.Option(None, "--corpus", help="Text whose tokens are kept; repeatable."),
    out: Path = typer.Option(..., "--out", help="Output folder for the trimmed model."),
    text_field: str = TextFieldOpt,
    max_chars: int | None = typer.Option(None, "--max-chars", help="Read at most this many characters."),
    keep_reserved: bool = typer.Option(False, "--keep-reserved", help="Keep <unusedN>-style placeholders."),
    dtype: str = typer.Option("auto", "--dtype", help="auto, float32, bfloat16 ..."),
    token_ids: Path | None = typer.Option(
        None, "--token-ids", help="JSON file with used_token_ids to keep (a recorded recipe's result)."),
) -> None:
    """Keep only the vocabulary a corpus uses (plus special, byte and chat-template tokens); shrink the
    embedding and lm_head."""
    from nexus_k.core.errors import UserError
    from tokenizer.trim import TrimConfig, trim_model

    if not corpus and token_ids is None:
        raise UserError("give --corpus (repeatable) or --token-ids")
    config = TrimConfig(model, corpus or [], str(out), text_field, max_chars, keep_reserved=keep_reserved,
                        dtype=dtype, token_ids=str(token_ids) if token_ids else None)
    report = trim_model(config)
    typer.echo(
        f"vocabulary {report.vocab_before:,} -> {report.vocab_after:,}; parameters "
        f"{report.parameters_before:,} -> {report.parameters_after:,} (-{report.parameter_cut:.1%})"
    )
    if report.max_logit_diff is not None:
        typer.echo(
            f"logits on kept text: max |diff| {report.max_logit_diff:.2e}, argmax agreement "
            f"{report.argmax_agreement:.1%}; forward {report.forward_seconds_before:.3f}s -> "
            f"{report.forward_seconds_after:.3f}s"
        )
    typer.echo(f"saved to {out}")


@app.command()
def extend(
    model: str = typer.Option(..., "--model", help="Base model folder, hub name or .gguf file."),
    tokenizer: str = typer.Option(..., "--tokenizer", help="Korean tokenizer whose pieces are added."),
    num_new: int = typer.Option(..., "--num-new", help="How many tokens to add."),
    out: Path = typer.Option(..., "--out", help="Output folder for the extended model."),
    corpus: list[str] | None = typer.Option(None, "--corpus", help="Rank candidates by use on this text."),
    text_field: str = TextFieldOpt,
    dtype: str = typer.Option("auto", "--dtype", help="auto, float32, bfloat16 ..."),
) -> None:
    """Add Korean tokens to a model's tokenizer; new embeddings are the mean of their base pieces (EEVE)."""
    from tokenizer.extend import ExtendConfig, extend_model

    added = extend_model(
        ExtendConfig(model, tokenizer, num_new, str(out), corpus or None, text_field=text_field, dtype=dtype)
    )
    examples = ", ".join(repr(t.text) for t in added[:8])
    typer.echo(f"added {len(added)} tokens ({examples} ...); saved to {out}")
