"""Apply a trained run to new tweets: the Python API behind `maf predict`.

    from maf_core.predict import MAFPredictor
    predictor = MAFPredictor.from_pretrained("runs/maf")          # or runs/maf/best
    predictor.predict([{"id": "1", "text": "Rob at the beach", "image": "1"}], images_dir="new_images")

Images come from a feature store made with the run's fingerprint, or are extracted on the
fly from an images directory with the run's backbone settings (same weights, transform and
BatchNorm statistics), so new features match the ones the model was trained on. `images=`
takes the images' bytes instead of a directory (what `maf serve` does): the same backbone,
built once per predictor and kept, with no store file written.
"""
from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import numpy as np
import torch

from maf_core.data import Split
from maf_core.inference import predict_split, resolve_device
from maf_core.models import model_name
from maf_core.run import RunDirectory
from pipeline.conll import Tweet, iter_conll
from pipeline.errors import DataError
from pipeline.extract import extract_images
from pipeline.featurize import ImageFeaturizer, MemoryStore
from pipeline.files import atomic_output
from pipeline.fingerprint import extract_config_of
from pipeline.images import STATUS_NAMES
from pipeline.schemes import get_entities
from pipeline.store import FeatureStore
from pipeline.tokenization import tokenize_tweets

logger = logging.getLogger(__name__)


