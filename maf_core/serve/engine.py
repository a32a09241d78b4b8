"""The run's model behind `maf serve`'s batcher: (text, image bytes or None, attention) items in,
`MAFPredictor`'s records out."""
from __future__ import annotations

import base64
import io
import itertools
import threading

from maf_core.predict import MAFPredictor
from maf_core.serve.batching import MicroBatcher
from maf_core.serve.requests import Limits
from maf_core.serve.uploads import release_memory
from pipeline.images import decode


class Engine:
    """The run's model behind the batcher: (text, image bytes or None) items -> predictions."""

    def __init__(self, predictor: MAFPredictor, limits: Limits) -> None:
        self.predictor, self.limits = predictor, limits
        self.visual = predictor.model.config.visual
        self.lock = threading.Lock()
        self._ids = itertools.count()
        if self.visual:
            predictor.featurizer()  # the backbone is built now, not on the first request
        self.batcher = MicroBatcher(self._run, limits.batch_items, limits.batch_wait, limits.queue, self.lock,
                                    has_image=lambda item: item[1] is not None, image_chunk=limits.image_chunk)

    def _run(self, items: list[tuple[str, bytes | None, bool]]) -> list[dict]:
        ids = [f"request-{next(self._ids)}" for _ in items]
        images = {i: image for i, (_, image, _) in zip(ids, items) if image is not None} if self.visual else None
        records = self.predictor.predict([{"id": i, "text": text} for i, (text, _, _) in zip(ids, items)],
                                         images=images, attention=any(a for _, _, a in items),
                                         batch_size=self.limits.batch_items)
        for record, (_, _, attention) in zip(records, items):
            record.setdefault("image_status", "unused")
            if not attention:
                for entity in record["entities"]:
                    entity.pop("attention", None)
                    entity.pop("word_attention", None)
        if images:
            release_memory()  # the decoded photos are freed: their pages go back to the system
        return records


_ONE_VIEW = threading.Lock()  # one full decode at a time here, as in the batcher's worker


def model_view(data: bytes, transform) -> str:
    """The image as the backbone saw it, as a PNG data URL."""
    from PIL import Image

    out = io.BytesIO()
    with _ONE_VIEW:
        Image.fromarray(transform(decode(data), "upload").transpose(1, 2, 0)).save(out, "PNG")
    release_memory()
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()
