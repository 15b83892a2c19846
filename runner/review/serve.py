"""``runner review serve``: the review site rendered from the run store on every request.

Nothing is built ahead: a new run shows on the next page load. The server binds to
127.0.0.1 unless told otherwise, has no authentication, and answers only GET/HEAD for the site's
own URLs (names are checked against a strict pattern before the run store is touched). Every
response carries a Content-Security-Policy: the site's pages run only the site's ``review.js``
and cannot be framed; an executed notebook's page is ``sandbox``ed (an origin of its own, no
script at all) and may be framed only by the site's run pages.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from runner.errors import RunnerError
from runner.review.site import DATA, NOTEBOOK_CSP, SCRIPT, SITE_CSP, Site

NAME = r"[A-Za-z0-9_][A-Za-z0-9_.-]*"
ROUTES = (
    (re.compile(r"^/(?:index\.html)?$"), "index"),
    (re.compile(r"^/index-([2-9]|[1-9][0-9]{1,5})\.html$"), "index"),
    (re.compile(rf"^/{re.escape(DATA)}$"), "data"),
    (re.compile(rf"^/pipelines/({NAME})\.html$"), "pipeline"),
    (re.compile(rf"^/runs/({NAME})\.html$"), "run"),
    (re.compile(rf"^/runs/({NAME})/({NAME})\.html$"), "notebook"),
    (re.compile(rf"^/diffs/({NAME})__({NAME})\.html$"), "diff"),
    (re.compile(rf"^/{re.escape(SCRIPT)}$"), "script"),
)
DIFF_CACHE = 64
PAGE_POLICY = f"{SITE_CSP}; frame-ancestors 'none'"
NOTEBOOK_POLICY = f"sandbox; {NOTEBOOK_CSP}; frame-ancestors 'self'"


class ReviewServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, site: Site, host: str, port: int):
        self.site = site
        self.diffs: OrderedDict[tuple[str, str], str] = OrderedDict()
        self.lock = threading.Lock()
        super().__init__((host, port), _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"

    def page(self, kind: str, args: tuple[str, ...]) -> tuple[bytes, str]:
        site = self.site
        if kind == "index":
            return site.render_index(page=int(args[0]) if args else 1).encode(), "text/html"
        if kind == "data":
            return site.render_data().encode(), "text/javascript"
        if kind == "pipeline":
            return site.render_pipeline(args[0]).encode(), "text/html"
        if kind == "run":
            return site.render_run(site.view(args[0])).encode(), "text/html"
        if kind == "script":
            return site.script(), "text/javascript"
        return self.diff(*args).encode(), "text/html"

    def diff(self, run_a: str, run_b: str) -> str:
        with self.lock:
            if (run_a, run_b) in self.diffs:
                self.diffs.move_to_end((run_a, run_b))
                return self.diffs[(run_a, run_b)]
        page = self.site.render_diff(run_a, run_b)
        final = all(self.site.store.read(r).status != "running" for r in (run_a, run_b))
        if final:  # finished runs are never rewritten
            with self.lock:
                self.diffs[(run_a, run_b)] = page
                while len(self.diffs) > DIFF_CACHE:
                    self.diffs.popitem(last=False)
        return page


class _Handler(BaseHTTPRequestHandler):
    server: ReviewServer
    server_version = "runner-review"
    sys_version = ""

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._answer(send_body=True)

    def do_HEAD(self) -> None:  # noqa: N802
        self._answer(send_body=False)

    def _answer(self, send_body: bool) -> None:
        path = urlsplit(self.path).path
        for pattern, kind in ROUTES:
            match = pattern.match(path)
            if match:
                try:
                    body, content_type = self._page(kind, match.groups())
                except RunnerError as error:
                    return self._send(HTTPStatus.NOT_FOUND, _message(str(error)), "text/plain", send_body)
                except Exception as error:  # a broken record must not take the server down
                    self.log_error("rendering %s failed: %r", path, error)
                    return self._send(HTTPStatus.INTERNAL_SERVER_ERROR, _message(f"rendering failed: {error}"),
                                      "text/plain", send_body)
                return self._send(HTTPStatus.OK, body, content_type, send_body, notebook=kind == "notebook")
        self._send(HTTPStatus.NOT_FOUND, _message(f"no page at {path}"), "text/plain", send_body)

    def _page(self, kind: str, args: tuple[str, ...]) -> tuple[bytes, str]:
        if kind == "notebook":
            run_id, step_file = args
            return self.server.site.notebook_html(run_id, f"{step_file}.html"), "text/html"
        return self.server.page(kind, args)

    def _send(self, status: HTTPStatus, body: bytes, content_type: str, send_body: bool, notebook: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", f"{content_type}; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Content-Security-Policy", NOTEBOOK_POLICY if notebook else PAGE_POLICY)
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:  # quiet: the CLI says where it serves
        pass


def _message(text: str) -> bytes:
    return (text + "\n").encode()


def make_server(site: Site, host: str = "127.0.0.1", port: int = 8765) -> ReviewServer:
    try:
        return ReviewServer(site, host, port)
    except OSError as exc:
        raise RunnerError(f"cannot listen on {host}:{port} ({exc.strerror}); pick another --port") from None
