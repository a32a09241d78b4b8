"""`maf serve RUN`: one local web server with a page to browse a run's predictions and try new
tweets, and a JSON API (`POST /api/predict`, documented at /docs).

FastAPI serves the API and a page of our own (maf_core/serve_static/: one HTML file, one
script, one style sheet; no font, script or request that leaves the machine, and a
Content-Security-Policy that says so to the browser). /docs is Swagger UI from the files
fastapi-offline ships, not from a CDN. The model is `MAFPredictor`'s, loaded once; requests
are grouped by `MicroBatcher`. docs/serve.md shows how to use it, docs/design.md says why.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import io
import itertools
import json
import logging
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

from fastapi import Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, Field, ValidationError
from starlette.exceptions import HTTPException

from maf_core.predict import MAFPredictor
from maf_core.serve_batching import MicroBatcher, QueueFull
from maf_core.serve_browse import Browse, tweet_attention
from pipeline.errors import DataError
from pipeline.images import MAX_PIXELS, decode

logger = logging.getLogger(__name__)
STATIC = Path(__file__).with_name("serve_static")
LOOPBACK = ("127.0.0.1", "localhost", "::1")
# the page and its files load from this server only, and talk to it only
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
IMAGE_ERRORS = {
    "unreadable": "the image cannot be decoded (not an image, or a truncated or corrupt file)",
    "empty": "the image is empty (0 bytes)",
    "too_large": f"the image is over the pixel limit of {MAX_PIXELS:,} pixels (a decompression bomb?)",
}


@dataclass
class Limits:
    """What one request may hold, and how requests are grouped (`maf serve`'s options)."""

    max_upload_bytes: int = 10 * 2**20   # a request body, and an image; over it: 413
    max_text_chars: int = 2000           # per tweet; over it: 422 naming the limit
    max_items: int = 64                  # tweets per request
    batch_items: int = 32                # tweets per forward, over all requests grouped
    batch_wait: float = 0.01             # seconds the first request waits for others
    queue: int = 64                      # requests waiting; over it: 503 with Retry-After


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


class Prediction(BaseModel):
    words: list[str]
    tags: list[str] = Field(description="A BIO tag per word.")
    entities: list[Entity]
    p: float = Field(description="The match probability of text and image (0 without an image or without CM).")
    image_status: str = Field(description="ok, missing (none sent), unused (a text-only run), or the status that "
                                          "made the request fail.")
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


class Engine:
    """The run's model behind the batcher: (text, image bytes or None) items -> predictions."""

    def __init__(self, predictor: MAFPredictor, limits: Limits) -> None:
        self.predictor, self.limits = predictor, limits
        self.visual = predictor.model.config.visual
        self.lock = threading.Lock()
        self._ids = itertools.count()
        if self.visual:
            predictor.featurizer()  # the backbone is built now, not on the first request
        self.batcher = MicroBatcher(self._run, limits.batch_items, limits.batch_wait, limits.queue, self.lock)

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
        return records


def _one_line(err: ValidationError | RequestValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
    return f"{where}: {first['msg']}" if where else first["msg"]


async def _items(request: Request, limits: Limits) -> list[tuple[str, bytes | None]]:
    """(text, image bytes) per item, from a JSON or a multipart body; ApiError for anything else."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "application/json":
        body = await request.body()
        try:
            data = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ApiError(400, f"malformed JSON: {getattr(err, 'msg', err)}") from None
        try:
            parsed = PredictRequest.model_validate(data)
        except ValidationError as err:
            raise ApiError(422, _one_line(err)) from None
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


def _view(data: bytes, transform) -> str:
    """The image as the backbone saw it, as a PNG data URL."""
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(transform(decode(data), "upload").transpose(1, 2, 0)).save(out, "PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes gets 413 before it is read whole."""

    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._refuse(send, int(declared))
        seen, started = 0, False

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise _TooLarge
            return message

        async def tracked(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except _TooLarge:
            if not started:
                await self._refuse(send, seen)

    async def _refuse(self, send, size: int) -> None:
        body = json.dumps({"detail": f"request body of {size:,} bytes or more; the limit is {self.limit:,} "
                                     "(maf serve --max-upload-mb)"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


def create_app(predictor: MAFPredictor, browse: Browse, limits: Limits | None = None):
    """The server's ASGI app: the page, the browse data, the images by id and the API."""
    limits = limits or Limits()
    engine = Engine(predictor, limits)
    app = FastAPIOffline(title="maf serve", version="1", redoc_url=None, swagger_ui_parameters={"validatorUrl": None},
                         description=f"Multimodal NER with the run {browse.run.path.name}: tag tweets and their "
                                     "images.")
    app.state.engine, app.state.browse = engine, browse
    payload = json.dumps(browse.payload(), ensure_ascii=False).encode()

    @app.exception_handler(ApiError)
    async def api_error(request: Request, err: ApiError):
        return JSONResponse({"detail": err.message, **err.extra}, status_code=err.status, headers=err.headers)

    @app.exception_handler(DataError)
    async def data_error(request: Request, err: DataError):  # the run's own data, not the request, is wrong
        return JSONResponse({"detail": str(err)}, status_code=500)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError):
        return JSONResponse({"detail": _one_line(err)}, status_code=422)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException):
        return JSONResponse({"detail": err.detail}, status_code=err.status_code, headers=err.headers)

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html", headers={"Content-Security-Policy": CSP,
                                                            "Cache-Control": "no-store"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/api/browse", summary="The split's tweets, predictions, errors and scores (what the page shows)")
    async def browse_data():
        return Response(payload, media_type="application/json")

    @app.get("/api/image/{image_id}", summary="An image of the split, by id: the photo or the model's view",
             responses={404: {"description": "No such image in the run's split, or it could not be read"}})
    async def image(image_id: str, view: str = Query("photo", pattern="^(photo|model)$")):
        try:
            data, kind = await asyncio.to_thread(browse.image, image_id, view)
        except KeyError as err:
            raise ApiError(404, err.args[0]) from None
        return Response(data, media_type=kind, headers={"Cache-Control": "max-age=3600"})

    @app.get("/api/attention/{n}", summary="Tweet n tagged again, with CI's attention per predicted entity")
    async def attention(n: int):
        def run():
            with engine.lock:
                return tweet_attention(browse, n, predictor.model, predictor.device)
        try:
            return await asyncio.to_thread(run)
        except KeyError as err:
            raise ApiError(404, err.args[0]) from None

    @app.post("/api/predict", response_model=PredictResponse, response_model_exclude_none=True,
              openapi_extra=REQUEST_BODY,
              summary="Tag tweets and their images: entities, p and the image status per tweet",
              responses={400: {"description": "Malformed JSON"}, 413: {"description": "Over the upload limit"},
                         415: {"description": "Neither JSON nor multipart"},
                         422: {"description": "A bad item: empty or too long text, an unusable image"},
                         503: {"description": "The queue is full: retry after Retry-After seconds"}})
    async def predict(request: Request, attention: bool = Query(False, description="Add CI's attention and the "
                                                                                    "model's view of the image")):
        items = await _items(request, limits)
        try:
            future = engine.batcher.submit([(text, image, attention) for text, image in items])
        except QueueFull as err:
            raise ApiError(503, f"busy: {err}; retry in a second", headers={"Retry-After": "1"}) from None
        records = await asyncio.wrap_future(future)
        bad = [(n, r["image_status"]) for n, r in enumerate(records) if r["image_status"] in IMAGE_ERRORS]
        if bad:
            n, status = bad[0]
            raise ApiError(422, f"items.{n}.image: {IMAGE_ERRORS[status]}", image_status=status)
        out = []
        for record, (_, image) in zip(records, items):
            entities = [{**e, "text": " ".join(e["words"])} for e in record["entities"]]
            view = None
            if attention and image is not None and record["image_status"] == "ok":
                view = await asyncio.to_thread(_view, image, browse.transform)
            out.append({"words": record["words"], "tags": record["tags"], "entities": entities,
                        "p": record["match_prob"], "image_status": record["image_status"], "view": view})
        return {"items": out}

    @app.get("/api/health", summary="Up, and how many requests wait")
    async def health():
        return {"status": "ok", "waiting": engine.batcher.queue.qsize(), "batches": engine.batcher.batches}

    app.add_middleware(BodyLimit, limit=limits.max_upload_bytes)
    return app


def build(run_dir: str | Path, split: str = "test", compare: str | Path | None = None,
          images_dir: str | Path | None = None, features: str | Path | None = None,
          text_dir: str | Path | None = None, limits: Limits | None = None, device: str = "auto"):
    """The app for a run: its predictions to browse, its model to try (loaded once)."""
    browse = Browse(run_dir, split, compare, images_dir, features, text_dir)
    return create_app(MAFPredictor.from_pretrained(run_dir, device), browse, limits)


def serve(app, host: str = "127.0.0.1", port: int = 7860, announce=print) -> None:
    """Serve `app` until Ctrl-C; `announce` gets the address (and a warning off loopback)."""
    import uvicorn

    if host not in LOOPBACK:
        announce(f"warning: serving on {host}, not loopback: anyone who can reach {host}:{port} can use the model "
                 "and read the run's predictions and images")
    listening = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:  # bound here, so that a port in use is an error of one line before the address is announced
        listening.bind((host, port))
    except OSError as err:
        listening.close()
        raise DataError(f"--host {host} --port {port}: cannot listen there ({err.strerror or err})") from None
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    shown = f"[{host}]" if ":" in host else host
    announce(f"maf serve: http://{shown}:{listening.getsockname()[1]}/  (API docs: /docs; Ctrl-C stops)")
    try:
        server.run(sockets=[listening])
    except KeyboardInterrupt:  # uvicorn stops on Ctrl-C, then raises it again
        pass
    announce("maf serve: stopped")
