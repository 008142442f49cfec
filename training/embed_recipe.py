"""Korean training pairs for the bundled embedding model (``make embed-adapter``), from licence-clean sets.

Sources (see ``../shared/data/*/SOURCE.txt``):

- KorNLI (XNLI ko dev + test, CC BY-SA 4.0): premise -> entailed hypothesis, with the contradicted
  hypothesis of the same premise as the hard negative;
- KorSTS train (CC BY-SA 4.0): sentence pairs scored >= ``sts_min_score`` (of 5) as retrieval pairs
  (``korsts``), or every pair with its gold score for the CoSENT loss (``korsts_scored``, the second stage:
  ``--stage sts``);
- KoBEST BoolQ train + dev (CC BY-SA 4.0): question -> its Wikipedia passage (never the test split, which
  ``bench/embeddings.py`` retrieves on);
- songys/Chatbot_data (MIT): question -> answer;
- SQuARe acceptable responses (MIT): sensitive question -> acceptable answer.

KorQuAD (CC BY-ND) is evaluation only and is never read here. KorSTS dev / test are not trained on (dev is
the training report's check, test the benchmark's). Run ``python -m training.embed_recipe --out DIR``;
it writes ``pairs.jsonl`` and ``recipe.json`` (this config, counts and the SHA256 of every source file).
``--stage sts`` writes the second stage's pairs instead (``sts_pairs.jsonl``, ``sts_recipe.json``): every scored
KorSTS train pair plus a replay of retrieval pairs, so that the adapter keeps what the first stage taught.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import random
import sys
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

from nexus_k.core.errors import UserError
from training.embed_data import Pair, _clean, write_pairs

log = logging.getLogger(__name__)

NLI_FILES = ("kornli_korsts/KorNLI/xnli.dev.ko.tsv", "kornli_korsts/KorNLI/xnli.test.ko.tsv")
STS_TRAIN = "kornli_korsts/KorSTS/sts-train.tsv"
BOOLQ_FILES = ("kobest/BoolQ/train.tsv", "kobest/BoolQ/dev.tsv")
CHATBOT_CSV = "chatbot_data/ChatbotData.csv"
SQUARE_RESPONSES = "square/response_test_ood.json"


STS_STAGE = {"korsts_scored": 5749, "kornli": 600, "boolq": 600}
"""The second stage's sources: every scored KorSTS train pair, and a replay of the first stage's retrieval pairs."""


@dataclass
class EmbedRecipe:
    """How the bundled pairs are built; saved as ``recipe.json`` beside ``pairs.jsonl``."""

    data_dir: str
    """Folder with the project's shared data layout (kornli_korsts/, kobest/, chatbot_data/, square/)."""
    max_per_source: dict[str, int] = field(
        default_factory=lambda: {"kornli": 2500, "korsts": 1406, "boolq": 2000, "chatbot": 1000, "square": 215}
    )
    """Seeded sample size per source (the CPU training budget)."""
    sts_min_score: float = 4.0
    """KorSTS pairs at or above this gold score (0-5) count as paraphrases."""
    seed: int = 0
    """Seed of the per-source samples and the file order."""


def _tsv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))


def nli_pairs(paths: list[Path]) -> list[Pair]:
    """Premise -> entailment, negative = a contradiction of the same premise (when there is one)."""
    by_premise: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for path in paths:
        for row in _tsv(path):
            by_premise[_clean(row["sentence1"])][row["gold_label"]].append(_clean(row["sentence2"]))
    pairs = []
    for premise, labels in by_premise.items():
        for hypothesis in labels.get("entailment", []):
            pairs.append(Pair(premise, hypothesis, labels.get("contradiction", [])[:1]))
    return pairs


def scored_sts_pairs(path: Path) -> list[Pair]:
    """Every KorSTS sentence pair with its gold score (0-5), for the CoSENT loss."""
    pairs = []
    for row in _tsv(path):
        try:
            score = float(row["score"])
        except (TypeError, ValueError):
            continue
        if row["sentence1"] and row["sentence2"]:
            pairs.append(Pair(_clean(row["sentence1"]), _clean(row["sentence2"]), score=score))
    return pairs


