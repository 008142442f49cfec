"""Korean chat data for the demo adapter: OpenAI ``messages`` JSONL with a fixed held-out split.

Sources (both MIT): songys/Chatbot_data (``ChatbotData.csv``, single-turn Q/A pairs) and the acceptable
responses of SQuARe (``square/response_test_ood.json``, naver-ai/korean-safety-benchmarks). A pair goes to
the held-out split by a hash of its normalised *answer*, so an answer (many repeat) is never in both
splits. Run ``python -m training.demo_data --out data/demo`` (see docs/demo.md).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import random
import unicodedata
from dataclasses import asdict, dataclass, field
from pathlib import Path

from nexus_k.core.errors import UserError

logger = logging.getLogger(__name__)

CHATBOT_CSV = Path("chatbot_data") / "ChatbotData.csv"
SQUARE_RESPONSES = Path("square") / "response_test_ood.json"
# Chatbot_data's own labels (README): everyday talk, breakup (negative), love (positive).
CHATBOT_TOPICS = {"0": "daily", "1": "breakup", "2": "love"}


@dataclass
class DemoDataConfig:
    """How the demo chat data set is built; saved as ``recipe.json`` beside the JSONL files."""

    data_dir: str
    """Folder holding ``chatbot_data/`` and ``square/`` (the project's shared data layout)."""
    heldout_percent: int = 5
    """Percent of distinct answers (with all their pairs) set aside for evaluation."""
    max_train: int | None = 256
    """Keep at most this many training pairs (a seeded sample; None keeps all). CPU training budget."""
    max_heldout: int | None = 160
    """Keep at most this many held-out pairs (a seeded sample; None keeps all)."""
    max_chars: int = 160
    """Drop pairs whose question + answer exceed this many characters (keeps sequences short)."""
    include_square: bool = True
    """Add SQuARe's acceptable responses to sensitive questions (longer, careful answers)."""
    seed: int = 0
    """Seed for the subsampling and the order of the training file."""
    split_salt: str = "nexus-k-demo-v1"
    """Salt of the answer hash that decides the split (changing it changes the split)."""


@dataclass
class DemoDataReport:
    """Counts of what was written."""

    train: int = 0
    """Training pairs written."""
    heldout: int = 0
    """Held-out pairs written."""
    by_source: dict[str, dict[str, int]] = field(default_factory=dict)
    """Per source: pairs read, dropped (too long or empty), train and held-out pairs before subsampling."""
    source_sha256: dict[str, str] = field(default_factory=dict)
    """SHA256 of each source file read."""


def _clean(text: str) -> str:
    return " ".join(unicodedata.normalize("NFC", text).split())


def is_heldout(answer: str, percent: int, salt: str) -> bool:
    """Whether a pair with this answer belongs to the held-out split (stable across runs and machines)."""
    digest = hashlib.sha256(f"{salt}\x00{_clean(answer)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 100 < percent


def read_chatbot_pairs(path: Path) -> list[dict[str, str]]:
    """Question/answer pairs from ChatbotData.csv (columns Q, A, label)."""
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    if rows and not {"Q", "A"} <= set(rows[0]):
        raise UserError(f"{path} has no Q and A columns; is it songys/Chatbot_data's ChatbotData.csv?")
    return [
        {"question": _clean(r["Q"]), "answer": _clean(r["A"]), "topic": CHATBOT_TOPICS.get(r.get("label", ""), "")}
        for r in rows
    ]


def read_square_pairs(path: Path) -> list[dict[str, str]]:
    """Sensitive questions with the responses SQuARe's annotators marked acceptable."""
    records = json.loads(path.read_text(encoding="utf-8"))
    return [
        {"question": _clean(r["question"]), "answer": _clean(r["response"]), "topic": r.get("question_category", "")}
        for r in records
        if r.get("acceptable?") == 1
    ]


def _as_messages(pair: dict[str, str], source: str) -> dict:
    return {
        "messages": [
            {"role": "user", "content": pair["question"]},
            {"role": "assistant", "content": pair["answer"]},
        ],
        "source": source,
        "topic": pair["topic"],
    }


def build_demo_data(config: DemoDataConfig) -> tuple[list[dict], list[dict], DemoDataReport]:
    """Read the sources and return (train, held-out) records in OpenAI ``messages`` form, and a report."""
    root = Path(config.data_dir)
    sources = [("chatbot_data", root / CHATBOT_CSV, read_chatbot_pairs)]
    if config.include_square:
        sources.append(("square", root / SQUARE_RESPONSES, read_square_pairs))
    report = DemoDataReport()
    train: list[dict] = []
    heldout: list[dict] = []
    for name, path, reader in sources:
        if not path.is_file():
            raise UserError(f"{path} not found; point --data-dir at the folder with chatbot_data/ and square/")
        report.source_sha256[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
        pairs = reader(path)
        counts = {"read": len(pairs), "dropped": 0, "train": 0, "heldout": 0}
        for pair in pairs:
            if not pair["question"] or not pair["answer"]:
                counts["dropped"] += 1
                continue
            if len(pair["question"]) + len(pair["answer"]) > config.max_chars:
                counts["dropped"] += 1
                continue
            split = "heldout" if is_heldout(pair["answer"], config.heldout_percent, config.split_salt) else "train"
            counts[split] += 1
            (heldout if split == "heldout" else train).append(_as_messages(pair, name))
        report.by_source[name] = counts
    rng = random.Random(config.seed)
    rng.shuffle(train)
    rng.shuffle(heldout)
    train = train[: config.max_train] if config.max_train is not None else train
    heldout = heldout[: config.max_heldout] if config.max_heldout is not None else heldout
    report.train, report.heldout = len(train), len(heldout)
    return train, heldout, report


def write_jsonl(path: Path, records: list[dict]) -> None:
    """One JSON object per line, UTF-8, Korean unescaped."""
    with path.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def write_demo_data(config: DemoDataConfig, out_dir: Path) -> DemoDataReport:
    """Write ``train.jsonl``, ``heldout.jsonl`` and ``recipe.json`` (config + counts) into ``out_dir``."""
    train, heldout, report = build_demo_data(config)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_jsonl(out_dir / "train.jsonl", train)
    write_jsonl(out_dir / "heldout.jsonl", heldout)
    recipe = {"config": asdict(config), "report": asdict(report)}
    (out_dir / "recipe.json").write_text(json.dumps(recipe, indent=2, ensure_ascii=False) + "\n", "utf-8")
    logger.info("wrote %d training and %d held-out pairs to %s", report.train, report.heldout, out_dir)
    return report


def _optional_int(text: str) -> int | None:
    return None if text.lower() in {"all", "none"} else int(text)


def main(argv: list[str] | None = None) -> None:
    """Command line: ``python -m training.demo_data --out DIR [--data-dir ../shared/data]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--data-dir", default=str(Path("..") / "shared" / "data"), help="shared data folder")
    defaults = DemoDataConfig(data_dir="")
    parser.add_argument("--heldout-percent", type=int, default=defaults.heldout_percent)
    parser.add_argument("--max-train", type=_optional_int, default=defaults.max_train, help="int or 'all'")
    parser.add_argument("--max-heldout", type=_optional_int, default=defaults.max_heldout, help="int or 'all'")
    parser.add_argument("--max-chars", type=int, default=defaults.max_chars)
    parser.add_argument("--no-square", action="store_true", help="leave out SQuARe's acceptable responses")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config = DemoDataConfig(
        data_dir=args.data_dir,
        heldout_percent=args.heldout_percent,
        max_train=args.max_train,
        max_heldout=args.max_heldout,
        max_chars=args.max_chars,
        include_square=not args.no_square,
        seed=args.seed,
    )
    try:
        report = write_demo_data(config, args.out)
    except UserError as err:
        parser.exit(2, f"error: {err}\n")
    from rich.console import Console

    Console().print_json(json.dumps(asdict(report), ensure_ascii=False))


if __name__ == "__main__":
    main()
