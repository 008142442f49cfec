"""The recipe of the demo model's kept vocabulary: which Gemma 3 tokens Korean and English text uses.

    python -m serving.demo_vocab_recipe --data-dir ../shared/data

Encodes the recipe's corpora with the untrimmed demo tokenizer and writes the token ids they use, with the
recipe (sources, their SHA256, sizes) and the vocabulary's fingerprint, to ``serving/demo_vocab/``. The demo
conversion trims to those ids (plus special, byte-fallback and chat-template tokens, and the BPE pieces their
merges need), so the product needs no corpus at run time. Sources:

- NSMC raw reviews (CC0), minus any review whose text is in ``nsmc_style_test_10k.tsv`` (held out for
  ``bench/trim_quality.py``);
- KoBEST train splits (CC BY-SA 4.0), every text column;
- the chatbot data the Korean chat adapter was trained on (``chatbot_data/ChatbotData.csv``, Q and A);
- English licence texts: ``/usr/share/common-licenses/*`` (Debian's base-files).
"""

from __future__ import annotations

import argparse
import glob
import json
import logging
import time
from pathlib import Path

from serving.demo_model import prepare_demo_model, sha256_file

logger = logging.getLogger(__name__)

VOCAB_DIR = Path(__file__).resolve().parent / "demo_vocab"
USED_IDS_FILE = VOCAB_DIR / "gemma3_270m_used_token_ids.json"
KOBEST_COLUMNS = {"BoolQ": ["Text", "Question"], "COPA": ["sentence", "1", "2"],
                  "HellaSwag": ["context", "choice1", "choice2", "choice3", "choice4"],
                  "SentiNeg": ["Text"], "WiC": ["SENTENCE1", "SENTENCE2"]}
ENGLISH_LICENCES = "/usr/share/common-licenses/*"
HELD_OUT_NSMC = "nsmc/nsmc_style_test_10k.tsv"


def recipe_sources(data_dir: Path) -> list[tuple[Path, str]]:
    """(file, text column) pairs of the recipe; a plain-text file has column ``""``."""
    sources = [(data_dir / "nsmc" / "nsmc_raw_reviews.tsv.gz", "review")]
    for task, columns in KOBEST_COLUMNS.items():
        sources += [(data_dir / "kobest" / task / "train.tsv", column) for column in columns]
    sources += [(data_dir / "chatbot_data" / "ChatbotData.csv", column) for column in ("Q", "A")]
    sources += [(Path(p), "") for p in sorted(glob.glob(ENGLISH_LICENCES))]
    return sources


def build_used_ids(data_dir: Path) -> dict:
    """Encode the recipe's text with the untrimmed demo tokenizer; the ids used and the recipe record."""
    from transformers import AutoTokenizer

    from tokenizer.sources import SourceOptions, iter_source
    from tokenizer.trim import used_token_ids, vocab_sha256

    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(prepare_demo_model(progress=True, full_vocab=True))
    held_out = set(iter_source(data_dir / HELD_OUT_NSMC, SourceOptions(text_field="document")))
    used: set[int] = set()
    records = []
    for path, column in recipe_sources(data_dir):
        texts = [t for t in iter_source(path, SourceOptions(text_field=column or "text")) if t not in held_out]
        ids = used_token_ids(tokenizer, texts)
        used |= ids
        records.append({"file": str(path.relative_to(data_dir)) if path.is_relative_to(data_dir) else str(path),
                        "column": column or None, "sha256": sha256_file(path), "texts": len(texts),
                        "chars": sum(map(len, texts)), "token_ids": len(ids)})
        logger.info("%s %s: %d texts, %d token ids (%d in all)", path.name, column, len(texts), len(ids), len(used))
    data = json.loads(tokenizer.backend_tokenizer.to_str())
    return {
        "recipe": {
            "command": "python -m serving.demo_vocab_recipe --data-dir ../shared/data",
            "tokenizer": "the untrimmed demo model (gemma-3-270m-full), add_special_tokens=False",
            "normalisation": "NFC, stripped, empty texts dropped (tokenizer.sources)",
            "held_out": f"reviews whose text is in {HELD_OUT_NSMC} are left out",
            "sources": records,
            "seconds": round(time.perf_counter() - started, 1),
        },
        "vocab_size": len(tokenizer),
        "vocab_sha256": vocab_sha256(data),
        "used_token_ids": sorted(used),
    }


def main(argv: list[str] | None = None) -> None:
    """Write ``serving/demo_vocab/gemma3_270m_used_token_ids.json`` from the recipe's corpora."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, default=USED_IDS_FILE)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    record = build_used_ids(args.data_dir.resolve())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    head = json.dumps({k: v for k, v in record.items() if k != "used_token_ids"}, indent=1, ensure_ascii=False)
    # One id list on one line keeps the file small and its diff readable at the recipe's level.
    text = head[:-2] + ',\n "used_token_ids": ' + json.dumps(record["used_token_ids"]) + "\n}\n"
    args.out.write_text(text, encoding="utf-8")
    logger.info("%d used token ids -> %s", len(record["used_token_ids"]), args.out)


if __name__ == "__main__":
    main()
