"""The paper's Table 2 on the sample corpus: every model of the registry, and the text-only baseline.

Builds the demo's data (`make demo-data`: the sample corpus of 1200 tweets, its vocabulary,
the BIOES text, a store from a random-init ResNet-152 with AdaBN statistics) into this script's
folder, then trains one row per system, each over every seed: `maf train --model NAME` for each
NAME in maf_core.models' registry, and `maf train --text-only` (BERT-CRF), all with the demo's
training flags (`make demo-flags`: the small random-init encoder, 12 epochs, batches of 32, 3e-4).
A model that takes no --bert-config (no BERT: the word-level rows) takes only --device of those,
25 epochs (from random word vectors 12 leave it undertrained), and its recipe's optimizer, rate and
batch (the demo's are tuned for its small BERT), except that a recipe of batches of 1 for 100 epochs
(HBiLSTM-CRF's, SGD at 0.005) trains with AdamW at 1e-3 in batches of 10 (chosen by dev F1) to fit
the time; a model trained in a tag
scheme other than the text's gets the corpus tokenized in its scheme. Two trainings run at once
(--jobs), each on its share of the cores, with its output in DIR/logs. Finished runs trained with
the same flags are reused, so an interrupted measurement continues.

It then prints the table as `maf table RUN... --paper twitter2015` does (Markdown; F1 per type, P,
R, F1, image-decided and other F1, mean ± std over the seeds; the published rows beside) and, as
the final line, JSON.

    .venv/bin/python benchmarks/table2.py [--dir benchmarks/.table2] [--seeds 1,2,3]
        [--models maf,umt,...,text-only] [--extra "maf=--preset recommended"] [--paper twitter2015] [--jobs 2]

--tweets N (other than 1200) builds a smaller sample corpus with a ResNet-18 store instead of
the demo's (for a smoke check, with --epochs 1 --seeds 1 --bert-config tiny); --epochs and
--bert-config replace the demo's values.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
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
# ... and their epochs: they start from random word vectors, and the demo's 12 epochs leave them undertrained
# (HBiLSTM-CRF's dev F1 on this corpus: 69 after 10 epochs, 82 after 20 to 25, then flat; docs/benchmarks.md)
WORD_LEVEL_EPOCHS = 25
# a recipe of batches of 1 (Lample et al.'s, HBiLSTM-CRF and GVATT-HBiLSTM-CRF: SGD at 0.005 for 100 epochs of 720
# steps, 15 to 18 minutes a run here) trains in this benchmark with AdamW at 1e-3 (AdaCAN-CNN-BiLSTM-CRF's rate; the
# trainer's warm-up and decay) in batches of 10 for 25 epochs. Chosen by dev F1, seed 1 (docs/benchmarks.md): HBiLSTM-
# CRF 81 to 83 with it, as with SGD at 0.1 in batches of 10 and with the recipe itself; GVATT-HBiLSTM-CRF 98 with it,
# 86 at 25 and 90 to 94 at 50 to 100 epochs with SGD at 0.1, 54 with the recipe itself
ONE_BY_ONE = ["--batch-size", "10", "--optimizer", "adamw", "--lr", "1e-3"]
ONE_BY_ONE_EPOCHS = WORD_LEVEL_EPOCHS


def train_flags(demo: list[str], accepts_bert_size: bool, epochs: int | None, bert_config: str | None,
                recipe_batch: int | None = None) -> list[str]:
    """The demo's training flags with --epochs and --bert-config replaced where given; for a model
    without BERT only --device and --epochs (WORD_LEVEL_EPOCHS unless given), and its recipe's
    optimizer, rate and batch, but ONE_BY_ONE for ONE_BY_ONE_EPOCHS for a recipe of batches of 1
    (`recipe_batch`)."""
    flags, values = [], {"--epochs": epochs, "--bert-config": bert_config}
    if not accepts_bert_size:
        values["--epochs"] = epochs or (ONE_BY_ONE_EPOCHS if recipe_batch == 1 else WORD_LEVEL_EPOCHS)
    pairs = list(zip(demo[::2], demo[1::2]))
    assert all(flag.startswith("--") for flag, _ in pairs), f"make demo-flags: expected '--flag value' pairs: {demo}"
    for flag, value in pairs:
        if not accepts_bert_size and flag not in WORD_LEVEL_FLAGS:
            continue
        flags += [flag, str(values.get(flag) or value)]
    if not accepts_bert_size and recipe_batch == 1:
        flags += ONE_BY_ONE
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
    parser.add_argument("--jobs", type=int, default=2,
                        help="trainings at once, the cores shared out among them [2: on 2 cores, two one-core "
                             "trainings of the small models finish sooner than two two-core ones in turn]")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    from benchmarks.robustness import demo_flags
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
    if args.jobs < 1:
        sys.exit(f"--jobs {args.jobs}: expected at least 1")
    started = time.perf_counter()
    paths = prepare(root, args.tweets)
    demo, _ = demo_flags()
    commands, tasks = {}, []
    for name in chosen:
        cls, config = row_config(every[name])
        flags = [*train_flags(demo, "bert_size" in cls.options, args.epochs, args.bert_config,
                              cls.train_defaults(None).get("batch_size")),
                 *every[name], *shlex.split(extra.get(name, ""))]  # --extra comes last: click keeps the last value
        text = text_for(config.scheme, cls.takes_text_scheme, paths)
        commands[name] = " ".join(["--text", str(text.relative_to(root)), *flags])
        tasks += [(name, seed, text, flags) for seed in seeds]
    minutes = run_all(tasks, root, paths["store"], commands, args.jobs)
    table = build_table([root / "runs" / name for name in chosen], args.paper)
    print(markdown(table))
    print(json.dumps({"benchmark": "table2", "tweets": args.tweets, "seeds": seeds, "jobs": args.jobs,
                      "commands": commands, "minutes": round((time.perf_counter() - started) / 60, 1),
                      "run_minutes": minutes, "table": table}))


def say(line: str) -> None:
    """One line in one write: the pool's threads print beside each other (print writes the line
    and its newline apart)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def run_all(tasks: list[tuple[str, int, Path, list[str]]], root: Path, store: Path, commands: dict[str, str],
            jobs: int) -> dict[str, list[float]]:
    """Train every (row, seed), `jobs` at a time, each with its share of the cores (OMP_NUM_THREADS):
    small models use two cores poorly, so two one-core trainings at once finish sooner than one after
    the other. Each run's output goes to its log in root/logs. Returns each row's minutes per seed
    (0.0 for a finished run reused); the first failure stops the rest and exits with its log named."""
    from benchmarks.robustness import train

    threads = max(1, (os.cpu_count() or 1) // jobs)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    minutes: dict[str, list[float]] = {}

    def one(task: tuple[str, int, Path, list[str]]) -> tuple[str, float]:
        name, seed, text, flags = task
        log = root / "logs" / f"{name}-seed-{seed}.log"
        say(f"[table2] {name}, seed {seed}: maf train {commands[name]} --seed {seed}  (log: {log})")
        began = time.perf_counter()
        try:
            train(root / "runs" / name / f"seed-{seed}", store, text, flags, seed, env=env, log=log)
        except subprocess.CalledProcessError as error:
            failed = f"[table2] {name}, seed {seed} failed (exit status {error.returncode}): see {log}"
            raise SystemExit(failed) from None
        return name, (time.perf_counter() - began) / 60

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for name, spent in pool.map(one, tasks):
            minutes.setdefault(name, []).append(round(spent, 2))
            say(f"[table2] {name}: {spent:.1f} min")
    return minutes


if __name__ == "__main__":
    main()
