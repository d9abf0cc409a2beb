"""A stand-in for a remote HTTP API on a real localhost socket (a thread serving one function)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

Answer = Callable[[str, dict[str, list[str]], dict[str, str]], tuple[int, object]]
"""(path, query, lower-cased headers) -> (status, body); a str body is sent as text, else JSON."""


@contextmanager
def serve(answer: Answer) -> Iterator[str]:
    """Serve ``answer`` for GET requests; yields the base URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parts = urlparse(self.path)
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, body = answer(parts.path, parse_qs(parts.query), headers)
            text = body if isinstance(body, str) else json.dumps(body)
            raw = text.encode()
            self.send_response(status)
            kind = "text/plain; version=0.0.4" if isinstance(body, str) else "application/json"
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
