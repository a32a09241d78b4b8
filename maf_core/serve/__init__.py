"""`maf serve RUN`: one local web server with a page to browse a run's predictions and try new
tweets, and a JSON API (`POST /api/predict`, documented at /docs).

FastAPI serves the API and a page of our own (static/: one HTML file, one script, one style
sheet; no font, script or request that leaves the machine, and a Content-Security-Policy that
says so to the browser). /docs is Swagger UI from the files fastapi-offline ships, not from a
CDN. The model is `MAFPredictor`'s, loaded once; requests are grouped by `MicroBatcher`.
docs/serve.md shows how to use it, docs/design.md says why.

    app.py            the app: its routers, its errors, `build` (a run -> an app) and `serve`
    routes_page.py    /, /static: the page
    routes_browse.py  /api/browse, /api/image/{id}, /api/attention/{n}: what the page shows
    routes_predict.py /api/predict, /api/health: the JSON API
    security.py       who may reach it (Host, Origin, token) and the headers of every answer
    engine.py         the run's model behind the batcher
    uploads.py        what an image costs: the pixel limit, draft decoding, the pixel budget
    requests.py       how a request is read, its schema, errors of one line, the body limits
    limits.py         what a request may hold and cost (`Limits`, the command's defaults)
    batching.py       concurrent requests grouped into one forward
    browse.py         a run's predictions, errors, images and scores as the page shows them
"""
from maf_core.serve.limits import Limits

__all__ = ["STATIC", "Access", "Limits", "build", "create_app", "serve"]  # noqa: F822 - the lazy __getattr__ below


def __getattr__(name: str):
    """The app's names, imported on first use: `maf_core.serve.limits` alone loads no server."""
    if name in ("build", "create_app", "serve"):
        from maf_core.serve import app
        return getattr(app, name)
    if name == "STATIC":
        from maf_core.serve.routes_page import STATIC
        return STATIC
    if name == "Access":
        from maf_core.serve.security import Access
        return Access
    raise AttributeError(f"module 'maf_core.serve' has no attribute {name!r}")
