"""What a request to `maf serve`'s API may hold, and how it is read: the limits, the JSON and
multipart bodies, the schema /docs shows, and errors of one line (`ApiError`). A body over the
upload limit is refused before it is read whole (`BodyLimit`).
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field, ValidationError

from maf_core.serve.limits import Limits
from pipeline.images import MAX_PIXELS

logger = logging.getLogger(__name__)

IMAGE_ERRORS = {
    "unreadable": "the image cannot be decoded (not an image, or a truncated or corrupt file)",
    "empty": "the image is empty (0 bytes)",
    "too_large": f"the image is over the pixel limit of {MAX_PIXELS:,} pixels (a decompression bomb?)",
}


class ApiError(Exception):
    """An answer of one line: {"detail": message, **extra}, with `status` and `headers`."""

    def __init__(self, status: int, message: str, headers: dict | None = None, **extra) -> None:
        super().__init__(message)
        self.status, self.message, self.headers, self.extra = status, message, headers, extra


class Item(BaseModel):
    text: str = Field(description="The tweet; words are split on white space.")
    image: str | None = Field(None, description="The image file (JPEG, PNG, ...) in base64, or null for none.")


class PredictRequest(BaseModel):
    items: list[Item] = Field(description="Tweets to tag, with their images.")


class Entity(BaseModel):
    type: str = Field(description="PER, LOC, ORG or MISC.")
    start: int = Field(description="Index of the first word.")
    end: int = Field(description="Index after the last word.")
    text: str = Field(description="The words of the entity, joined by spaces.")
    attention: list[float] | None = Field(
        None, description="With ?attention=true and an image: CI's attention of the entity's first word over the "
                          "image's regions (7x7, row-major).")
    word_attention: list[list[float]] | None = Field(
        None, description="With ?attention=true and an image: CI's attention of each word of the entity over the "
                          "regions, one map per word (the first is `attention`); a word past the run's length has "
                          "none.")


class Prediction(BaseModel):
    words: list[str]
    tags: list[str] = Field(description="A BIO tag per word.")
    entities: list[Entity]
    match_prob: float | None = Field(description="p, the match probability of text and image (CM): 0 without an "
                                                 "image; null for a model without CM (UMT, MT, text-only); never "
                                                 "missing. The name maf predict and MAFPredictor give it.")
    p: float | None = Field(description="The same value as match_prob, under its earlier name (kept for existing "
                                        "clients; use match_prob).", deprecated=True)
    image_status: str = Field(description="ok, missing (none sent), unused (a text-only run), or the status that "
                                          "made the request fail.")
    untagged: int = Field(description="How many words, at the end, lie past the run's length in pieces "
                                      "(max_length): the model did not see them, and they are tagged O.")
    view: str | None = Field(None, description="With ?attention=true: the image as the backbone saw it (a PNG "
                                                "data URL), for drawing the attention on.")


class PredictResponse(BaseModel):
    items: list[Prediction]


def _inline(schema: dict) -> dict:
    """A pydantic JSON schema with its $defs put in place, so that it stands inside an OpenAPI document."""
    defs = schema.pop("$defs", {})

    def resolve(node):
        if isinstance(node, dict):
            if "$ref" in node:
                return resolve(defs[node["$ref"].rsplit("/", 1)[-1]])
            return {k: resolve(v) for k, v in node.items()}
        return [resolve(v) for v in node] if isinstance(node, list) else node

    return resolve(schema)


REQUEST_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": _inline(PredictRequest.model_json_schema())},
    "multipart/form-data": {"schema": {"type": "object", "properties": {
        "text": {"type": "array", "items": {"type": "string"}, "description": "One field per tweet."},
        "image": {"type": "array", "items": {"type": "string", "format": "binary"},
                  "description": "None, or one file per text, in the same order."}}, "required": ["text"]}}}}}


def one_line(err: ValidationError | RequestValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
    return f"{where}: {first['msg']}" if where else first["msg"]


async def read_items(request: Request, limits: Limits) -> list[tuple[str, bytes | None]]:
    """(text, image bytes) per item, from a JSON or a multipart body; ApiError for anything else."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "application/json":
        body = await request.body()
        try:
            data = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ApiError(400, f"malformed JSON: {getattr(err, 'msg', err)}") from None
        except RecursionError:
            raise ApiError(400, "malformed JSON: nested too deep") from None
        try:
            parsed = PredictRequest.model_validate(data)
        except ValidationError as err:
            raise ApiError(422, one_line(err)) from None
        items = []
        for n, item in enumerate(parsed.items):
            image = None
            if item.image is not None:
                try:
                    image = base64.b64decode(item.image, validate=True)
                except (binascii.Error, ValueError):
                    raise ApiError(422, f"items.{n}.image: not valid base64") from None
            items.append((item.text, image))
    elif kind == "multipart/form-data":
        form = await request.form(max_part_size=limits.max_upload_bytes)
        texts, files = form.getlist("text"), form.getlist("image")
        if not all(isinstance(t, str) for t in texts) or any(isinstance(f, str) for f in files):
            raise ApiError(422, "multipart: 'text' fields must be text and 'image' fields files")
        if files and len(files) != len(texts):
            raise ApiError(422, f"multipart: {len(texts)} 'text' fields and {len(files)} 'image' files; send no "
                                "image or one per text, in the same order")
        images = [await f.read() for f in files] or [None] * len(texts)
        items = list(zip(texts, images))
    else:
        raise ApiError(415, f"content type {kind or 'none'!r}: send application/json or multipart/form-data")
    if not items:
        raise ApiError(422, "items: send at least one tweet")
    if len(items) > limits.max_items:
        raise ApiError(422, f"items: {len(items)} tweets in one request; the limit is {limits.max_items}")
    for n, (text, image) in enumerate(items):
        if len(text) > limits.max_text_chars:
            raise ApiError(422, f"items.{n}.text: {len(text):,} characters; the limit is {limits.max_text_chars:,}")
        if not text.split():
            raise ApiError(422, f"items.{n}.text: empty; a tweet needs at least one word")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as err:
            raise ApiError(422, f"items.{n}.text: not valid Unicode (a lone surrogate at character {err.start})") \
                from None
        if image is not None and len(image) > limits.max_upload_bytes:
            raise ApiError(413, f"items.{n}.image: {len(image):,} bytes; the limit is {limits.max_upload_bytes:,}")
        if image is not None and not image:
            raise ApiError(422, f"items.{n}.image: {IMAGE_ERRORS['empty']}", image_status="empty")
    return items


