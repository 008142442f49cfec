"""Grounded question answering for the demo adapter: the ``file_search`` prompt, answers that cite ``[n]``.

Each grounded record is one user turn built by ``nexus_k.core.grounded_prompt.sources_prompt`` (the very prompt
the server's ``file_search`` tool builds) holding one to ``max_sources`` numbered passages, and an answer that
cites the passage it comes from; synthetic office documents (``training.rag_office``) add the "how many days /
how much / by when" questions agencies ask of their regulations. Negatives hold only other passages, or an
office document without the article asked about, and answer ``NO_ANSWER``; chat records
(songys/Chatbot_data through ``training.demo_data``, the same held-out split as the ``ko_chat`` adapter) keep
the no-context register. Sources: ``training.rag_sources``. Run ``python -m training.rag_data --out data/rag``
(see docs/demo.md).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

from nexus_k.core.errors import UserError
from nexus_k.core.grounded_prompt import sources_prompt
from training.demo_data import DemoDataConfig, build_demo_data, is_heldout, write_jsonl
from training.rag_office import office_items
from training.rag_sources import (
    BOOLQ_TRAIN,
    KOBBQ_SAMPLES,
    KORQUAD_DEV,
    GroundedItem,
    korquad_shingles,
    read_boolq,
    read_kobbq_disambiguated,
    shares_run,
)

logger = logging.getLogger(__name__)

NO_ANSWER = "주어진 자료에는 이 질문에 대한 내용이 없어 답할 수 없습니다."
"""The answer when no source holds what is asked."""
# Document names like those an office uploads; the model should not learn anything from them.
_FILE_STEMS = ("참고자료", "업무안내", "보고서", "백과사전", "설명서", "공지사항", "회의록", "사례집", "규정", "자료")
_FILE_EXTENSIONS = ("txt", "pdf", "hwpx", "docx", "md")


@dataclass
class RagDataConfig:
    """How the grounded QA set is built; saved as ``recipe.json`` beside the JSONL files."""

    data_dir: str
    """Folder holding ``kobest/``, ``kobbq/``, ``chatbot_data/``, ``square/`` and ``korquad_v1/``."""
    boolq: int = 240
    """Grounded KoBEST BoolQ records (yes/no with a supporting sentence)."""
    kobbq: int = 200
    """Grounded KoBBQ records (the person the context names)."""
    office: int = 200
    """Grounded synthetic office documents (``training.rag_office``: numbers copied from a regulation)."""
    negatives: int = 70
    """Records whose sources (BoolQ / KoBBQ passages) do not hold the answer."""
    office_negatives: int = 40
    """Office documents asked about an article they do not contain."""
    chat: int = 600
    """Chatbot_data / SQuARe pairs without sources (ko_chat's training split)."""
    max_sources: int = 3
    """Most passages in one prompt (the gold one at a random number among them)."""
    heldout_percent: int = 5
    """Percent of passages (BoolQ) and templates (KoBBQ) kept for evaluation only."""
    max_heldout: int = 120
    """Keep at most this many held-out grounded records (negatives included)."""
    decontaminate: bool = True
    """Drop every passage or question sharing ``shingle_chars`` characters in a row with KorQuAD dev."""
    shingle_chars: int = 20
    """Length of the character runs compared with KorQuAD (spaces removed)."""
    seed: int = 0
    """Seed of the sampling, distractors, numbering and order."""
    split_salt: str = "nexus-k-rag-v1"
    """Salt of the group hash that decides the split."""


@dataclass
class RagDataReport:
    """Counts of what was read and written."""

    train: dict[str, int] = field(default_factory=dict)
    """Training records per kind (``boolq``, ``kobbq``, ``negative``, ``chat``)."""
    heldout: dict[str, int] = field(default_factory=dict)
    """Held-out records per kind."""
    read: dict[str, int] = field(default_factory=dict)
    """Items read per source."""
    dropped_korquad_overlap: dict[str, int] = field(default_factory=dict)
    """Items dropped per source for sharing text with KorQuAD dev."""
    source_sha256: dict[str, str] = field(default_factory=dict)
    """SHA256 of each source file read."""


def _filename(rng: random.Random) -> str:
    return f"{rng.choice(_FILE_STEMS)}_{rng.randint(1, 99)}.{rng.choice(_FILE_EXTENSIONS)}"


def _distractors(item: GroundedItem, pool: list[GroundedItem], count: int, rng: random.Random) -> list[str]:
    others = list(dict.fromkeys(o.passage for o in pool if o.group != item.group))
    return rng.sample(others, min(count, len(others)))


def grounded_record(item: GroundedItem, pool: list[GroundedItem], config: RagDataConfig, rng: random.Random,
                    answerable: bool) -> dict | None:
    """One ``messages`` record: the passage (if ``answerable``) among passages of other groups, and the cited
    answer; None for a negative when ``pool`` has no other passage. An item that does not hold its answer
    (``holds_answer`` False) shows its own passage and answers ``NO_ANSWER``."""
    shown = answerable or not item.holds_answer
    count = rng.randint(1, config.max_sources)
    passages = _distractors(item, pool, count - 1 if shown else count, rng)
    if not shown and not passages:
        return None
    if shown:
        gold = rng.randint(0, len(passages))
        passages.insert(gold, item.passage)
    answerable = answerable and item.holds_answer
    answer = f"{item.answer} [{gold + 1}]" if answerable else NO_ANSWER
    prompt = sources_prompt(item.question, [(_filename(rng), p) for p in passages])
    kind = {"kobest_boolq": "boolq", "kobbq": "kobbq", "office": "office"}[item.source] if answerable else "negative"
    return {"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}],
            "source": item.source, "kind": kind}


def _read_items(config: RagDataConfig, report: RagDataReport) -> list[GroundedItem]:
    root = Path(config.data_dir)
    runs = korquad_shingles(root / KORQUAD_DEV, config.shingle_chars) if config.decontaminate else set()
    items: list[GroundedItem] = []
    for name, relative, reader in (("kobest_boolq", BOOLQ_TRAIN, read_boolq),
                                   ("kobbq", KOBBQ_SAMPLES, read_kobbq_disambiguated)):
        read = reader(root / relative)
        report.source_sha256[str(relative)] = hashlib.sha256((root / relative).read_bytes()).hexdigest()
        kept = [i for i in read if not (runs and (shares_run(i.passage, runs, config.shingle_chars)
                                                  or shares_run(i.question, runs, config.shingle_chars)))]
        report.read[name] = len(read)
        report.dropped_korquad_overlap[name] = len(read) - len(kept)
        items += kept
    return items


def _records(items: list[GroundedItem], config: RagDataConfig, rng: random.Random, scale: float) -> list[dict]:
    by_source = {s: [i for i in items if i.source == s] for s in ("kobest_boolq", "kobbq", "office")}
    records: list[dict | None] = []
    for source, wanted in (("kobest_boolq", config.boolq), ("kobbq", config.kobbq)):
        pool = by_source[source]
        for item in rng.sample(pool, min(round(wanted * scale), len(pool))):
            records.append(grounded_record(item, items, config, rng, answerable=True))
    # Negatives draw their passages from the item's own data set: same kind of text, harder to tell apart.
    read = by_source["kobest_boolq"] + by_source["kobbq"]
    for item in rng.sample(read, min(round(config.negatives * scale), len(read))):
        records.append(grounded_record(item, by_source[item.source], config, rng, answerable=False))
    # Office documents sit among other office documents; their negatives show the document that lacks the answer.
    office = by_source["office"]
    for holds, wanted in ((True, config.office), (False, config.office_negatives)):
        chosen = [i for i in office if i.holds_answer == holds]
        for item in rng.sample(chosen, min(round(wanted * scale), len(chosen))):
            records.append(grounded_record(item, office, config, rng, answerable=True))
    return [r for r in records if r is not None]


def chat_data_config(config: RagDataConfig) -> DemoDataConfig:
    """The chat pairs' recipe: ko_chat's split (its 160 held-out pairs are never trained on), ``chat`` of its
    training pairs; recorded as ``chat_config`` so ``bench.demo`` rebuilds that held-out split."""
    return DemoDataConfig(data_dir=config.data_dir, max_train=config.chat, seed=config.seed)


def build_rag_data(config: RagDataConfig) -> tuple[list[dict], list[dict], RagDataReport]:
    """Read the sources and return (train, held-out) ``messages`` records and a report."""
    report = RagDataReport()
    items = _read_items(config, report)
    # Enough documents that the held-out share still fills its quota.
    items += office_items(2 * config.office, 2 * config.office_negatives, config.seed)
    held = [i for i in items if is_heldout(i.group, config.heldout_percent, config.split_salt)]
    kept = [i for i in items if not is_heldout(i.group, config.heldout_percent, config.split_salt)]
    rng = random.Random(config.seed)
    train = _records(kept, config, rng, 1.0)
    total = config.boolq + config.kobbq + config.negatives + config.office + config.office_negatives
    heldout = _records(held, config, rng, config.max_heldout / total if total else 0.0)
    chat_config = chat_data_config(config)
    chat, _, chat_report = build_demo_data(chat_config)
    train += [{**record, "kind": "chat"} for record in chat]
    report.source_sha256.update(chat_report.source_sha256)
    rng.shuffle(train)
    rng.shuffle(heldout)
    for records, counts in ((train, report.train), (heldout, report.heldout)):
        for record in records:
            counts[record["kind"]] = counts.get(record["kind"], 0) + 1
    return train, heldout, report


def write_rag_data(config: RagDataConfig, out_dir: Path) -> RagDataReport:
    """Write ``train.jsonl``, ``heldout.jsonl`` and ``recipe.json`` (config + counts) into ``out_dir``."""
    train, heldout, report = build_rag_data(config)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_jsonl(out_dir / "train.jsonl", train)
    write_jsonl(out_dir / "heldout.jsonl", heldout)
    recipe = {"config": asdict(config), "chat_config": asdict(chat_data_config(config)), "report": asdict(report)}
    (out_dir / "recipe.json").write_text(json.dumps(recipe, indent=2, ensure_ascii=False) + "\n", "utf-8")
    logger.info("wrote %d training and %d held-out records to %s", len(train), len(heldout), out_dir)
    return report


def main(argv: list[str] | None = None) -> None:
    """Command line: ``python -m training.rag_data --out DIR [--data-dir ../shared/data]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--data-dir", default=str(Path("..") / "shared" / "data"), help="shared data folder")
    defaults = RagDataConfig(data_dir="")
    for name in ("boolq", "kobbq", "office", "negatives", "office_negatives", "chat", "max_sources",
                 "heldout_percent", "max_heldout", "seed"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(defaults, name))
    parser.add_argument("--no-decontaminate", action="store_true", help="skip the KorQuAD overlap filter")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config = RagDataConfig(data_dir=args.data_dir, boolq=args.boolq, kobbq=args.kobbq, office=args.office,
                           negatives=args.negatives, office_negatives=args.office_negatives,
                           chat=args.chat, max_sources=args.max_sources, heldout_percent=args.heldout_percent,
                           max_heldout=args.max_heldout, decontaminate=not args.no_decontaminate, seed=args.seed)
    try:
        report = write_rag_data(config, args.out)
    except UserError as err:
        parser.exit(2, f"error: {err}\n")
    from rich.console import Console

    Console().print_json(json.dumps(asdict(report), ensure_ascii=False))


if __name__ == "__main__":
    main()
