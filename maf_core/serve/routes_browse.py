"""What the page shows: the browse data, the split's images by id and CI's attention."""
from __future__ import annotations

import asyncio

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from maf_core.serve.batching import QueueFull
from maf_core.serve.browse import tweet_attention
from maf_core.serve.requests import ApiError

router = APIRouter()


@router.get("/api/browse", summary="The split's tweets, predictions, errors and scores (what the page shows)")
async def browse_data(request: Request):
    return Response(request.app.state.browse_payload, media_type="application/json")


@router.get("/api/image/{image_id}", summary="An image of the split, by id: the photo or the model's view",
            responses={404: {"description": "No such image in the run's split, or it could not be read"}})
async def image(request: Request, image_id: str, view: str = Query("photo", pattern="^(photo|model)$")):
    try:
        data, kind = await asyncio.to_thread(request.app.state.browse.image, image_id, view)
    except KeyError as err:
        raise ApiError(404, err.args[0]) from None
    return Response(data, media_type=kind, headers={"Cache-Control": "max-age=3600"})


@router.post("/api/attention/{n}", summary="Tweet n tagged again, with CI's attention per predicted entity "
             "(a POST: it runs the model)")
async def attention(request: Request, n: int):
    engine, browse = request.app.state.engine, request.app.state.browse
    predictor = engine.predictor

    try:  # queued with the light requests: it never waits behind a whole request of images
        future = engine.batcher.call(lambda: tweet_attention(browse, n, predictor.model, predictor.device))
    except QueueFull as err:
        raise ApiError(503, f"busy: {err}; retry in a second", headers={"Retry-After": "1"}) from None
    try:
        return await asyncio.wrap_future(future)
    except KeyError as err:
        raise ApiError(404, err.args[0]) from None
