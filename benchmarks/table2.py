"""The paper's Table 2 on the sample corpus: every model of the registry, and the text-only baseline.

Builds the demo's data (`make demo-data`: the sample corpus of 1200 tweets, its vocabulary,
the BIOES text, a store from a random-init ResNet-152 with AdaBN statistics) into this script's
folder, then trains one row per system, each over every seed: `maf train --model NAME` for each
NAME in maf_core.models' registry, and `maf train --text-only` (BERT-CRF), all with the demo's
training flags (`make demo-flags`: the small random-init encoder, 12 epochs, batches of 32, 3e-4).
A model that takes no --bert-config (no BERT: the word-level rows) takes only --epochs and --device
of those, and its recipe's optimizer, rate and batch (the demo's are tuned for its small BERT); a
model trained in a tag scheme other than the text's gets the corpus tokenized in its scheme.
Finished runs trained with the same flags are reused, so an interrupted measurement continues.

It then prints the table as `maf table RUN... --paper twitter2015` does (Markdown; F1 per type, P,
R, F1, image-decided and other F1, mean ± std over the seeds; the published rows beside) and, as
the final line, JSON.

    .venv/bin/python benchmarks/table2.py [--dir benchmarks/.table2] [--seeds 1,2,3]
        [--models maf,umt,...,text-only] [--extra "maf=--preset recommended"] [--paper twitter2015]

--tweets N (other than 1200) builds a smaller sample corpus with a ResNet-18 store instead of
the demo's (for a smoke check, with --epochs 1 --seeds 1 --bert-config tiny); --epochs and
--bert-config replace the demo's values.
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))

DEMO_TWEETS = 1200  # the Makefile's demo-data
TEXT_ONLY = "text-only"  # the row `maf train --text-only` (the default --model without the image)


def rows() -> dict[str, list[str]]:
    """Row name -> its `maf train` flags: `--model NAME` for each model of the registry, and --text-only."""
    from maf_core.models import ARCHITECTURES

    return {**{name: ["--model", name] for name in ARCHITECTURES}, TEXT_ONLY: ["--text-only"]}


def row_config(flags: list[str]):
    """The model class and default config a row trains (the default --model for --text-only)."""
    from maf_core.models import ARCHITECTURES, default_config, model_class

    name = flags[flags.index("--model") + 1] if "--model" in flags else ARCHITECTURES[0]
    overrides = {"text_only": True} if "--text-only" in flags else {}
    return model_class(name), default_config(name, **overrides)


# what a model without BERT (the word-level rows) takes of the demo's flags: the rest (--lr, --batch-size,
# --bert-config) is tuned for the demo's small random BERT, so those rows keep their recipe's (SGD at 0.1 ...)
WORD_LEVEL_FLAGS = ("--epochs", "--device")


def train_flags(demo: list[str], accepts_bert_size: bool, epochs: int | None, bert_config: str | None) -> list[str]:
    """The demo's training flags with --epochs and --bert-config replaced where given; for a model
    without BERT only --epochs and --device (its recipe's optimizer, rate and batch otherwise)."""
    flags, values = [], {"--epochs": epochs, "--bert-config": bert_config}
    pairs = list(zip(demo[::2], demo[1::2]))
    assert all(flag.startswith("--") for flag, _ in pairs), f"make demo-flags: expected '--flag value' pairs: {demo}"
    for flag, value in pairs:
        if not accepts_bert_size and flag not in WORD_LEVEL_FLAGS:
            continue
        flags += [flag, str(values.get(flag) or value)]
    return flags


def prepare(root: Path, tweets: int) -> dict[str, Path]:
    """The corpus, its vocabulary, its BIOES text and the store: the demo's (`make demo-data`), or
    for another --tweets a smaller sample corpus with a ResNet-18 store."""
    if tweets == DEMO_TWEETS:
        subprocess.run(["make", "-s", "--no-print-directory", "-C", str(ROOT), "demo-data", f"DEMO={root}"],
                       check=True)
        return {"data": root / "data", "tokenizer": root / "tokenizer", "text": root / "text",
                "store": root / "store.h5"}
    from benchmarks.sample_experiment import prepare as prepare_sample

    paths = prepare_sample(root, tweets, "resnet18")
    return {**paths, "tokenizer": root / "tokenizer"}


def text_for(scheme: str, takes_text_scheme: bool, paths: dict[str, Path]) -> Path:
    """The BIOES text, or (for a model that trains in its own scheme) the corpus tokenized in it."""
    from pipeline.tokenization import read_meta, tokenize_corpus

    if takes_text_scheme or read_meta(paths["text"])["scheme"] == scheme:
        return paths["text"]
    text = paths["text"].with_name(f"text-{scheme}")
    if not (text / "meta.json").is_file():
        tokenize_corpus(paths["data"], str(paths["tokenizer"]), text, scheme=scheme)
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", default=str(ROOT / "benchmarks" / ".table2"),
                        help="where the data and the runs go [benchmarks/.table2]")
    parser.add_argument("--tweets", type=int, default=DEMO_TWEETS, help="[1200: the demo's data]")
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--models", default=None, help="comma-separated rows [every model, and text-only]")
    parser.add_argument("--extra", action="append", default=[],
                        help="ROW=FLAGS: more maf train flags for one row (repeatable): 'maf=--preset recommended'")
    parser.add_argument("--epochs", type=int, default=None, help="[the demo's, 12]")
    parser.add_argument("--bert-config", default=None, choices=["tiny", "small", "base"], help="[the demo's, small]")
    parser.add_argument("--paper", default="twitter2015", help="whose published rows go beside [twitter2015]")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    from benchmarks.robustness import demo_flags, train
    from maf_core.table import PUBLISHED, build_table, markdown

    if args.paper not in PUBLISHED:
        sys.exit(f"--paper {args.paper}: expected one of {', '.join(PUBLISHED)}")
    root = Path(args.dir).resolve()
    seeds = [int(s) for s in args.seeds.split(",")]
    every = rows()
    chosen = [m.strip() for m in args.models.split(",")] if args.models else list(every)
    unknown = [m for m in chosen if m not in every]
    if unknown:
        sys.exit(f"--models: unknown rows {', '.join(unknown)} (expected some of {', '.join(every)})")
    extra = dict(item.split("=", 1) for item in args.extra)
    started = time.perf_counter()
    paths = prepare(root, args.tweets)
    demo, _ = demo_flags()
    commands = {}
    for name in chosen:
        cls, config = row_config(every[name])
        flags = [*train_flags(demo, "bert_size" in cls.options, args.epochs, args.bert_config), *every[name],
                 *shlex.split(extra.get(name, ""))]
        text = text_for(config.scheme, cls.takes_text_scheme, paths)
        commands[name] = " ".join(["--text", str(text.relative_to(root)), *flags])
        for seed in seeds:
            print(f"[table2] {name}, seed {seed}: maf train {commands[name]} --seed {seed}", flush=True)
            train(root / "runs" / name / f"seed-{seed}", paths["store"], text, flags, seed)
    table = build_table([root / "runs" / name for name in chosen], args.paper)
    print(markdown(table))
    print(json.dumps({"benchmark": "table2", "tweets": args.tweets, "seeds": seeds, "commands": commands,
                      "minutes": round((time.perf_counter() - started) / 60, 1), "table": table}))


if __name__ == "__main__":
    main()
