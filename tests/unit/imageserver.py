"""A real HTTP server on 127.0.0.1 for download tests: Range, Last-Modified, HEAD,
404 for unknown paths, and a switch that cuts a response off mid-body."""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LAST_MODIFIED = "Wed, 21 Oct 2026 07:28:00 GMT"


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class ImageServer:
    files: dict[str, bytes] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    # path -> byte count after which the next GET of that path is cut off (once)
    cut_after: dict[str, int] = field(default_factory=dict)
    # path -> (byte count, seconds): the next GET pauses there that long (once)
    stall_after: dict[str, tuple[int, float]] = field(default_factory=dict)
    support_range: bool = True
    last_modified: str = LAST_MODIFIED
    port: int = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def gets(self, path: str | None = None) -> list[Request]:
        return [r for r in self.requests
                if r.method == "GET" and (path is None or r.path == path)]


def make_handler(state: ImageServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # quiet tests
            pass

        def _serve(self, body_wanted: bool) -> None:
            state.requests.append(Request(self.command, self.path, dict(self.headers)))
            data = state.files.get(self.path)
            if data is None:
                self.send_response(404)
                self.send_header("Content-Length", "9")
                self.end_headers()
                if body_wanted:
                    self.wfile.write(b"not found")
                return
            start = 0
            rng = self.headers.get("Range")
            if_range = self.headers.get("If-Range")
            if (rng and state.support_range
                    and (if_range is None or if_range == state.last_modified)):
                m = re.fullmatch(r"bytes=(\d+)-", rng)
                assert m, rng
                start = int(m.group(1))
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range",
                                 f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            body = data[start:]
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Last-Modified", state.last_modified)
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            if not body_wanted:
                return
            stall = state.stall_after.pop(self.path, None)
            if stall is not None:
                self.wfile.write(body[:stall[0]])
                self.wfile.flush()
                time.sleep(stall[1])
                self.close_connection = True
                return
            cut = state.cut_after.pop(self.path, None)
            if cut is not None:
                self.wfile.write(body[:cut])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            self._serve(True)

        def do_HEAD(self) -> None:  # noqa: N802
            self._serve(False)

    return Handler


class RunningServer:
    def __init__(self) -> None:
        self.state = ImageServer()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(self.state))
        self.state.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return self.state.url(path)

    def gets(self, path: str | None = None) -> list[Request]:
        return self.state.gets(path)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
