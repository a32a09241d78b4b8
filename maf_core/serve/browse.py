"""What `maf serve`'s browse page shows: a run's predictions on a split, with their errors,
images, annotations and scores, and a second run's beside them (`--compare`).

Everything is read from the run directories and the data they recorded: predictions/<split>.jsonl
(written by `maf train` or `maf evaluate`), the store's status per image, the corpus'
annotations.jsonl where there is one. Scores come from the project's scorer (`metrics.score`)
over the same rows, so they equal report.json's.
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from maf_core.data import Split, load_split
from maf_core.inference import predict_split
from maf_core.metrics import corpus_annotations, read_annotations, score
from maf_core.models import computes_p
from maf_core.run import RunDirectory
from maf_core.serve.limits import SPLIT
from pipeline.errors import DataError
from pipeline.images import STATUS, STATUS_NAMES, ImageIndex, Transform, decode, read_image_bytes
from pipeline.schemes import get_entities
from pipeline.tokenization import read_meta

THUMBNAIL = 480  # the longest side of a shown photo, pixels


def mark_errors(gold: list[tuple], predicted: list[tuple]) -> list[dict]:
    """Each predicted entity as correct, wrong-type (gold's span, another type), wrong-span
    (overlaps a gold entity, other boundaries) or spurious (overlaps none); each gold entity
    that no prediction overlaps as missed. Entities are (type, start, end exclusive)."""
    marks, wanted = [], set(gold)
    for kind, start, end in predicted:
        same = [g for g in gold if (g[1], g[2]) == (start, end)]
        overlap = [g for g in gold if g[1] < end and start < g[2]]
        if (kind, start, end) in wanted:
            mark, other = "correct", None
        elif same:
            mark, other = "wrong-type", same[0]
        elif overlap:
            mark, other = "wrong-span", overlap[0]
        else:
            mark, other = "spurious", None
        marks.append({"kind": mark, "type": kind, "start": start, "end": end,
                      **({"gold": list(other)} if other else {})})
    for kind, start, end in gold:
        if not any(p[1] < end and start < p[2] for p in predicted):
            marks.append({"kind": "missed", "type": kind, "start": start, "end": end})
    return marks


@dataclass
class BrowseRun:
    name: str
    directory: RunDirectory
    rows: list[dict]
    scores: dict
    report: dict | None

    def summary(self) -> dict:
        record = self.directory.record
        text_only = bool(record["model"].get("text_only"))
        return {"name": self.name, "text_only": text_only, "has_matching": computes_p(self.directory.model_config),
                "random": random_weights(record, text_only), "scores": self.scores, "report": self.report}


def random_weights(record: dict, text_only: bool) -> list[str]:
    """What of a run was never trained on real data: its BERT (random-init, no --bert) and its
    image backbone (random weights in the store's fingerprint). The page says so."""
    notes = []
    model = record["model"]
    if model.get("bert") is None:
        notes.append(f"its BERT ({model.get('bert_size', '?')}) has random weights: no pretrained encoder")
    weights = record.get("store_fingerprint", {}).get("weights", {})
    if not text_only and weights.get("kind") == "random":
        backbone = record["store_fingerprint"].get("backbone", "image backbone")
        notes.append(f"its image backbone ({backbone}) has random weights: the image features carry little "
                     "meaning")
    return notes


def versus(gold: set, first: set, second: set) -> str | None:
    """What the first run's predictions are beside the second's on one tweet: 'helped' (fewer
    errors), 'hurt' (more), 'tie' (other entities, as many errors) or None (the same entities).
    An error: a predicted entity not in gold, or a gold entity not predicted."""
    if first == second:
        return None
    ours, theirs = len(first ^ gold), len(second ^ gold)
    return "helped" if ours < theirs else "hurt" if ours > theirs else "tie"


def _read_run(path: str | Path, split: str, name: str | None = None) -> BrowseRun:
    run = RunDirectory.open(path)  # RUN or RUN/best
    predictions = run.predictions() / f"{split}.jsonl"
    if not predictions.is_file():
        raise DataError(f"{predictions}: no predictions of the {split} split; run `maf evaluate {run.path} "
                        f"--split {split}` first")
    rows = [json.loads(line) for line in predictions.read_text(encoding="utf-8").splitlines() if line.strip()]
    scores = score([r["gold"] for r in rows], [r["predicted"] for r in rows])
    report = (run.read_report() or {}).get(split)
    return BrowseRun(name or run.path.name, run, rows, scores, report)


class Browse:
    """The split's tweets as the page shows them (`payload`), and their images by id (`image`)."""

    def __init__(self, run_dir: str | Path, split: str = SPLIT, compare: str | Path | None = None,
                 images_dir: str | Path | None = None, features: str | Path | None = None,
                 text_dir: str | Path | None = None, annotations: str | Path | None = None) -> None:
        self.split = split
        main = _read_run(run_dir, split)
        self.runs = [main]
        if compare is not None:
            other = _read_run(compare, split)
            if other.name == main.name:  # runs/a/maf against runs/b/maf
                other.name = f"{other.name} (compared)"
            for n, (a, b) in enumerate(zip(main.rows, other.rows)):
                if a["id"] != b["id"] or a["words"] != b["words"]:
                    raise DataError(f"--compare {compare}: its {split} tweet {n + 1} ({b['id']!r}) is not "
                                    f"{run_dir}'s ({a['id']!r}); both runs must be of the same text")
            if len(main.rows) != len(other.rows):
                raise DataError(f"--compare {compare}: {len(other.rows)} {split} tweets, {run_dir} has "
                                f"{len(main.rows)}")
            self.runs.append(other)
        directory = main.directory
        self.text_dir = directory.data("text_dir", text_dir)
        self.meta = read_meta(self.text_dir)
        self.store = directory.open_store(features)
        source = Path(self.meta.get("source", ""))
        self.images_dir = Path(images_dir) if images_dir else source / "images"
        self.index = ImageIndex(self.images_dir) if self.images_dir.is_dir() else None
        notes_path = Path(annotations) if annotations else corpus_annotations(self.meta)
        self.notes = read_annotations(notes_path)
        transform = self.store.fingerprint["transform"]
        self.transform = Transform(transform["name"], transform.get("seed", 0))
        self.ids = {str(r["id"]) for r in main.rows}
        self.grid = int(round(self.store.num_regions ** 0.5))

    @property
    def run(self) -> RunDirectory:
        return self.runs[0].directory

    def image_status(self, image_id: str) -> str:
        row = self.store.rows.get(image_id)
        return STATUS_NAMES.get(int(self.store.status[row]), "?") if row is not None else "missing"

    def untagged(self) -> list[int]:
        """Per tweet, the words past the run's length in pieces (their first piece was cut, so
        the model tagged them O unseen), from the split's own tokenization; zeros when the
        tokenized text is not the predictions' (the attention check says so)."""
        split = _split(self.text_dir, self.split)
        rows = self.runs[0].rows
        if split.image_ids != [str(r["id"]) for r in rows]:
            return [0] * len(rows)
        return [sum(start < 0 for start in starts) for starts in split.word_starts]

    def payload(self) -> dict:
        tweets = []
        untagged = self.untagged()
        for n, row in enumerate(self.runs[0].rows):
            image_id = str(row["id"])
            gold = get_entities(row["gold"])
            note = self.notes.get(image_id, {})
            tweet = {"n": n, "id": image_id, "words": row["words"], "gold": [list(g) for g in gold],
                     "image_status": self.image_status(image_id), "untagged": untagged[n], "runs": []}
            if note:
                tweet.update(relation=note.get("relation"), image_class=note.get("image_class"),
                             image_decided=[[d["type"], d["start"], d["end"]] for d in note.get("image_decided", [])])
            for run in self.runs:
                theirs = run.rows[n]
                predicted = get_entities(theirs["predicted"])
                tweet["runs"].append({"entities": [list(p) for p in predicted], "marks": mark_errors(gold, predicted),
                                      "match_prob": theirs["match_prob"], "error": set(predicted) != set(gold)})
            if len(self.runs) > 1:
                first, second = ({tuple(e) for e in r["entities"]} for r in tweet["runs"])
                tweet["versus"] = versus(set(gold), first, second)
            tweets.append(tweet)
        types = sorted({e[0] for t in tweets for e in t["gold"] + [x for r in t["runs"] for x in r["entities"]]})
        return {"split": self.split, "runs": [r.summary() for r in self.runs], "types": types,
                "annotated": bool(self.notes), "grid": self.grid, "statuses": list(STATUS),
                "images": self.index is not None, "tweets": tweets}

    def image(self, image_id: str, view: str) -> tuple[bytes, str]:
        """An image of the split, looked up by id in its own index, never by a path a client
        sent: the photo (at most THUMBNAIL pixels a side, JPEG) or the 'model' view (what the
        backbone saw after the transform, PNG). KeyError with the reason when there is none."""
        if image_id not in self.ids or self.index is None:
            raise KeyError(f"no image {image_id!r} in the {self.split} split")
        return _encoded(self.index, image_id, view, self.transform)


@lru_cache(maxsize=512)
def _encoded(index: ImageIndex, image_id: str, view: str, transform: Transform) -> tuple[bytes, str]:
    from PIL import Image

    status, data = read_image_bytes(index, image_id)
    if status != STATUS["ok"]:
        raise KeyError(f"image {image_id!r}: {STATUS_NAMES[status]}")
    try:
        picture = decode(data)
    except Exception:  # noqa: BLE001 - any decoder failure (bombs included) is this image's status
        raise KeyError(f"image {image_id!r}: unreadable") from None
    out = io.BytesIO()
    if view == "model":
        Image.fromarray(transform(picture, image_id).transpose(1, 2, 0)).save(out, "PNG")
        return out.getvalue(), "image/png"
    picture.thumbnail((THUMBNAIL, THUMBNAIL))
    picture.save(out, "JPEG", quality=85)
    return out.getvalue(), "image/jpeg"


def tweet_attention(browse: Browse, n: int, model, device) -> dict:
    """Tweet `n` of the split tagged again by `model` (the run's best/, on the run's store) with
    CI's attention of each word of each predicted entity over the regions (a list per word).
    KeyError when there is no such tweet; no attention for a text-only run or an image that is
    not ok."""
    if not 0 <= n < len(browse.runs[0].rows):
        raise KeyError(f"no tweet {n} in the {browse.split} split")
    split = _split(browse.text_dir, browse.split)
    if split.image_ids[n] != str(browse.runs[0].rows[n]["id"]):
        raise DataError(f"{browse.text_dir}: its {browse.split} split is not the text of "
                        f"{browse.run.path}'s predictions")
    one = Split(split.name, *[[column[n]] for column in (split.image_ids, split.words, split.labels,
                                                        split.input_ids, split.word_starts, split.tag_ids)])
    weights: dict = {}
    store = browse.store if model.config.visual else None
    predicted, probs = predict_split(model, one, store, model.config.tags, model.config.scheme, 1, device,
                                     attention=weights, progress_every=1e9)
    ok = browse.image_status(one.image_ids[0]) == "ok"
    words = weights.get(0)
    entities = []
    for kind, start, end in get_entities(predicted[0]):
        entity = {"type": kind, "start": start, "end": end, "words": one.words[0][start:end]}
        if ok and words is not None and start < len(words):
            last = min(end, len(words))
            entity["attention"] = [[round(float(w), 6) for w in words[word]] for word in range(start, last)]
        entities.append(entity)
    return {"n": n, "id": one.image_ids[0], "entities": entities, "match_prob": probs[0], "grid": browse.grid,
            "image_status": browse.image_status(one.image_ids[0])}


@lru_cache(maxsize=4)
def _split(text_dir: Path, name: str) -> Split:
    return load_split(text_dir, name)
