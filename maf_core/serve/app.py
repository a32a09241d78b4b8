"""The app of `maf serve`: its routers, every error as JSON, `build` (a run -> an app) and
`serve` (until Ctrl-C)."""
from __future__ import annotations

import json
import logging
import socket
from pathlib import Path

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException

from maf_core.predict import MAFPredictor
from maf_core.serve.browse import Browse
from maf_core.serve.engine import Engine
from maf_core.serve.limits import DEVICE, HOST, PORT, SPLIT
from maf_core.serve.requests import ApiError, BodyLimit, Limits, one_line
from maf_core.serve.routes_browse import router as browse_router
from maf_core.serve.routes_page import STATIC
from maf_core.serve.routes_page import router as page_router
from maf_core.serve.routes_predict import router as predict_router
from maf_core.serve.security import Access, Guard, Headers
from maf_core.serve.uploads import PixelBudget, map_large_buffers
from pipeline.errors import DataError

logger = logging.getLogger(__name__)


def create_app(predictor: MAFPredictor, browse: Browse, limits: Limits | None = None, access: Access | None = None,
               compare: MAFPredictor | None = None):
    """The server's ASGI app: the page, the browse data, the images by id and the API, behind
    `access` (default: 127.0.0.1:7860, no token; `serve` sets the address it listens on).
    `compare`: the --compare run's model, which the Try tab and `?run=1` use."""
    limits, access = limits or Limits(), access or Access()
    engine = Engine(predictor, limits)
    app_engines = [engine] + ([Engine(compare, limits)] if compare is not None else [])
    app = FastAPIOffline(title="maf serve", version="1", redoc_url=None, swagger_ui_parameters={"validatorUrl": None},
                         description=f"Multimodal NER with the run {browse.run.path.name}: tag tweets and their "
                                     "images.")
    app.state.engine, app.state.browse, app.state.limits, app.state.access = engine, browse, limits, access
    app.state.engines = app_engines
    app.state.pixels = PixelBudget(limits.server_pixels)
    map_large_buffers()
    app.state.browse_payload = json.dumps(browse.payload(), ensure_ascii=False).encode()
    _answer_errors(app)
    app.include_router(page_router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.include_router(browse_router)
    app.include_router(predict_router)
    app.add_middleware(BodyLimit, limits=limits)
    app.add_middleware(Guard, access=access)
    app.add_middleware(Headers)  # the outermost: every answer gets its headers
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


def build(run_dir: str | Path, split: str = SPLIT, compare: str | Path | None = None,
          images_dir: str | Path | None = None, features: str | Path | None = None,
          text_dir: str | Path | None = None, limits: Limits | None = None, device: str = DEVICE):
    """The app for a run: its predictions to browse, its model (and --compare's) to try, loaded once."""
    browse = Browse(run_dir, split, compare, images_dir, features, text_dir)
    second = MAFPredictor.from_pretrained(compare, device) if compare is not None else None
    return create_app(MAFPredictor.from_pretrained(run_dir, device), browse, limits, compare=second)


def serve(app, host: str = HOST, port: int = PORT, allow_hosts: tuple[str, ...] = (), announce=print) -> None:
    """Serve `app` until Ctrl-C; `announce` gets the address (with its token, and a warning, off
    loopback). `allow_hosts`: Host names accepted besides loopback's."""
    import uvicorn

    listening = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:  # bound here, so that a port in use is an error of one line before the address is announced
        listening.bind((host, port))
    except OSError as err:
        listening.close()
        raise DataError(f"--host {host} --port {port}: cannot listen there ({err.strerror or err})") from None
    access: Access = app.state.access
    access.bind(host, listening.getsockname()[1], allow_hosts)
    if not access.loopback:
        announce(f"warning: serving on {host}, not loopback: anyone who can reach {host}:{access.port} and has the "
                 "token in the address below can use the model and read the run's predictions and images")
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    announce(f"maf serve: {access.url()}  (API docs: /docs; Ctrl-C stops)")
    try:
        server.run(sockets=[listening])
    except KeyboardInterrupt:  # uvicorn stops on Ctrl-C, then raises it again
        pass
    announce("maf serve: stopped")
