"""`maf train --seeds 1,2,3`: one run per seed under OUT/seed-N, and OUT/summary.json with the
mean and standard deviation over seeds of every score."""
from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from statistics import mean, pstdev

from maf_core import distributed
from maf_core.config import MAFConfig, TrainConfig
from maf_core.run import RunDirectory
from maf_core.train import train
from pipeline.conll import ENTITY_TYPES
from pipeline.files import atomic_output
from pipeline.store import FeatureSource

logger = logging.getLogger(__name__)


def train_seeds(features: FeatureSource, text_dir: str | Path, out_dir: str | Path, model_config: MAFConfig,
                config: TrainConfig, seeds: list[int], resume: bool = False) -> dict:
    """One run per seed under OUT/seed-N, then summary.json: mean and std over seeds of each score."""
    out_dir = Path(out_dir)
    reports = {}
    for seed in seeds:
        run = RunDirectory(out_dir / f"seed-{seed}")
        if resume and run.read_report() is not None:
            reports[seed] = run.read_report()
            logger.info("seed %d: already finished in %s", seed, run.path)
            continue
        reports[seed] = train(features, text_dir, run.path, model_config, replace(config, seed=seed),
                              resume=resume and run.last.is_file())
    summary: dict = {"seeds": seeds}
    for split in ("valid", "test"):
        if not all(split in r for r in reports.values()):
            continue
        rows = {"overall": [r[split]["overall"] for r in reports.values()]}
        for name in sorted({t for r in reports.values() for t in r[split]["types"]}):
            rows[name] = [
                r[split]["types"].get(name, {"precision": 0.0, "recall": 0.0, "f1": 0.0}) for r in reports.values()
            ]
        summary[split] = {
            name: {
                metric: {"mean": mean(v[metric] for v in values), "std": pstdev(v[metric] for v in values)}
                for metric in ("precision", "recall", "f1")
            }
            for name, values in rows.items()
        }
    noted: dict[str, list[int]] = {}  # each run's end-of-run notes (a model that saw no image ...), by seed
    for seed, report in reports.items():
        for note in report.get("notes", []):
            noted.setdefault(note, []).append(seed)
    if noted:
        summary["notes"] = [f"seed {', '.join(map(str, s))}: {note}" if len(s) < len(seeds) else note
                            for note, s in noted.items()]
    if distributed.rank_and_world()[0] == 0:
        with atomic_output(out_dir / "summary.json") as handle:
            json.dump(summary, handle, indent=2, sort_keys=True)
    return summary


def summary_table(summary: dict, split: str = "test") -> str:
    """Mean ± std over seeds: F1 per type, overall P, R, F1."""
    scores = summary[split]
    types = [t for t in ENTITY_TYPES if t in scores]
    head = f"{split + ' (' + str(len(summary['seeds'])) + ' seeds)':<16}" + "".join(f"{t:>14}" for t in types) + \
        "".join(f"{m:>14}" for m in ("P", "R", "F1"))
    cells = [scores[t]["f1"] for t in types] + [scores["overall"][m] for m in ("precision", "recall", "f1")]
    return head + "\n" + f"{'':<16}" + "".join(f"{c['mean']:8.2f} ±{c['std']:4.2f}" for c in cells)


def train_runs(features: FeatureSource, text_dir: str | Path, out_dir: str | Path, model_config: MAFConfig,
               config: TrainConfig, seeds: list[int] | None = None, resume: bool = False) -> dict:
    """`maf train`: one run (its report), or with `seeds` one run per seed (the summary over them)."""
    if seeds:
        return train_seeds(features, text_dir, out_dir, model_config, config, seeds, resume=resume)
    return train(features, text_dir, out_dir, model_config, config, resume=resume)
