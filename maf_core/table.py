"""`maf table`: finished runs laid out as the paper's Table 2 (Xu et al., WSDM 2022): test F1 for
PER, LOC, ORG and MISC, then overall P, R and F1, one row per system, as mean ± std over the seeds
of a `--seeds` folder; with the corpus' annotations (the sample corpus' annotations.jsonl) also the
F1 on the entities only the image decides and on all others; with `paper` the published row of
each system beside it.

A table compares runs trained on one version of the corpus only: each run's config.json records
the sha256 of every split's source file (`corpus`), and runs that differ are refused unless
`mixed_corpora` is set, which the table then says in bold.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from statistics import mean, pstdev

from maf_core.config import MAFConfig
from maf_core.metrics import corpus_annotations, image_decided_scores, read_annotations
from maf_core.models import describe, model_name
from maf_core.report import Run, corpus_differences_from_first, load_runs
from pipeline.conll import ENTITY_TYPES
from pipeline.errors import DataError
from pipeline.tokenization import META_FILE, corpus_known, describe_corpus, read_meta

# the columns, in the paper's order: F1 per type, then overall P, R, F1; then those of annotated corpora
SCORES = (*ENTITY_TYPES, "P", "R", "F1")
IMAGE_SCORES = ("image-decided F1", "other F1")

TABLE2 = "Xu et al., MAF (WSDM 2022), Table 2"
# Table 2's caption: the rows it marks ♣ are Yu et al. (ACL 2020)'s numbers, those marked ♠ Chen et al.'s
FROM_UMT = "marked ♣ there: from Yu et al. (ACL 2020)"
FROM_CHEN = "marked ♠ there: from Chen et al. (DASFAA 2021)"


@dataclass(frozen=True)
class Published:
    """A row of the paper's Table 2: its label there (without the ♣ and ♠ marks; "MAF (Ours)" as MAF),
    the systems of this project it stands for (their
    display names, maf_core.models.model_name; matched ignoring case), its scores (SCORES' order)
    and, where Table 2 took them from another paper, which."""

    label: str
    systems: tuple[str, ...]
    scores: tuple[float, ...]
    origin: str = ""

    @property
    def source(self) -> str:
        return f"{TABLE2}, {self.origin}" if self.origin else TABLE2


# The paper's Table 2 as printed, typed in (PER, LOC, ORG, MISC F1, then P, R, F1). T-NER and
# ATTR-MMKG-MNER have no Twitter-2017 row there. Three rows' F1 is not 2PR / (P + R) of their own P
# and R within rounding, as printed: MAF on Twitter-2015 (73.42; 73.44 from P and R), and on
# Twitter-2017 AdaCAN-BERT-CRF (84.10; 84.15) and MT-BERT-CRF (84.42; 84.38). The paper's Table 4
# gives MAF on Twitter-2015 as P 71.41, R 75.32, F1 73.32; Table 2's row is used here.
PUBLISHED: dict[str, tuple[Published, ...]] = {
    "twitter2015": (
        Published("BiLSTM-CRF", ("BiLSTM-CRF",), (76.77, 72.56, 41.33, 26.80, 68.14, 61.09, 64.42)),
        Published("CNN-BiLSTM-CRF", ("CNN-BiLSTM-CRF",), (80.86, 75.39, 47.77, 32.61, 66.24, 68.09, 67.15)),
        Published("HBiLSTM-CRF", ("HBiLSTM-CRF",), (82.34, 76.83, 51.59, 32.52, 70.32, 68.05, 69.17)),
        Published("BERT", ("BERT", "BERT-softmax"), (84.72, 79.91, 58.26, 38.81, 68.30, 74.61, 71.32)),
        Published("BERT-CRF", ("BERT-CRF", "text-only BERT-CRF"),
                  (84.74, 80.51, 60.27, 37.29, 69.22, 74.59, 71.81), FROM_UMT),
        Published("T-NER", (), (83.64, 76.18, 50.26, 34.56, 69.54, 68.65, 69.09), FROM_CHEN),
        Published("GVATT-HBiLSTM-CRF", ("GVATT-HBiLSTM-CRF",), (82.66, 77.21, 55.06, 35.25, 73.96, 67.90, 70.80)),
        Published("AdaCAN-CNN-BiLSTM-CRF", ("AdaCAN-CNN-BiLSTM-CRF",),
                  (81.98, 78.95, 53.07, 34.02, 72.75, 68.74, 70.69)),
        Published("GVATT-BERT-CRF", ("GVATT-BERT-CRF",), (84.43, 80.87, 59.02, 38.14, 69.15, 74.46, 71.70)),
        Published("AdaCAN-BERT-CRF", ("AdaCAN-BERT-CRF",), (85.28, 80.64, 59.39, 38.88, 69.87, 74.59, 72.15)),
        Published("MT-BERT-CRF", ("MT-BERT-CRF",), (85.30, 81.21, 61.10, 37.97, 70.48, 74.80, 72.58)),
        Published("UMT-BERT-CRF", ("UMT-BERT-CRF",), (85.24, 81.58, 63.03, 39.45, 71.67, 75.23, 73.41), FROM_UMT),
        Published("ATTR-MMKG-MNER", (), (84.28, 79.43, 58.97, 41.47, 74.78, 71.82, 73.27), FROM_CHEN),
        Published("MAF", ("MAF",), (84.67, 81.18, 63.35, 41.82, 71.86, 75.10, 73.42)),
    ),
    "twitter2017": (
        Published("BiLSTM-CRF", ("BiLSTM-CRF",), (85.12, 72.68, 72.50, 52.56, 79.42, 73.43, 76.31)),
        Published("CNN-BiLSTM-CRF", ("CNN-BiLSTM-CRF",), (87.99, 77.44, 74.02, 60.82, 80.00, 78.76, 79.37)),
        Published("HBiLSTM-CRF", ("HBiLSTM-CRF",), (87.91, 78.57, 76.67, 59.32, 82.69, 78.16, 80.37)),
        Published("BERT", ("BERT", "BERT-softmax"), (90.88, 84.00, 79.25, 61.63, 82.19, 83.72, 82.95)),
        Published("BERT-CRF", ("BERT-CRF", "text-only BERT-CRF"),
                  (90.25, 83.05, 81.13, 62.21, 83.32, 83.57, 83.44), FROM_UMT),
        Published("GVATT-HBiLSTM-CRF", ("GVATT-HBiLSTM-CRF",), (89.34, 78.53, 79.12, 62.21, 83.41, 80.38, 81.87)),
        Published("AdaCAN-CNN-BiLSTM-CRF", ("AdaCAN-CNN-BiLSTM-CRF",),
                  (89.63, 77.46, 79.24, 62.77, 84.16, 80.24, 82.15)),
        Published("GVATT-BERT-CRF", ("GVATT-BERT-CRF",), (90.94, 83.52, 81.91, 62.75, 83.64, 84.38, 84.01)),
        Published("AdaCAN-BERT-CRF", ("AdaCAN-BERT-CRF",), (90.20, 82.97, 82.67, 64.83, 85.13, 83.20, 84.10)),
        Published("MT-BERT-CRF", ("MT-BERT-CRF",), (91.47, 82.05, 81.84, 65.80, 84.60, 84.16, 84.42)),
        Published("UMT-BERT-CRF", ("UMT-BERT-CRF",), (91.56, 84.73, 82.24, 70.10, 85.28, 85.34, 85.31), FROM_UMT),
        Published("MAF", ("MAF",), (91.51, 85.80, 85.10, 68.79, 86.13, 86.38, 86.25)),
    ),
}
PAPER_TITLES = {"twitter2015": "Twitter-2015", "twitter2017": "Twitter-2017"}


def published_row(paper: str, system: str) -> Published | None:
    """The row of `paper`'s table (twitter2015, twitter2017) for a system's display name, or None."""
    wanted = system.casefold()
    return next((row for row in PUBLISHED[paper] if wanted in (s.casefold() for s in row.systems)), None)


@dataclass
class System:
    """One row: a run, or a --seeds folder and its seeds, with each score's mean and std over them."""

    path: str                # as given on the command line
    label: str               # the model's display name
    model: str               # its description (preset, ablation)
    seeds: list[int]
    scores: dict[str, dict | None]  # column -> {"mean", "std", "values"}; None: not measured
    random_encoder: bool
    published: Published | None = None


def _spread(values: list[float | None]) -> dict | None:
    """Mean and population std (as summary.json) of the seeds' values; None when a seed lacks it."""
    if not values or any(v is None for v in values):
        return None
    return {"mean": mean(values), "std": pstdev(values), "values": values}


def _run_scores(run: Run, notes: dict[str, dict]) -> dict[str, float | None]:
    """One run's cells: test F1 per type (0 where the type has no gold and no predicted entity, as
    summary.json counts it), overall P, R, F1, and on annotated corpora the image-decided and other F1."""
    if not run.report or "test" not in run.report:
        raise DataError(f"{run.path}: no test scores in report.json; the run has not finished")
    scores = run.report["test"]
    cells: dict[str, float | None] = {t: scores["types"].get(t, {"f1": 0.0})["f1"] for t in ENTITY_TYPES}
    cells.update(P=scores["overall"]["precision"], R=scores["overall"]["recall"], F1=scores["overall"]["f1"])
    if notes:
        image = image_decided_scores(run.predictions, notes, run.report, False) if run.predictions else {}
        cells["image-decided F1"] = image.get("image_decided_f1")
        cells["other F1"] = image.get("other_f1")
    return cells


def _annotations(runs: list[Run], given: str | Path | None) -> tuple[dict[str, dict], Path | None]:
    """The annotations `given`, or those beside the corpus the first run's text was cut from (when
    that text is still where the run recorded it)."""
    if given is not None:
        path = Path(given)
        if not path.is_file():
            raise DataError(f"{path}: no such annotations file")
        return read_annotations(path), path
    text_dir = Path(runs[0].config.get("text_dir", ""))
    if not (text_dir / META_FILE).is_file():
        return {}, None
    path = corpus_annotations(read_meta(text_dir))
    notes = read_annotations(path)
    return notes, path if notes else None


def check_one_corpus(runs: list[Run]) -> None:
    """DataError naming the runs and the splits that differ unless every run was trained on the
    same version of the corpus (runs whose corpus is unknown are not known to differ)."""
    differ = corpus_differences_from_first(runs)
    if differ:
        pairs = "; ".join(f"{first.path} vs {other.path}: {', '.join(changed)}" for first, other, changed in differ)
        raise DataError(f"runs trained on different versions of the corpus ({pairs} differ); a table compares "
                        "runs on one version only (--mixed-corpora lays them out anyway, marked)")


def build_table(run_dirs: list[str | Path], paper: str | None = None, annotations: str | Path | None = None,
                mixed_corpora: bool = False) -> dict:
    """The table of these runs (each a run directory or a --seeds folder) on the test split, as a
    dict, what `--json` prints: its columns, one row per run with mean ± std over its seeds, the published rows, each
    run's corpus, and what is unknown or mixed."""
    if paper is not None and paper not in PUBLISHED:
        raise DataError(f"--paper {paper!r}: expected one of {', '.join(PUBLISHED)}")
    groups = [(str(path), load_runs([path])) for path in run_dirs]
    runs = [run for _, seeds in groups for run in seeds]
    if not mixed_corpora:
        check_one_corpus(runs)
    notes, notes_path = _annotations(runs, annotations)
    columns = [*SCORES, *(IMAGE_SCORES if notes else ())]
    systems = []
    for path, seeds in groups:
        config = MAFConfig.from_dict(seeds[0].config["model"])
        cells = [_run_scores(run, notes) for run in seeds]
        label = model_name(config)
        systems.append(System(path, label, describe(config), [run.config["train"]["seed"] for run in seeds],
                              {c: _spread([cell[c] for cell in cells]) for c in columns},
                              any(run.random_encoder for run in seeds),
                              published_row(paper, label) if paper else None))
    return {
        "split": "test",
        "columns": columns,
        "rows": [{"system": s.label, "run": s.path, "model": s.model, "seeds": s.seeds, "scores": s.scores,
                  "random_encoder": s.random_encoder,
                  "published": None if s.published is None else
                  {"label": s.published.label, "source": s.published.source,
                   "scores": dict(zip(SCORES, s.published.scores))}}
                 for s in systems],
        "paper": paper,
        "annotations": str(notes_path) if notes_path else None,
        "corpus": {path: [run.config.get("corpus") for run in seeds] for path, seeds in groups},
        "corpus_unknown": [str(run.path) for run in runs if not corpus_known(run.config.get("corpus"))],
        "mixed_corpora": [{"first": str(first.path), "other": str(other.path), "splits": changed}
                          for first, other, changed in corpus_differences_from_first(runs)],
    }


def _cell(score: dict | None) -> str:
    if score is None:
        return "–"
    return f"{score['mean']:.2f}" if len(score["values"]) == 1 else f"{score['mean']:.2f} ± {score['std']:.2f}"


def markdown(table: dict) -> str:
    """The table in Markdown, with below it what it is on: split, seeds, corpus, sources."""
    columns, paper = table["columns"], table["paper"]
    lines = []
    if table["mixed_corpora"]:
        pairs = "; ".join(f"{m['first']} vs {m['other']}: {', '.join(m['splits'])}" for m in table["mixed_corpora"])
        lines += [f"**MIXED CORPORA (--mixed-corpora): these runs were trained on different versions of the corpus "
                  f"({pairs} differ); their scores are not comparable.**", ""]
    lines += ["| system | run | seeds | " + " | ".join(columns) + " |", "|---|---|---|" + "---:|" * len(columns)]
    missing = []
    for row in table["rows"]:
        star = " *" if row["random_encoder"] else ""
        lines.append(f"| {row['system']}{star} | {row['run']} | {len(row['seeds'])} | "
                     + " | ".join(_cell(row["scores"][c]) for c in columns) + " |")
        published = row["published"]
        if published is not None:
            lines.append(f"| {published['label']}, published | {PAPER_TITLES[paper]} | | "
                         + " | ".join(f"{published['scores'][c]:.2f}" if c in published["scores"] else "–"
                                      for c in columns) + " |")
        elif paper:
            missing.append(f"{row['system']} ({row['run']})")
    lines += ["", f"{table['split'].capitalize()} split, entity level (conlleval's rules); mean ± std (population, "
              "as summary.json) over each run's seeds."]
    if table["annotations"]:
        lines.append(f"image-decided F1: the entities whose type only the image tells; other F1: all other entities "
                     f"(annotations: {table['annotations']}).")
    lines.append("Runs: " + "; ".join(f"{row['run']} = {row['model']}, seeds {', '.join(map(str, row['seeds']))}"
                                      for row in table["rows"]) + ".")
    corpora = {json.dumps(c, sort_keys=True) for runs in table["corpus"].values() for c in runs}
    if len(corpora) == 1:
        lines.append(f"Corpus (every run): {describe_corpus(next(iter(table['corpus'].values()))[0])}.")
    else:
        lines += [f"Corpus of {path}: {describe_corpus(runs[0])}." for path, runs in table["corpus"].items()]
    if table["corpus_unknown"]:
        lines.append(f"Corpus version unknown, not checked (text tokenized, or runs trained, before sha256s were "
                     f"recorded): {', '.join(table['corpus_unknown'])}.")
    if paper:
        origins = sorted({(row["published"]["label"], row["published"]["source"]) for row in table["rows"]
                          if row["published"] and row["published"]["source"] != TABLE2})
        lines.append(f"Published rows ({PAPER_TITLES[paper]}): {TABLE2}"
                     + "".join(f"; {label} {source.removeprefix(TABLE2 + ', ')}" for label, source in origins) + ".")
        if missing:
            lines.append(f"No published row in {TABLE2} for: {', '.join(missing)}.")
    if any(row["random_encoder"] for row in table["rows"]):
        lines.append("* trained without --bert: a RANDOM-init text encoder; these scores say nothing about a "
                     "pretrained one.")
    return "\n".join(lines)