class MAFPredictor:
    def __init__(self, model, run: RunDirectory, tokenizer, device: torch.device) -> None:
        self.model, self.run, self.tokenizer, self.device = model, run, tokenizer, device
        self._featurizer: ImageFeaturizer | None = None

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str = "auto") -> "MAFPredictor":
        """A run directory (its best/ is used) or its best/ directory."""
        run = RunDirectory.open(path)
        dev = resolve_device(device)
        return cls(run.load_best(dev), run, run.load_tokenizer(), dev)

    @property
    def max_length(self) -> int:
        """The run's length in pieces: words past it are not seen, and are tagged O (`untagged`)."""
        return int(self.run.record.get("max_length", 128))

    def _extract_config(self, weights: str | None):
        """The ExtractConfig that makes new images' features as the run's store's were made."""
        wanted = self.run.record["store_fingerprint"]
        source = f"the store {self.run.path} was trained on"
        buffers = self.run.bn_buffers() if wanted["bn_stats"]["mode"] == "dataset" else None
        return extract_config_of(wanted, weights=weights, bn_buffers=buffers, source=source)

    def _check_new_images(self, found: dict) -> None:
        """New images' features (from `images_dir` or `images`) must be made as the run's store's were."""
        self.run.check_fingerprint(found, "new images")

    def featurizer(self, weights: str | None = None) -> ImageFeaturizer:
        """The run's backbone for images given as bytes, built on first use and kept."""
        if self._featurizer is None:
            featurizer = ImageFeaturizer(self._extract_config(weights))
            self._check_new_images(featurizer.fingerprint)
            self._featurizer = featurizer
        return self._featurizer

    def _store_for(self, image_ids: list[str], features: str | Path | None, images_dir: str | Path | None,
                   weights: str | None, workdir: Path,
                   images: dict[str, bytes | None] | None = None) -> FeatureStore | MemoryStore | None:
        if features is not None:
            return self.run.open_store(features)
        wanted_ids = sorted(set(image_ids))
        if images is not None:  # a tweet whose image id is not in `images` gets status missing
            featurizer = self.featurizer(weights)
            return MemoryStore(featurizer.extract([(i, images.get(i)) for i in wanted_ids]), featurizer.fingerprint)
        if images_dir is None:
            return None
        out = workdir / "store.h5"
        extract_images(images_dir, out, self._extract_config(weights), ids=wanted_ids)
        store = FeatureStore(out)
        self._check_new_images(store.fingerprint)
        return store

    def predict(self, items: list[dict], features: str | Path | None = None, images_dir: str | Path | None = None,
                weights: str | None = None, batch_size: int = 64, images: dict[str, bytes | None] | None = None,
                attention: bool = False) -> list[dict]:
        """items: {"id", "text" (split on spaces) or "words", "image" (an image id; default the id)}.
        The images: `features` (a store of the run's fingerprint), `images_dir`, or `images`
        (bytes by image id; an id not there gets status missing).

        Returns per item: id, words, BIO tags, entities (type, start, end exclusive, words),
        untagged (how many words, at the end, lie past the run's length in pieces, `max_length`:
        the model never saw them, and they are tagged O), match_prob, CM's match probability p
        (0 without an image; None, never missing, for a model without CM: UMT, MT, text-only or
        --no-matching), and the image status. `attention`: where the image is ok, each entity
        also gets CI's attention over the regions (num_regions floats, row-major, averaged over
        heads): `attention` for its first word, and `word_attention`, a list with one map per
        word of the entity (words past the run's length, which the model never saw, have none).
        """
        tweets = []
        for n, item in enumerate(items, 1):
            words = item.get("words") or str(item.get("text", "")).split()
            if "id" not in item or not words:
                raise DataError(f"item {n}: needs an 'id' and non-empty 'text' or 'words', got {item!r}")
            tweets.append(Tweet(str(item.get("image", item["id"])), list(words), ["O"] * len(words), n))
        meta_scheme = self.model.config.scheme
        result = tokenize_tweets(tweets, self.tokenizer, max_length=self.max_length,
                                 scheme=meta_scheme, split="predict")
        table = result.table.to_pydict()
        split = Split("predict", table["image_id"], table["words"], table["labels"], table["input_ids"],
                      table["word_starts"], table["tag_ids"])
        weights_by_word: dict[int, np.ndarray] | None = {} if attention else None
        with tempfile.TemporaryDirectory(prefix="maf-predict-") as tmp:
            store = self._store_for(split.image_ids, features, images_dir, weights, Path(tmp), images)
            if store is None and self.model.config.visual:
                raise DataError(f"{model_name(self.model.config)} needs image features: pass features=store.h5, "
                                "images_dir=DIR or images= (a text-only run needs none)")
            if store is not None:
                absent = sorted({i for i in split.image_ids if i not in store})
                if absent:
                    raise DataError(f"{store.path}: no features for image ids {', '.join(map(repr, absent[:5]))}")
                status = dict(zip(store.image_ids, store.status.tolist()))
            predicted, probs = predict_split(self.model, split, store, self.model.config.tags, meta_scheme,
                                             batch_size, self.device, attention=weights_by_word)
        out = []
        for i, item in enumerate(items):
            entities = [{"type": t, "start": s, "end": e, "words": split.words[i][s:e]}
                        for t, s, e in get_entities(predicted[i])]
            record = {"id": item["id"], "words": split.words[i], "tags": predicted[i], "entities": entities,
                      "untagged": sum(start < 0 for start in split.word_starts[i]), "match_prob": probs[i]}
            if store is not None:
                record["image_status"] = STATUS_NAMES.get(status[split.image_ids[i]], "?")
            if weights_by_word is not None and record.get("image_status") == "ok":
                words = weights_by_word.get(i)  # shape: (words seen, regions)
                for entity in entities:
                    if words is not None and entity["start"] < len(words):
                        maps = [[round(float(w), 6) for w in words[word]]
                                for word in range(entity["start"], min(entity["end"], len(words)))]
                        entity["attention"], entity["word_attention"] = maps[0], maps
            out.append(record)
        return out


def read_items(path: str | Path) -> list[dict]:
    """JSONL of {"id", "text" or "words", "image"}, or a CoNLL file (its IMGIDs as ids and images)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    first = path.read_text(encoding="utf-8-sig").lstrip()[:1]
    if first == "{":
        items = []
        for number, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
            if line.strip():
                try:
                    items.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise DataError(f"{path}:{number}: not a JSON object ({err.msg})") from None
        return items
    return [{"id": t.image_id, "words": t.words, "image": t.image_id} for t in iter_conll(path)]


def write_records(path: str | Path, records: list[dict]) -> None:
    """`maf predict`'s output: one JSON object per tweet, written whole or not at all."""
    with atomic_output(path) as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
