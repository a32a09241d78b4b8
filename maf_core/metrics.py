"""Entity-level scores as conlleval computes them (seqeval's default mode), and `maf score`'s reader."""
from __future__ import annotations

import os
from pathlib import Path

from pipeline.conll import ENTITY_TYPES, iter_conll, normalize_label
from pipeline.errors import DataError


def score(gold: list[list[str]], pred: list[list[str]]) -> dict:
    """Overall and per-type precision, recall and F1 (in %) of BIO tag sequences.

    Ill-formed I- tags start an entity, as in conlleval. Per type also the support (gold
    entity count). Types with no gold and no predicted entity are left out.
    """
    from seqeval.metrics import classification_report

    if len(gold) != len(pred) or any(len(g) != len(p) for g, p in zip(gold, pred)):
        raise ValueError("gold and predicted tag sequences differ in number or length")
    report = classification_report(gold, pred, output_dict=True, zero_division=0, mode=None)
    out = {"types": {}}
    for name, values in report.items():
        entry = {"precision": 100 * float(values["precision"]), "recall": 100 * float(values["recall"]),
                 "f1": 100 * float(values["f1-score"]), "support": int(values["support"])}
        if name == "micro avg":
            out["overall"] = entry
        elif name not in ("macro avg", "weighted avg"):
            out["types"][name] = entry
    if "overall" not in out:  # no entity anywhere
        out["overall"] = {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    return out


def table(scores: dict, title: str = "") -> str:
    """The paper's Table 2 layout: F1 per type, then overall P, R, F1."""
    types = [t for t in ENTITY_TYPES if t in scores["types"]] + sorted(set(scores["types"]) - set(ENTITY_TYPES))
    head = f"{title:<12}" + "".join(f"{t:>8}" for t in types) + f"{'P':>8}{'R':>8}{'F1':>8}"
    row = f"{'':<12}" + "".join(f"{scores['types'][t]['f1']:8.2f}" for t in types)
    o = scores["overall"]
    return head + "\n" + row + f"{o['precision']:8.2f}{o['recall']:8.2f}{o['f1']:8.2f}"


def read_pair(gold_path: str | os.PathLike, pred_path: str | os.PathLike | None = None) -> tuple[list, list]:
    """Tag sequences to compare: two CoNLL files (IMGID records, same tweets and words in the
    same order), or one file of `word gold predicted` columns (blank lines between sentences,
    IMGID and -DOCSTART- lines ignored)."""
    if pred_path is not None:
        gold_tweets, pred_tweets = list(iter_conll(gold_path)), list(iter_conll(pred_path))
        if len(gold_tweets) != len(pred_tweets):
            raise DataError(f"{pred_path}: {len(pred_tweets)} tweets, but {gold_path} has {len(gold_tweets)}")
        for g, p in zip(gold_tweets, pred_tweets):
            if g.image_id != p.image_id or g.words != p.words:
                raise DataError(f"{pred_path}:{p.line}: tweet {p.image_id!r} does not match {gold_path}:{g.line} "
                                f"({g.image_id!r}); both files must list the same tweets and words in order")
        return [t.labels for t in gold_tweets], [t.labels for t in pred_tweets]
    gold, pred, g_row, p_row = [], [], [], []
    path = Path(gold_path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    with open(path, encoding="utf-8-sig") as handle:
        for number, line in enumerate(handle, 1):
            parts = line.split()
            if not parts or parts[0].startswith("IMGID:") or parts[0] == "-DOCSTART-":
                if g_row:
                    gold.append(g_row)
                    pred.append(p_row)
                    g_row, p_row = [], []
                continue
            if len(parts) < 3:
                raise DataError(f"{path}:{number}: expected 'word gold predicted', got {line.rstrip()!r}")
            tags = [normalize_label(t) for t in parts[-2:]]
            if None in tags:
                raise DataError(f"{path}:{number}: unknown label in {line.rstrip()!r}")
            g_row.append(tags[0])
            p_row.append(tags[1])
    if g_row:
        gold.append(g_row)
        pred.append(p_row)
    if not gold:
        raise DataError(f"{path}: no tagged words found")
    return gold, pred
