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
import io
import itertools
import json
import logging
import socket
import threading
from pathlib import Path

from fastapi import Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException

from maf_core.predict import MAFPredictor
from maf_core.serve_batching import MicroBatcher, QueueFull
from maf_core.serve_browse import Browse, tweet_attention
from maf_core.serve_requests import (
    IMAGE_ERRORS,
    REQUEST_BODY,
    ApiError,
    BodyLimit,
    Limits,
    PredictResponse,
    one_line,
    read_items,
)
from pipeline.errors import DataError
from pipeline.images import decode

logger = logging.getLogger(__name__)
STATIC = Path(__file__).with_name("serve_static")
LOOPBACK = ("127.0.0.1", "localhost", "::1")
# the page and its files load from this server only, and talk to it only
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


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


def _view(data: bytes, transform) -> str:
    """The image as the backbone saw it, as a PNG data URL."""
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(transform(decode(data), "upload").transpose(1, 2, 0)).save(out, "PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


def create_app(predictor: MAFPredictor, browse: Browse, limits: Limits | None = None):
    """The server's ASGI app: the page, the browse data, the images by id and the API."""
    limits = limits or Limits()
    engine = Engine(predictor, limits)
    app = FastAPIOffline(title="maf serve", version="1", redoc_url=None, swagger_ui_parameters={"validatorUrl": None},
                         description=f"Multimodal NER with the run {browse.run.path.name}: tag tweets and their "
                                     "images.")
    app.state.engine, app.state.browse = engine, browse
    _answer_errors(app)
    _browse_routes(app, browse, engine, predictor)
    _predict_route(app, browse, engine, limits)

    @app.get("/api/health", summary="Up, and how many requests wait")
    async def health():
        return {"status": "ok", "waiting": engine.batcher.queue.qsize(), "batches": engine.batcher.batches}

    app.add_middleware(BodyLimit, limit=limits.max_upload_bytes)
    return app


def _answer_errors(app) -> None:
    """Every error as JSON with a one-line `detail`."""
    @app.exception_handler(ApiError)
    async def api_error(request: Request, err: ApiError):
        return JSONResponse({"detail": err.message, **err.extra}, status_code=err.status, headers=err.headers)

    @app.exception_handler(DataError)
    async def data_error(request: Request, err: DataError):  # the run's own data, not the request, is wrong
        return JSONResponse({"detail": str(err)}, status_code=500)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError):
        return JSONResponse({"detail": one_line(err)}, status_code=422)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException):
        return JSONResponse({"detail": err.detail}, status_code=err.status_code, headers=err.headers)


def _browse_routes(app, browse: Browse, engine: Engine, predictor: MAFPredictor) -> None:
    """The page, its static files, the browse data, the split's images by id and CI's attention."""
    payload = json.dumps(browse.payload(), ensure_ascii=False).encode()

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


def _predict_route(app, browse: Browse, engine: Engine, limits: Limits) -> None:
    """POST /api/predict: items in, micro-batched through `engine`, entities, p and statuses out."""
    @app.post("/api/predict", response_model=PredictResponse, response_model_exclude_none=True,
              openapi_extra=REQUEST_BODY,
              summary="Tag tweets and their images: entities, p and the image status per tweet",
              responses={400: {"description": "Malformed JSON"}, 413: {"description": "Over the upload limit"},
                         415: {"description": "Neither JSON nor multipart"},
                         422: {"description": "A bad item: empty or too long text, an unusable image"},
                         503: {"description": "The queue is full: retry after Retry-After seconds"}})
    async def predict(request: Request, attention: bool = Query(False, description="Add CI's attention and the "
                                                                                    "model's view of the image")):
        items = await read_items(request, limits)
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