def sts_pairs(path: Path, min_score: float) -> list[Pair]:
    """KorSTS sentence pairs with a gold score of at least ``min_score``, as plain retrieval pairs."""
    return [Pair(p.query, p.positive) for p in scored_sts_pairs(path) if (p.score or 0.0) >= min_score]


def boolq_pairs(paths: list[Path]) -> list[Pair]:
    """KoBEST BoolQ question -> passage."""
    return [Pair(_clean(r["Question"]), _clean(r["Text"])) for p in paths for r in _tsv(p) if r["Question"]]


def chatbot_pairs(path: Path) -> list[Pair]:
    """Chatbot_data question -> answer."""
    with path.open(encoding="utf-8", newline="") as handle:
        return [Pair(_clean(r["Q"]), _clean(r["A"])) for r in csv.DictReader(handle) if r["Q"] and r["A"]]


def square_pairs(path: Path) -> list[Pair]:
    """SQuARe sensitive question -> a response its annotators marked acceptable."""
    records = json.loads(path.read_text(encoding="utf-8"))
    return [Pair(_clean(r["question"]), _clean(r["response"])) for r in records if r.get("acceptable?") == 1]


def build_pairs(recipe: EmbedRecipe) -> tuple[list[Pair], dict]:
    """The sampled pairs of every source (shuffled together) and a report of counts and file digests."""
    root = Path(recipe.data_dir)
    readers = {
        "kornli": (NLI_FILES, lambda ps: nli_pairs(ps)),
        "korsts": ((STS_TRAIN,), lambda ps: sts_pairs(ps[0], recipe.sts_min_score)),
        "korsts_scored": ((STS_TRAIN,), lambda ps: scored_sts_pairs(ps[0])),
        "boolq": (BOOLQ_FILES, lambda ps: boolq_pairs(ps)),
        "chatbot": ((CHATBOT_CSV,), lambda ps: chatbot_pairs(ps[0])),
        "square": ((SQUARE_RESPONSES,), lambda ps: square_pairs(ps[0])),
    }
    unknown = set(recipe.max_per_source) - set(readers)
    if unknown:
        raise UserError(f"unknown source(s) {sorted(unknown)}; known: {sorted(readers)}")
    rng = random.Random(recipe.seed)
    report: dict = {"available": {}, "used": {}, "source_sha256": {}}
    pairs: list[Pair] = []
    for name, limit in recipe.max_per_source.items():
        files, reader = readers[name]
        paths = [root / f for f in files]
        for path in paths:
            if not path.is_file():
                raise UserError(f"{path} not found; point --data-dir at the project's shared data folder")
            report["source_sha256"][str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
        found = reader(paths)
        rng.shuffle(found)
        chosen = found[:limit]
        report["available"][name], report["used"][name] = len(found), len(chosen)
        pairs.extend(chosen)
    rng.shuffle(pairs)
    report["pairs"] = len(pairs)
    report["given_negatives"] = sum(len(p.negatives) for p in pairs)
    return pairs, report


def main(argv: list[str] | None = None) -> None:
    """Command line: ``python -m training.embed_recipe --out DIR [--data-dir ../shared/data]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--data-dir", default=str(Path("..") / "shared" / "data"), help="shared data folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stage", choices=("retrieval", "sts"), default="retrieval",
                        help="retrieval: the first stage's pairs; sts: scored KorSTS pairs plus a replay")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    recipe = EmbedRecipe(data_dir=args.data_dir, seed=args.seed)
    if args.stage == "sts":
        recipe.max_per_source = dict(STS_STAGE)
    prefix = "sts_" if args.stage == "sts" else ""
    try:
        pairs, report = build_pairs(recipe)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    args.out.mkdir(parents=True, exist_ok=True)
    write_pairs(args.out / f"{prefix}pairs.jsonl", pairs)
    record = {"config": asdict(recipe), "report": report}
    text = json.dumps(record, indent=2, ensure_ascii=False) + "\n"
    (args.out / f"{prefix}recipe.json").write_text(text, encoding="utf-8")
    log.info("wrote %d pairs to %s: %s", len(pairs), args.out, report["used"])


if __name__ == "__main__":
    main()
