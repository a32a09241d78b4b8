"""`maf serve` answers this machine's pages only: a foreign Host, a foreign Origin (multipart
included), a cross-site fetch and a GET that would run the model are refused; off loopback every
API call needs the token; every answer carries the security headers."""
from __future__ import annotations

import io
import logging

import pytest
from fastapi.testclient import TestClient
from helpers import SERVE_BASE as BASE
from PIL import Image


@pytest.fixture(scope="module")
def tweet(client) -> dict:
    return next(t for t in client.get("/api/browse").json()["tweets"] if t["image_status"] == "ok")


def _jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 40, 40)).save(out, "JPEG")
    return out.getvalue()


def test_a_foreign_host_is_refused_on_every_route(client, tweet):
    for path in ("/", "/api/browse", f"/api/image/{tweet['id']}", "/static/app.js", "/docs", "/openapi.json"):
        for host in ("evil.example", "evil.example:7860", "127.0.0.1:7861", "127.0.0.1.evil.example:7860"):
            answer = client.get(path, headers={"host": host})
            assert answer.status_code == 400, (path, host)
            assert answer.json()["detail"].startswith(f"Host {host!r} is not this server's name"), (path, host)
    refused = client.post("/api/predict", json={"items": [{"text": "Rob"}]}, headers={"host": "evil.example:7860"})
    assert refused.status_code == 400
    for host in ("127.0.0.1:7860", "localhost:7860", "[::1]:7860", "LOCALHOST:7860"):
        assert client.get("/api/health", headers={"host": host}).status_code == 200, host


def test_allow_host_adds_a_name(app, client):
    access = app.state.access
    try:
        access.bind("127.0.0.1", 7860, ("mybox.lan",))
        assert client.get("/api/health", headers={"host": "mybox.lan:7860"}).status_code == 200
        assert client.get("/api/health", headers={"host": "other.lan:7860"}).status_code == 400
    finally:
        access.bind("127.0.0.1", 7860)
    assert client.get("/api/health", headers={"host": "mybox.lan:7860"}).status_code == 400


def test_a_foreign_origin_cannot_drive_the_model_with_multipart(app, client):
    engine = app.state.engine
    before = engine.batcher.batches
    for origin in ("http://evil.example", "http://127.0.0.1:8000", "http://localhost:7860", "null"):
        answer = client.post("/api/predict", data={"text": "Rob at the beach"},
                             files=[("image", ("x.jpg", _jpeg(), "image/jpeg"))], headers={"origin": origin})
        assert answer.status_code == 403, origin
        assert answer.json()["detail"] == f"Origin {origin!r}: only this server's own page may call it"
        assert client.post("/api/attention/0", headers={"origin": origin}).status_code == 403
        assert client.get("/api/browse", headers={"origin": origin}).status_code == 403
    assert engine.batcher.batches == before  # no forward ran
    same = client.post("/api/predict", data={"text": "Rob at the beach"},
                       files=[("image", ("x.jpg", _jpeg(), "image/jpeg"))], headers={"origin": BASE})
    assert same.status_code == 200 and engine.batcher.batches == before + 1


def test_a_cross_site_fetch_is_refused(client, tweet):
    for site in ("cross-site", "same-site"):
        for path in ("/api/browse", f"/api/image/{tweet['id']}", "/openapi.json"):
            answer = client.get(path, headers={"sec-fetch-site": site})
            assert answer.status_code == 403, (site, path)
            assert answer.json()["detail"] == f"Sec-Fetch-Site {site!r}: only this server's own page may call it"
        assert client.post("/api/predict", json={"items": [{"text": "Rob"}]},
                           headers={"sec-fetch-site": site}).status_code == 403
    for site in ("same-origin", "none"):
        assert client.get(f"/api/image/{tweet['id']}", headers={"sec-fetch-site": site}).status_code == 200


def test_no_get_runs_the_model(app, client):
    answer = client.get("/api/attention/0")
    assert answer.status_code == 405 and answer.json()["detail"] == "Method Not Allowed"
    schema = client.get("/openapi.json").json()
    assert set(schema["paths"]["/api/attention/{n}"]) == {"post"} and set(schema["paths"]["/api/predict"]) == {"post"}


def test_every_answer_carries_the_security_headers(client, tweet):
    answers = {
        "page": client.get("/"),
        "script": client.get("/static/app.js"),
        "docs": client.get("/docs"),
        "docs files": client.get("/static-offline-docs/swagger-ui.css"),
        "schema": client.get("/openapi.json"),
        "browse": client.get("/api/browse"),
        "image": client.get(f"/api/image/{tweet['id']}"),
        "health": client.get("/api/health"),
        "404": client.get("/no/such/page"),
        "405": client.get("/api/predict"),
        "422": client.post("/api/predict", json={"items": []}),
        "413": client.post("/api/predict", content=b"x" * (11 * 2**20), headers={"content-type": "application/json"}),
        "bad host": client.get("/", headers={"host": "evil.example"}),
        "foreign origin": client.get("/api/browse", headers={"origin": "http://evil.example"}),
    }
    for name, answer in answers.items():
        headers = answer.headers
        assert "frame-ancestors 'none'" in headers.get("content-security-policy", ""), name
        assert headers.get("x-content-type-options") == "nosniff", name
        assert headers.get("referrer-policy") == "no-referrer", name
    assert "default-src 'none'" in answers["page"].headers["content-security-policy"]
    assert "'sha256-" in answers["docs"].headers["content-security-policy"]
    assert "'unsafe-inline'" not in answers["docs"].headers["content-security-policy"].split("style-src")[0]


def test_off_loopback_every_api_call_needs_the_token(app, client, tweet):
    access = app.state.access
    try:
        access.bind("0.0.0.0", 7860)
        token = access.token
        assert token and len(token) >= 32
        for path in ("/api/browse", f"/api/image/{tweet['id']}", "/api/health", "/docs", "/openapi.json"):
            answer = client.get(path)
            assert answer.status_code == 401 and "needs its token" in answer.json()["detail"], path
            assert client.get(path, params={"token": "wrong"}).status_code == 401, path
            assert client.get(path, headers={"authorization": f"token {token}"}).status_code == 200, path
        assert client.post("/api/predict", json={"items": [{"text": "Rob"}]}).status_code == 401
        assert client.post("/api/attention/0").status_code == 401
        with TestClient(app, base_url=BASE) as browser:  # the printed address: the page, then its calls by cookie
            page = browser.get(f"/?token={token}")
            assert page.status_code == 200
            cookie = page.headers["set-cookie"]
            assert cookie.startswith(f"maf-serve-token-7860={token}") and "HttpOnly" in cookie and \
                   "SameSite=Strict" in cookie
            assert browser.get(f"/api/image/{tweet['id']}").status_code == 200
            assert browser.post("/api/predict", json={"items": [{"text": "Rob"}]}).status_code == 200
    finally:
        access.bind("127.0.0.1", 7860)
    assert access.token is None and client.get("/api/health").status_code == 200


def test_an_unforeseen_error_is_json_and_one_log_line(app, client, monkeypatch, caplog):
    def broken(*args):
        raise RuntimeError("disk on fire\nsecond line")

    monkeypatch.setattr(app.state.browse, "image", broken)
    with caplog.at_level(logging.ERROR, logger="maf_core.serve.security"):
        answer = client.get("/api/image/x")
    assert answer.status_code == 500 and answer.json() == {"detail": "internal error: RuntimeError"}
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert [r.getMessage() for r in caplog.records] == ["GET /api/image/x: RuntimeError: disk on fire second line"]
