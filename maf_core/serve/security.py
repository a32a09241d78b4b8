"""Who may reach `maf serve`, and what every answer tells the browser.

- `Access`: the names this server answers to (loopback names with the bound port, the names
  given with --allow-host), and its token, generated when it listens on anything but
  loopback (printed in the address, as Jupyter does).
- `Guard` (ASGI middleware) refuses, before any route runs: a Host that is not one of those
  names (a page that rebinds its DNS name to 127.0.0.1 gets nothing); on every route that
  reads run data or runs the model (/api/*, /docs, /openapi.json), a foreign Origin or a
  Sec-Fetch-Site other than same-origin or none (another site's form, fetch or <img>); and,
  with a token, a request that does not carry it (header, ?token= or the cookie that the
  page's address sets).
- `Headers` (ASGI middleware, the outermost) gives every answer, errors included, a
  Content-Security-Policy with frame-ancestors 'none', X-Content-Type-Options: nosniff and
  Referrer-Policy: no-referrer; and answers an exception that no route handled as JSON, logged
  in one line.
"""
from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import secrets
import socket
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from urllib.parse import parse_qs

from starlette.requests import ClientDisconnect

from maf_core.serve.limits import HOST, PORT

logger = logging.getLogger(__name__)

LOOPBACK = ("127.0.0.1", "localhost", "::1")
WILDCARD = ("0.0.0.0", "::", "")
# an answer that is not the page or the docs: nothing to load, nothing to frame
PLAIN_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
# Swagger UI: its files from this server, one inline script (allowed by its hash), inline styles
DOCS_CSP = ("default-src 'none'; script-src 'self' {hashes}; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
            "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
GUARDED = ("/api/", "/docs", "/openapi.json")
SAME = ("same-origin", "none")  # Sec-Fetch-Site values of the page itself, and of an address typed in


@dataclass
class Access:
    """The address the server listens on, the Host names it answers to, and its token (None on
    loopback). `bind` sets them once the socket is bound (the port may have been 0)."""

    host: str = HOST
    port: int = PORT
    allow_hosts: tuple[str, ...] = ()
    token: str | None = None
    names: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.bind(self.host, self.port, self.allow_hosts, self.token)

    def bind(self, host: str, port: int, allow_hosts: tuple[str, ...] = (), token: str | None = None) -> None:
        self.host, self.port, self.allow_hosts = host, port, tuple(allow_hosts)
        names = {*LOOPBACK, *(h.lower().strip("[]") for h in allow_hosts)}
        if not self.loopback:
            if host not in WILDCARD:
                names.add(host)
            names |= {socket.gethostname().lower(), socket.getfqdn().lower()}
            token = token or secrets.token_urlsafe(24)
        self.names, self.token = names, token

    @property
    def loopback(self) -> bool:
        return self.host in LOOPBACK

    def cookie(self) -> str:
        return f"maf-serve-token-{self.port}"

    def url(self) -> str:
        """The address to open: loopback or the host's name, with the token when there is one."""
        name = self.host if self.host not in WILDCARD else socket.gethostname()
        shown = f"[{name}]" if ":" in name else name
        return f"http://{shown}:{self.port}/" + (f"?token={self.token}" if self.token else "")

    def host_allowed(self, header: str) -> bool:
        match = re.fullmatch(r"\[([0-9a-fA-F:.]+)\](?::(\d+))?|([^:\[\]]+)(?::(\d+))?", header)
        if not match:
            return False
        name = (match.group(1) or match.group(3)).lower()
        port = int(match.group(2) or match.group(4) or 80)
        return name in self.names and port == self.port

    def token_given(self, headers: dict[str, str], query: str) -> bool:
        given = []
        kind, _, value = headers.get("authorization", "").partition(" ")
        if kind.lower() in ("token", "bearer"):
            given.append(value.strip())
        given += parse_qs(query).get("token", [])
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", ""))
        except Exception:  # noqa: BLE001 - a malformed cookie header carries no token
            pass
        if self.cookie() in cookie:
            given.append(cookie[self.cookie()].value)
        return any(secrets.compare_digest(g.encode(), self.token.encode()) for g in given)


def _headers(scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


async def send_json(send, status: int, detail: str, headers: list[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})


class Guard:
    """ASGI middleware: the Host, Origin, Sec-Fetch-Site and token rules of the module's docstring."""

    def __init__(self, app, access: Access) -> None:
        self.app, self.access = app, access

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers, access = _headers(scope), self.access
        host = headers.get("host", "")
        if not access.host_allowed(host):
            return await send_json(send, 400, f"Host {host!r} is not this server's name (maf serve --allow-host "
                                              "NAME accepts another)")
        path = scope["path"]
        if path.startswith(GUARDED):
            origin, site = headers.get("origin"), headers.get("sec-fetch-site")
            if origin is not None and origin != f"{scope.get('scheme', 'http')}://{host}":
                return await send_json(send, 403, f"Origin {origin!r}: only this server's own page may call it")
            if site is not None and site not in SAME:
                return await send_json(send, 403, f"Sec-Fetch-Site {site!r}: only this server's own page may "
                                                  "call it")
        if access.token is None:
            return await self.app(scope, receive, send)
        query = scope.get("query_string", b"").decode("latin-1")
        given = access.token_given(headers, query)
        if path.startswith(GUARDED) and not given:
            return await send_json(send, 401, "this server needs its token: open the address it printed "
                                              "(with ?token=), or send the header 'Authorization: token TOKEN'")
        if path == "/" and given and "token=" in query:  # the printed address: the page's calls carry the cookie
            cookie = (f"{access.cookie()}={access.token}; Path=/; HttpOnly; SameSite=Strict").encode()

            async def with_cookie(message):
                if message["type"] == "http.response.start":
                    message = {**message, "headers": [*message.get("headers", []), (b"set-cookie", cookie)]}
                await send(message)
            return await self.app(scope, receive, with_cookie)
        return await self.app(scope, receive, send)


def _script_hashes(html: bytes) -> str:
    scripts = re.findall(rb"<script>(.*?)</script>", html, flags=re.S)
    return " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(s).digest()).decode()}'" for s in scripts)


class Headers:
    """ASGI middleware, the outermost: the security headers on every answer, and an exception
    that nothing else answered as a JSON 500, logged in one line."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        docs = scope["path"] == "/docs"
        started, held = False, None

        async def secured(message):
            nonlocal started, held
            if message["type"] == "http.response.start":
                started = True
                if docs:  # the CSP names the page's inline script by its hash: wait for the body
                    held = message
                    return
                message = {**message, "headers": _secure(message.get("headers", []))}
            elif docs and held is not None:
                csp = DOCS_CSP.format(hashes=_script_hashes(message.get("body", b"")))
                await send({**held, "headers": _secure(held.get("headers", []), csp)})
                held = None
            await send(message)

        try:
            await self.app(scope, receive, secured)
        except ClientDisconnect:
            logger.warning("%s %s: the client went away before its request was read", scope["method"],
                           scope["path"])
        except Exception as err:  # noqa: BLE001 - the one place where an unforeseen error becomes an answer
            said = " ".join(str(err).split())
            logger.error("%s %s: %s: %s", scope["method"], scope["path"], type(err).__name__, said)
            if not started:
                await send_json(secured, 500, f"internal error: {type(err).__name__}")


def _secure(headers: list, csp: str = PLAIN_CSP) -> list:
    names = {k.lower() for k, _ in headers}
    extra = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer")]
    if b"content-security-policy" not in names:
        extra.append((b"content-security-policy", csp.encode()))
    return [*headers, *[(k, v) for k, v in extra if k not in names]]