class BodyLimit:
    """ASGI middleware: a request body over `limits.max_upload_bytes` gets 413 before it is read
    whole; a body whose next part does not come within `limits.body_timeout` seconds gets 408
    (a client that declares 5 MB and sends 10 bytes is not waited on forever)."""

    def __init__(self, app, limits: Limits) -> None:
        self.app, self.limits = app, limits

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        limit = self.limits.max_upload_bytes
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return await self._refuse(send, 413, f"request body of {int(declared):,} bytes or more; the limit is "
                                                 f"{limit:,} (maf serve --max-upload-mb)")
        seen, started, whole = 0, False, False

        async def counted():
            nonlocal seen, whole
            if whole:  # the body is in: what comes now is a disconnect, whenever it comes
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.limits.body_timeout)
            except asyncio.TimeoutError:
                raise _TimedOut from None
            seen += len(message.get("body", b""))
            if seen > limit:
                raise _TooLarge
            whole = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        async def tracked(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except _TooLarge:
            if not started:
                await self._refuse(send, 413, f"request body of {seen:,} bytes or more; the limit is {limit:,} "
                                              "(maf serve --max-upload-mb)")
        except _TimedOut:
            logger.warning("%s %s: no more of the body for %g s after %s bytes; answered 408", scope["method"],
                           scope["path"], self.limits.body_timeout, f"{seen:,}")
            if not started:
                await self._refuse(send, 408, f"the request body stopped after {seen:,} bytes: nothing more came "
                                              f"for {self.limits.body_timeout:g} s")

    async def _refuse(self, send, status: int, detail: str) -> None:
        body = json.dumps({"detail": detail}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


class _TimedOut(Exception):
    pass


class _TooLarge(Exception):
    pass
