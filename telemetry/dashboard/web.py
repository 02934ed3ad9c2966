"""The dashboard's web server: the standard library's ``ThreadingHTTPServer``, read-only.

``DashboardApp`` maps a GET path and its query to a response without any socket (tests call it
directly); ``DashboardServer`` serves it.  Only GET and HEAD are answered (other methods get 405).  While
bound to loopback, requests naming another host are refused (421), so a web page cannot read the
dashboard through DNS rebinding.  Every store is opened read-only through ``opportune.telemetry.store``; rendered
pages are cached until a store file changes.

Routes: ``/`` the dashboard (query parameters ``from``, ``to``, ``language``, ``model``,
``experiment``, ``budget``), ``/report.html`` the same page without the form as a download,
``/healthz``.  A missing, corrupt or empty store, or a refused parameter, is a page that says so.
"""

from __future__ import annotations

import logging
import socket
import sys
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from opportune.telemetry.dashboard.data import (
    Choices,
    Query,
    QueryError,
    StoreLoader,
    build_view,
    parse_query,
)
from opportune.telemetry.dashboard.page import CSP, render_page, render_problem
from opportune.telemetry.metrics import host_header_is_loopback, is_loopback
from opportune.telemetry.store import StoreError

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
_RENDER_CACHE = 32  # pages kept per store state: reloading a view costs nothing
ALLOWED_METHODS = "GET, HEAD"


# --- the application (no sockets: tests call it directly) ----------------------------------------------


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str = "text/html; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)


class DashboardApp:
    """Maps a GET path with its query to a response; caches rendered pages per store state."""

    def __init__(self, paths: Sequence[Path], base: Query | None = None) -> None:
        self.paths = list(paths)
        self.base = base or Query()
        self.loader = StoreLoader(self.paths)
        self._cache: OrderedDict[tuple[object, ...], bytes] = OrderedDict()
        self._lock = threading.Lock()

    def handle(self, target: str) -> Response:
        """The response to ``GET target`` (a path with an optional query string)."""
        url = urlsplit(target)
        path = url.path
        if path == "/healthz":
            return Response(200, b"ok\n", "text/plain; charset=utf-8")
        if path == "/favicon.ico":
            return Response(204, b"")
        if path not in ("/", "/index.html", "/report.html"):
            return self._problem(404, f"No page at {path[:80]}: the dashboard is at /.", level="warning")
        download = path == "/report.html"
        try:
            # keep_blank_values: "language=" means "all languages", not "parameter absent".
            params = parse_qs(url.query, keep_blank_values=True, strict_parsing=False, max_num_fields=20)
        except ValueError:
            return self._problem(400, "Too many query parameters.")
        try:
            frames, signature = self.loader.load()
        except StoreError as exc:
            return self._problem(
                503,
                f"Cannot read the telemetry: {exc}.",
                hint="Check the --db path (the extension passes opportune.telemetry.db). A store is created by "
                "`opportune serve` on its first event. Reload this page once it is fixed.",
            )
        choices = Choices.of(frames)
        try:
            query = parse_query(params, choices, self.base)
        except QueryError as exc:
            return self._problem(400, f"Filter refused: {exc}.")
        key = (signature, query, download)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
        if cached is None:
            view = build_view(frames, query, stores=self.paths, choices=choices)
            cached = render_page(view, interactive=not download).encode("utf-8")
            with self._lock:
                if self._cache and next(iter(self._cache))[0] != signature:
                    self._cache.clear()  # the stores changed: older pages are stale
                self._cache[key] = cached
                while len(self._cache) > _RENDER_CACHE:
                    self._cache.popitem(last=False)
        headers = {"Content-Disposition": 'attachment; filename="opportune-report.html"'} if download else {}
        return Response(200, cached, headers=headers)

    def warm(self) -> None:
        """Load the stores and render the default page once, so that the first visit does not wait for
        pandas and scipy to load; say on stderr if a store cannot be read."""
        try:
            self.loader.load()
        except StoreError as exc:
            print(
                f"opportune dashboard: warning: {exc} (the page says so until it is fixed)", file=sys.stderr
            )
            return
        try:
            self.handle("/")
        except Exception:
            logger.debug("dashboard: warming up failed", exc_info=True)

    def _problem(
        self, status: int, message: str, *, hint: str | None = None, level: str = "error"
    ) -> Response:
        body = render_problem(message, stores=[str(p) for p in self.paths], hint=hint, level=level)
        return Response(status, body.encode("utf-8"))


# --- HTTP ----------------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "OpportuneDashboard"
    sys_version = ""  # do not advertise the Python version

    def do_GET(self) -> None:
        self._answer(head=False)

    def do_HEAD(self) -> None:
        self._answer(head=True)

    def _refuse_method(self) -> None:
        self._send(
            Response(
                405,
                b"Method not allowed: this dashboard only reads.\n",
                "text/plain; charset=utf-8",
                {"Allow": ALLOWED_METHODS},
            ),
            head=False,
        )

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = do_CONNECT = _refuse_method

    def _answer(self, *, head: bool) -> None:
        if not self._host_allowed():
            self._send(
                Response(
                    421,
                    b"Misdirected request: use http://127.0.0.1 to reach the dashboard.\n",
                    "text/plain; charset=utf-8",
                ),
                head=head,
            )
            return
        try:
            response = self.server.app.handle(self.path)
        # A bug in a chart must not leave the browser waiting or show a traceback: log it, answer 500.
        except Exception as exc:
            logger.exception("dashboard: error while rendering %s", self.path)
            body = render_problem(
                f"The dashboard failed to render this page ({type(exc).__name__}: {exc}). "
                "The details are in the terminal that runs `opportune dashboard`."
            )
            response = Response(500, body.encode("utf-8"))
        self._send(response, head=head)

    def _host_allowed(self) -> bool:
        """On loopback, only requests addressed to loopback: refuses DNS-rebinding attacks from web pages."""
        if not self.server.loopback_only:
            return True
        return host_header_is_loopback(self.headers.get("Host") or "")

    def _send(self, response: Response, *, head: bool) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Referrer-Policy", "no-referrer")
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        if not head:
            self.wfile.write(response.body)

    def log_message(self, format: str, *args: object) -> None:
        logger.info("%s %s", self.address_string(), format % args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a slow client must not keep the process alive at Ctrl-C

    def __init__(self, address: tuple[str, int], app: DashboardApp) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.app = app
        self.loopback_only = is_loopback(address[0])
        super().__init__(address, _Handler)


class DashboardServer:
    """The dashboard on host:port (port 0: a free one) in this process; ``close()`` frees the port."""

    def __init__(
        self,
        paths: Sequence[Path],
        *,
        base: Query | None = None,
        host: str = LOOPBACK,
        port: int = 0,
    ) -> None:
        self.app = DashboardApp(paths, base)
        self._server = _Server((host, port), self.app)
        self.host = host
        self.port = int(self._server.server_address[1])
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def serve_forever(self) -> None:
        self._server.serve_forever(poll_interval=0.25)

    def start(self) -> DashboardServer:
        """Serve in a daemon thread (tests, embedding)."""
        self._thread = threading.Thread(target=self.serve_forever, name="opportune-dashboard", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()

    def __enter__(self) -> DashboardServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
