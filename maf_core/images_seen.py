"""What a model sees of the images: whether it reads them at all, and how many tweets of each
split have a readable image in the store.

A store extracted from the wrong folder holds no image, and a multimodal model trained on it
is a text-only model in effect. The start-of-run warning, the end-of-run note, report.json,
the model card, `maf evaluate` and `maf predict` say so from here.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from maf_core.config import MAFConfig
from maf_core.models import reads_images  # the model's class says (maf_core.models.registry)
from pipeline.images import STATUS
from pipeline.store import FeatureSource

FEW = 0.5  # under this share of readable train images, a model that reads images is warned about


def readable_images(image_ids: Sequence[str], store: FeatureSource) -> dict | None:
    """{"tweets", "readable", "share"} for the tweets whose images are `image_ids` (one per
    tweet); None for a source without statuses (images read in every step)."""
    statuses = store.statuses(image_ids)
    if statuses is None:
        return None
    readable = int(np.count_nonzero(statuses == STATUS["ok"]))
    tweets = len(image_ids)
    return {"tweets": tweets, "readable": readable, "share": round(readable / tweets, 4) if tweets else None}


def readable_by_split(splits: Mapping, store: FeatureSource) -> dict[str, dict] | None:
    """`readable_images` of each split (objects with `image_ids`), by split name; None as above."""
    counts = {name: readable_images(split.image_ids, store) for name, split in splits.items()}
    return None if any(c is None for c in counts.values()) else counts


def _share(counts: dict) -> str:
    return f"{counts['readable']} of {counts['tweets']} ({100 * counts['readable'] / counts['tweets']:.1f}%)"


def start_warning(config: MAFConfig, by_split: dict[str, dict] | None) -> str | None:
    """The warning before the first step when a model that reads images trains where under half
    the train split's images are readable; None otherwise."""
    train = (by_split or {}).get("train")
    if not reads_images(config) or not train or not train["tweets"] or train["share"] >= FEW:
        return None
    if train["readable"] == 0:
        found = (f"none of the {train['tweets']} train tweets (0%) has a readable image in the store: the model "
                 "will see no image and train as a text-only model")
    else:
        found = (f"only {_share(train)} train tweets have a readable image in the store: the model learns little "
                 "from the images")
    return f"{found}. Check the store (maf-pipe inspect STORE) and the IMAGES_DIR it was extracted from"


def no_image_note(config: MAFConfig, by_split: dict[str, dict] | None) -> str | None:
    """The end-of-run note when a model that reads images saw no image in training; None otherwise."""
    train = (by_split or {}).get("train")
    if not reads_images(config) or not train or not train["tweets"] or train["readable"]:
        return None
    return (f"the model saw no image: none of the {train['tweets']} train tweets had a readable image in the "
            "store, so it is in effect a text-only model, and its scores say nothing about images")


def no_image_line(config: MAFConfig, where: str, tweets: int, readable: int) -> str | None:
    """The one line `maf evaluate` and `maf predict` print when none of the tweets they tag has a
    readable image, for a model that reads images; None otherwise."""
    if not reads_images(config) or not tweets or readable:
        return None
    if tweets == 1:
        return f"{where}: its one tweet has no readable image; the model tagged it from the text alone"
    return f"{where}: none of the {tweets} tweets has a readable image; the model tagged them from the text alone"
