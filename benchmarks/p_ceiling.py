"""How well does CM's p tell matched from unrelated images on a sample corpus when CM is trained to the end?

CM learns from pairs it makes itself: a tweet with its own image (target 1) and a tweet with
another tweet's image (target 0, `choose_negatives`). It never sees the corpus's relation
annotation. With a fraction f of swapped pairs, the p that minimises CM's loss on these
targets (where training leads, with enough data) is

    p*(t, i) = (1 - f) P(i | t) / ((1 - f) P(i | t) + f P(i)),

a rising function of P(i | t) / P(i): how much more often this tweet's kind of text comes with
this kind of image than tweets do in general. A matched image that the text does not predict
(an image-decided tweet: any of the four cue classes), or an unrelated image that comes with
some texts more often than with others (food or a screenshot after "Good morning everyone"),
is ranked by that ratio, not by the annotation.

The "ceiling" below is that p's AUC: the point training converges to, not an upper bound on
any p. A p trained less far has not yet learned some of the ratio and may rank the annotation
better or worse (on the demo's store, 8 epochs gave AUC 0.79, 12 gave 0.75, 20 at batch 16 gave 0.72).

This script measures the ceiling on a corpus with `annotations.jsonl` (`maf-pipe make-sample`):
it reduces each tweet to what decides its image in the generator (whether it has an
image-decided entity, and the types of its other entities in order) and each image to its
class, estimates P(class | text kind) and P(class), and prints the AUC of the ratio between
the test split's matched and unrelated tweets:

- `train`: estimated on the training split, as a model trained there could learn it;
- `generator` (`--generator-tweets N`): estimated on N fresh tweets of the sample generator
  (text and image class only, no pixels): the ceiling with unlimited training data; and
  `population`: the same ratio's AUC on N/4 more generated tweets instead of the test split
  (the ceiling of the generator itself, free of which tweets the test split happened to draw).

With `--runs RUN ...` it also prints each run's own AUC, its rank correlation with the ratio,
and mean p per group of tweets. The final line is JSON.

    .venv/bin/python benchmarks/p_ceiling.py benchmarks/.robustness/data [--generator-tweets 200000]
        [--runs benchmarks/.robustness/runs/recommended/seed-*]
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))

from maf_core.metrics import auc, read_annotations  # noqa: E402
from pipeline.conll import read_conll  # noqa: E402
from pipeline.sample import CUE_CLASSES  # noqa: E402

CUES = set(CUE_CLASSES.values())


def text_kind(labels: list[str], image_decided_starts: set[int]) -> tuple[bool, tuple[str, ...]]:
    """What the sample generator draws a tweet's image from: whether it has an image-decided
    entity, and the types of its other entities in order of appearance."""
    types = tuple(label[2:] for i, label in enumerate(labels)
                  if label.startswith(("B-", "S-")) and i not in image_decided_starts)
    return bool(image_decided_starts), types


def ratio_table(pairs: list[tuple[tuple, str]], smoothing: float = 0.5):
    """(text kind, image class) pairs -> ratio(kind, class) = P(class | kind) / P(class), with
    additive smoothing of the conditional (unseen kinds give 1: nothing is known of them)."""
    joint: dict[tuple, Counter] = defaultdict(Counter)
    overall: Counter = Counter()
    for kind, image_class in pairs:
        joint[kind][image_class] += 1
        overall[image_class] += 1
    total, classes = sum(overall.values()), len(overall)

    def ratio(kind: tuple, image_class: str) -> float:
        seen = joint.get(kind)
        if not seen or not overall[image_class]:
            return 1.0
        conditional = (seen[image_class] + smoothing) / (sum(seen.values()) + smoothing * classes)
        return conditional / (overall[image_class] / total)

    return ratio


def group(record: dict, kind: tuple) -> str:
    """matched image-decided / matched text-decided / unrelated, by text and image."""
    if record["relation"] == "matched":
        return "matched, image-decided" if kind[0] else "matched, text-decided"
    image = "a cue class" if record["image_class"] in CUES else "a distractor"
    return f"unrelated, {'entities' if kind[1] else 'no entity'}, {image}"


def corpus_pairs(data: Path) -> dict[str, list[tuple[str, tuple, dict]]]:
    """split -> [(image id, text kind, annotation)] of the tweets whose image was read."""
    annotations = read_annotations(data / "annotations.jsonl")
    out: dict[str, list] = {}
    for split in ("train", "valid", "test"):
        rows = []
        for tweet in read_conll(data / f"{split}.txt"):
            record = annotations[tweet.image_id]
            if record["image_file"] != "ok":
                continue
            starts = {entity["start"] for entity in record["image_decided"]}
            rows.append((tweet.image_id, text_kind(tweet.labels, starts), record))
        out[split] = rows
    return out


def generated(tweets: int, seed: int) -> list[tuple[str, tuple, dict]]:
    """[(image id, text kind, relation and image class)] of fresh tweets of the sample generator."""
    from pipeline.sample import generate_tweets

    rows = []
    for sample in generate_tweets(tweets, seed=seed):
        if sample.image_file == "ok":
            starts = {start for _, start, _ in sample.image_decided}
            record = {"relation": sample.relation, "image_class": sample.image_class}
            rows.append((sample.tweet.image_id, text_kind(sample.tweet.labels, starts), record))
    return rows


def generator_pairs(tweets: int, seed: int) -> list[tuple[tuple, str]]:
    return [(kind, record["image_class"]) for _, kind, record in generated(tweets, seed)]


def group_means(groups: dict[str, list[float]]) -> dict[str, float]:
    return {name: round(sum(v) / len(v), 2) for name, v in sorted(groups.items())}


def ceiling(test: list[tuple[str, tuple, dict]], ratio) -> tuple[float | None, dict[str, float]]:
    """AUC of the ratio between matched and unrelated test tweets, and its mean per group."""
    scores = {"matched": [], "unrelated": []}
    groups: dict[str, list[float]] = defaultdict(list)
    for _, kind, record in test:
        value = ratio(kind, record["image_class"])
        scores[record["relation"]].append(value)
        groups[group(record, kind)].append(value)
    return auc(scores["matched"], scores["unrelated"]), group_means(groups)


def spearman(x: list[float], y: list[float]) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(x, y)[0])


def run_figures(run: Path, test: list[tuple[str, tuple, dict]], ratio) -> dict:
    """A run's AUC on the test split, its rank correlation with the ratio, mean p per group."""
    by_id = {image_id: (kind, record) for image_id, kind, record in test}
    p, r, groups, scores = [], [], defaultdict(list), {"matched": [], "unrelated": []}
    for line in (run / "predictions" / "test.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if row["id"] not in by_id or row.get("match_prob") is None:
            continue
        kind, record = by_id[row["id"]]
        p.append(row["match_prob"])
        r.append(ratio(kind, record["image_class"]))
        scores[record["relation"]].append(row["match_prob"])
        groups[group(record, kind)].append(row["match_prob"])
    if not p:
        raise SystemExit(f"{run}: no p in predictions/test.jsonl (a run without CM?)")
    return {"run": str(run), "auc": round(auc(scores["matched"], scores["unrelated"]), 3),
            "spearman_with_ratio": round(spearman(p, r), 3),
            "mean_p": group_means(groups)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", type=Path, help="a make-sample corpus (train/valid/test.txt, annotations.jsonl)")
    parser.add_argument("--generator-tweets", type=int, default=0,
                        help="also estimate the ratio on this many fresh tweets of the sample generator")
    parser.add_argument("--generator-seed", type=int, default=12345)
    parser.add_argument("--runs", type=Path, nargs="*", default=[], help="run directories to compare")
    args = parser.parse_args()
    if not (args.data / "annotations.jsonl").is_file():
        raise SystemExit(f"{args.data}: no annotations.jsonl (make one with maf-pipe make-sample)")
    splits = corpus_pairs(args.data)
    test = splits["test"]
    result = {"test_matched": sum(r["relation"] == "matched" for _, _, r in test),
              "test_unrelated": sum(r["relation"] == "unrelated" for _, _, r in test)}
    train_ratio = ratio_table([(kind, record["image_class"]) for _, kind, record in splits["train"]])
    result["ceiling_auc_train"], result["ratio_by_group_train"] = ceiling(test, train_ratio)
    print(f"ceiling of p's AUC, ratio estimated on the training split: {result['ceiling_auc_train']:.3f}")
    best = train_ratio
    if args.generator_tweets:
        best = ratio_table(generator_pairs(args.generator_tweets, args.generator_seed))
        result["ceiling_auc_generator"], result["ratio_by_group_generator"] = ceiling(test, best)
        population = generated(args.generator_tweets // 4, args.generator_seed + 1)
        result["ceiling_auc_population"], _ = ceiling(population, best)
        print(f"ceiling of p's AUC, ratio estimated on {args.generator_tweets} generated tweets: "
              f"{result['ceiling_auc_generator']:.3f} on the test split, "
              f"{result['ceiling_auc_population']:.3f} on {args.generator_tweets // 4} more generated tweets")
    for name, value in result.get("ratio_by_group_generator", result["ratio_by_group_train"]).items():
        print(f"  P(image | text) / P(image), {name}: {value}")
    result["runs"] = [run_figures(run, test, best) for run in args.runs]
    for run in result["runs"]:
        print(f"{run['run']}: AUC {run['auc']:.3f}, rank correlation with the ratio {run['spearman_with_ratio']:.3f}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
