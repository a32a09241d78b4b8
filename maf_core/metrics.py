"""Entity-level scores as conlleval computes them (seqeval's default mode), `maf score`'s reader,
and the statistics of annotated corpora (the sample corpus' annotations.jsonl): p per relation
(matched / unrelated image), its AUC, and scores on the entities only the image decides."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from pipeline.conll import ENTITY_TYPES, iter_conll, normalize_label
from pipeline.errors import DataError
from pipeline.schemes import get_entities


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


def corpus_annotations(meta: dict) -> Path | None:
    """annotations.jsonl beside the corpus a text was tokenized from (the sample corpus has one)."""
    source = meta.get("source")
    return Path(source) / "annotations.jsonl" if source else None


def read_annotations(path: Path | None) -> dict[str, dict]:
    if path is None or not path.is_file():
        return {}
    notes = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            notes[str(record["image_id"])] = record
    return notes


def p_by_relation(ids: list, probs: list[float | None], annotations: dict[str, dict]) -> dict[str, list[float]]:
    """p of tweets with a readable image: matched / unrelated where annotated, else "tweets with an image".
    A p of None (a model without CM: null in predictions/<split>.jsonl) is in no group."""
    if annotations:
        groups: dict[str, list[float]] = {"matched": [], "unrelated": []}
        for image_id, p in zip(ids, probs):
            note = annotations.get(str(image_id))
            if p is not None and note and note.get("image_file") == "ok" and note.get("relation") in groups:
                groups[note["relation"]].append(p)
        return groups
    return {"tweets with an image": [p for p in probs if p is not None and p > 0]}


def auc(positive: list[float], negative: list[float]) -> float | None:
    """P(p of a matched pair > p of an unrelated one), ties counted half (Mann-Whitney)."""
    if not positive or not negative:
        return None
    pos, neg = np.asarray(positive)[:, None], np.asarray(negative)[None, :]
    return float(((pos > neg) + 0.5 * (pos == neg)).mean())


def image_decided_scores(predictions: list[dict], annotations: dict[str, dict], report: dict | None,
                         with_p: bool) -> dict:
    """Test scores of a run's test predictions (predictions/test.jsonl rows) and report.json, split by
    what decides the entity type (annotated corpora such as the sample's). `with_p`: the run has CM.

    image-decided: the entities whose type only the image tells; P, R and F1 over their spans
    (a prediction counts when its span is one of them). other: F1 over all other entities,
    image-decided spans left out on both sides. p: mean match probability of test tweets with
    a matched and with an unrelated image, and the AUC between the two groups.
    """
    gold_d = pred_d = hit_d = 0
    tp = n_pred = n_gold = 0
    for row in predictions:
        note = annotations.get(str(row["id"]), {})
        decided = {(e["type"], e["start"], e["end"]) for e in note.get("image_decided", [])}
        spans = {(s, e) for _, s, e in decided}
        predicted = {(e["type"], e["start"], e["end"]) for e in row["entities"]}
        gold = set(get_entities(row["gold"]))
        on_decided = {e for e in predicted if (e[1], e[2]) in spans}
        gold_d, pred_d, hit_d = gold_d + len(decided), pred_d + len(on_decided), hit_d + len(decided & on_decided)
        other_gold = {g for g in gold if (g[1], g[2]) not in spans}
        other_pred = {e for e in predicted if (e[1], e[2]) not in spans}
        tp, n_pred, n_gold = tp + len(other_gold & other_pred), n_pred + len(other_pred), n_gold + len(other_gold)

    def f1(hits: int, predicted: int, wanted: int) -> tuple[float, float, float]:
        precision, recall = hits / predicted if predicted else 0.0, hits / wanted if wanted else 0.0
        return 100 * precision, 100 * recall, 100 * (2 * precision * recall / (precision + recall) if hits else 0.0)

    groups = p_by_relation([r["id"] for r in predictions], [r["match_prob"] for r in predictions],
                           annotations) if with_p else {}
    matched, unrelated = groups.get("matched", []), groups.get("unrelated", [])
    decided_p, decided_r, decided_f1 = f1(hit_d, pred_d, gold_d)
    return {
        "f1": report["test"]["overall"]["f1"] if report and "test" in report else None,
        "image_decided_precision": decided_p, "image_decided_recall": decided_r, "image_decided_f1": decided_f1,
        "image_decided_entities": gold_d, "other_f1": f1(tp, n_pred, n_gold)[2],
        "p_matched": float(np.mean(matched)) if matched else None,
        "p_unrelated": float(np.mean(unrelated)) if unrelated else None,
        "p_auc": auc(matched, unrelated),
    }
