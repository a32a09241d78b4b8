"""The JSON API: POST /api/predict (items in, micro-batched, entities, match_prob and statuses out) and
GET /api/health."""
from __future__ import annotations

import asyncio

from fastapi import APIRouter, Query, Request

from maf_core.serve.batching import QueueFull
from maf_core.serve.engine import model_view
from maf_core.serve.requests import IMAGE_ERRORS, REQUEST_BODY, ApiError, PredictResponse, read_items
from maf_core.serve.uploads import measure, shrink

router = APIRouter()


@router.post("/api/predict", response_model=PredictResponse, response_model_exclude_unset=True,
             openapi_extra=REQUEST_BODY,
             summary="Tag tweets and their images: entities, match_prob and the image status per tweet",
             responses={400: {"description": "Malformed JSON"}, 413: {"description": "Over the upload limit"},
                        415: {"description": "Neither JSON nor multipart"},
                        422: {"description": "A bad item: empty or too long text, an unusable image"},
                        503: {"description": "The queue is full: retry after Retry-After seconds"}})
async def predict(request: Request, attention: bool = Query(False, description="Add CI's attention and the "
                                                                                "model's view of the image"),
                  run: int = Query(0, ge=0, le=1, description="0: the served run; 1: the --compare run")):
    engines, browse, limits = request.app.state.engines, request.app.state.browse, request.app.state.limits
    if run >= len(engines):
        raise ApiError(422, "run=1: this server has no --compare run")
    engine = engines[run]
    items = await read_items(request, limits)
    size = browse.transform.size
    measured = [measure(image, n, limits, size) if image is not None and engine.visual else None
                for n, (_, image) in enumerate(items)]
    pixels = sum(m.pixels for m in measured if m is not None)
    if pixels > limits.request_pixels:
        raise ApiError(422, f"items: {pixels:,} decoded pixels in all (a JPEG counts at the size it is decoded to); "
                            f"the limit per request is {limits.request_pixels:,}")
    async with request.app.state.pixels.hold(pixels, limits.pixel_wait):
        items = [(text, await asyncio.to_thread(shrink, image, m, size) if m is not None else image)
                 for (text, image), m in zip(items, measured)]
        try:
            future = engine.batcher.submit([(text, image, attention) for text, image in items])
        except QueueFull as err:
            raise ApiError(503, f"busy: {err}; retry in a second", headers={"Retry-After": "1"}) from None
        records = await asyncio.wrap_future(future)
        bad = [(n, r["image_status"]) for n, r in enumerate(records) if r["image_status"] in IMAGE_ERRORS]
        if bad:
            n, status = bad[0]
            raise ApiError(422, f"items.{n}.image: {IMAGE_ERRORS[status]}", image_status=status)
        views = [await asyncio.to_thread(model_view, image, browse.transform)
                 if attention and image is not None and record["image_status"] == "ok" else None
                 for record, (_, image) in zip(records, items)]
    out = []
    for record, view in zip(records, views):
        entities = [{**e, "text": " ".join(e["words"])} for e in record["entities"]]
        out.append({"words": record["words"], "tags": record["tags"], "entities": entities,
                    "match_prob": record["match_prob"], "p": record["match_prob"],
                    "image_status": record["image_status"], "untagged": record["untagged"],
                    **({"view": view} if attention else {})})
    return {"items": out}


@router.get("/api/health", summary="Up, and how many requests wait")
async def health(request: Request):
    engine = request.app.state.engine
    pixels = request.app.state.pixels
    return {"status": "ok", "waiting": engine.batcher.waiting(), "batches": engine.batcher.batches,
            "pixels_free": pixels.free}
