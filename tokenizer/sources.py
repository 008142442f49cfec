"""Reading training and evaluation text: plain text, gzip, JSONL, TSV/CSV and `datasets` sources.

A corpus spec is a path (``.txt``, ``.jsonl``, ``.tsv``, ``.csv``, any of them ``.gz``) or ``hf:NAME_OR_DIR``
for a `datasets` source (a folder written by ``save_to_disk`` or a hub name when the hub is allowed).
Every source yields one text per line / record, NFC-normalised, empty ones dropped.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from nexus_k.core.errors import UserError
from tokenizer.normalize import nfc

logger = logging.getLogger(__name__)

HF_PREFIX = "hf:"


@dataclass
class SourceOptions:
    """How records are turned into text."""

    text_field: str = "text"
    """Field (JSONL, `datasets`) or column (TSV/CSV with a header row) that holds the text."""
    split: str = "train"
    """Split to read from a `datasets` source."""
    dataset_config: str | None = None
    """Configuration (subset) name of a `datasets` source, if it has several."""


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="replace")
    return path.open("r", encoding="utf-8", errors="replace")


def _inner_suffix(path: Path) -> str:
    """The format suffix, looking through a trailing ``.gz``."""
    return Path(path.stem).suffix if path.suffix == ".gz" else path.suffix


def _iter_jsonl(path: Path, field: str) -> Iterator[str]:
    with _open_text(path) as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise UserError(f"{path}:{number}: not valid JSON ({err.msg})") from err
            if not isinstance(record, dict) or field not in record:
                raise UserError(f"{path}:{number}: no field {field!r} (use --text-field)")
            value = record[field]
            if isinstance(value, str):
                yield value


def _iter_delimited(path: Path, field: str, delimiter: str) -> Iterator[str]:
    csv.field_size_limit(sys.maxsize)
    with _open_text(path) as handle:
        reader = csv.DictReader(handle, delimiter=delimiter, quoting=csv.QUOTE_NONE if delimiter == "\t" else 0)
        if reader.fieldnames is None or field not in reader.fieldnames:
            raise UserError(f"{path}: no column {field!r}; columns are {reader.fieldnames} (use --text-field)")
        for row in reader:
            value = row.get(field)
            if value:
                yield value


def _iter_lines(path: Path) -> Iterator[str]:
    with _open_text(path) as handle:
        for line in handle:
            yield line.rstrip("\n")


def _iter_datasets(spec: str, options: SourceOptions) -> Iterator[str]:
    import datasets

    name = spec[len(HF_PREFIX) :]
    if Path(name).is_dir():
        loaded = datasets.load_from_disk(name)
        if isinstance(loaded, datasets.DatasetDict):
            if options.split not in loaded:
                raise UserError(f"{name}: no split {options.split!r}; splits are {list(loaded)}")
            loaded = loaded[options.split]
    else:
        try:
            loaded = datasets.load_dataset(name, options.dataset_config, split=options.split)
        except Exception as err:  # datasets raises many types for "not found" / "offline"
            raise UserError(f"cannot load dataset {name!r}: {err}".splitlines()[0]) from err
    if options.text_field not in loaded.column_names:
        raise UserError(f"{name}: no column {options.text_field!r}; columns are {loaded.column_names}")
    for value in loaded[options.text_field]:
        if isinstance(value, str):
            yield value


def iter_source(spec: str | Path, options: SourceOptions | None = None) -> Iterator[str]:
    """Yield the NFC-normalised, non-empty texts of one corpus spec."""
    options = options or SourceOptions()
    spec = str(spec)
    if spec.startswith(HF_PREFIX):
        raw: Iterator[str] = _iter_datasets(spec, options)
    else:
        path = Path(spec)
        if not path.is_file():
            raise UserError(f"corpus file not found: {path}")
        kind = _inner_suffix(path)
        if kind == ".jsonl":
            raw = _iter_jsonl(path, options.text_field)
        elif kind in (".tsv", ".csv"):
            raw = _iter_delimited(path, options.text_field, "\t" if kind == ".tsv" else ",")
        else:
            raw = _iter_lines(path)
    for text in raw:
        text = nfc(text).strip()
        if text:
            yield text


def iter_corpus(
    specs: list[str] | list[Path], options: SourceOptions | None = None, max_chars: int | None = None
) -> Iterator[str]:
    """Yield texts from several sources in order, stopping once ``max_chars`` characters were read."""
    total = 0
    for spec in specs:
        for text in iter_source(spec, options):
            yield text
            total += len(text)
            if max_chars is not None and total >= max_chars:
                logger.info("stopped reading at %d characters (max_chars)", total)
                return


def read_corpus(
    specs: list[str] | list[Path], options: SourceOptions | None = None, max_chars: int | None = None
) -> list[str]:
    """All texts of the given sources as a list (see :func:`iter_corpus`)."""
    texts = list(iter_corpus(specs, options, max_chars))
    if not texts:
        raise UserError(f"no text found in {', '.join(map(str, specs))}")
    return texts
