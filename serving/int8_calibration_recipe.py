"""The Korean calibration text of ``nexus-k model int8`` (``serving/int8_calibration/ko.jsonl``).

    python -m serving.int8_calibration_recipe --data-dir ../shared/data

The int8 copy's smoothing needs the largest activation each input channel sees on text like what will be
served; this writes that text once so the product needs no corpus at run time: 256 NSMC train reviews (CC0,
none of them in ``nsmc_style_test_10k.tsv``, which ``bench/int8_quality.py`` holds out) and 64 KoBEST BoolQ
train passages (CC BY-SA 4.0; Wikipedia-style prose). One ``{"text", "source"}`` object per line.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from serving.quantize import CALIBRATION_FILE
from tokenizer.sources import SourceOptions, iter_source

SOURCES = (("nsmc/nsmc_style_train_50k.tsv", "document", 256), ("kobest/BoolQ/train.tsv", "Text", 64))


def build(data_dir: Path) -> list[dict[str, str]]:
    """The first texts of each source, in file order."""
    rows = []
    for path, column, count in SOURCES:
        for i, text in enumerate(iter_source(data_dir / path, SourceOptions(text_field=column))):
            if i >= count:
                break
            rows.append({"text": text, "source": path})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=CALIBRATION_FILE)
    args = parser.parse_args()
    rows = build(args.data_dir)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(f"{len(rows)} texts written to {args.out}")


if __name__ == "__main__":
    main()
