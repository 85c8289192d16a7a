"""A counting reverse proxy in front of the Prefect server, one listening port per worker.

    proxy.py --upstream http://127.0.0.1:4200 --listen ours=0 --listen theirs=0

Prints one line of JSON with the chosen ports ({"ours": 40001, "theirs": 40002}) once it
listens, then forwards every request to the upstream unchanged (HTTP/1.1 keep-alive, WebSocket
upgrades tunnelled). Each port counts what passes through it; `GET /_proxy/stats` on that port
answers {"requests", "websockets", "websocket_messages", "log_entries", "log_levels",
"first_request_at", "last_request_at", "endpoints", "endpoint_seconds", "statuses"}:
- times are Unix seconds;
- statuses counts the upstream's answers by HTTP status, e.g. the 503s of a busy SQLite-backed
  server;
- websocket_messages counts the data messages clients send, e.g. Prefect events over /events/in;
- log_entries counts the entries of every `POST /api/logs/` body (a JSON array: Prefect Cloud
  bills each entry as one log message), log_levels the same by Python logging level;
- endpoints counts "METHOD /path" with ids folded to {id}, endpoint_seconds sums the time each
  took upstream (the server's answer, not the client's side).
`POST /_proxy/reset` starts that port's counts afresh (so a restarted worker's first request
can be timed). The /_proxy/ routes are neither forwarded nor counted. Standard library only;
used by the bench driver (bench/servers.py), one proxy per Prefect server.
"""

import argparse
import http.client
import json
import re
import select
import socket
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "trailers", "transfer-encoding", "upgrade", "content-length", "host",
}
LOGS_PATH = re.compile(r"^/api/logs/?(\?|$)")
ID = re.compile(r"/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)


def endpoint(method, path):
    return f"{method} {ID.sub('/{id}', urllib.parse.urlsplit(path).path)}"


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.reset()

    def count(self, method, path, websocket=False):
        now = time.time()
        key = endpoint(method, path)
        with self.lock:
            if websocket:
                self.websockets += 1
            else:
                self.requests += 1
            self.first = self.first or now
            self.last = now
            self.endpoints[key] = self.endpoints.get(key, 0) + 1

    def answered(self, method, path, status, seconds):
        key = endpoint(method, path)
        with self.lock:
            self.statuses[str(status)] = self.statuses.get(str(status), 0) + 1
            self.endpoint_seconds[key] = self.endpoint_seconds.get(key, 0.0) + seconds

    def logs(self, levels):
        """One accepted `POST /api/logs/`: the levels of its entries."""
        with self.lock:
            self.log_entries += len(levels)
            for level in levels:
                self.log_levels[level] = self.log_levels.get(level, 0) + 1

    def reset(self):
        with self.lock:
            self.requests = self.websockets = self.websocket_messages = self.log_entries = 0
            self.first = self.last = None
            self.endpoints = {}
            self.endpoint_seconds = {}
            self.statuses = {}
            self.log_levels = {}

    def message(self):
        with self.lock:
            self.websocket_messages += 1
            self.last = time.time()

    def snapshot(self):
        with self.lock:
            return {
                "requests": self.requests,
                "websockets": self.websockets,
                "websocket_messages": self.websocket_messages,
                "log_entries": self.log_entries,
                "log_levels": dict(self.log_levels),
                "first_request_at": self.first,
                "last_request_at": self.last,
                "endpoints": dict(self.endpoints),
                "endpoint_seconds": {k: round(v, 3) for k, v in self.endpoint_seconds.items()},
                "statuses": dict(self.statuses),
            }


LEVELS = {10: "DEBUG", 20: "INFO", 30: "WARNING", 40: "ERROR", 50: "CRITICAL"}


def log_levels(body):
    """The levels of the entries of a `POST /api/logs/` body (a JSON array of log entries, each
    with a numeric `level`); a body that is not such an array counts as one entry of level "?",
    so nothing the server might store goes uncounted."""
    try:
        entries = json.loads(body or b"")
    except ValueError:
        return ["?"]
    if not isinstance(entries, list):
        return ["?"]
    return [LEVELS.get(e.get("level"), str(e.get("level"))) if isinstance(e, dict) else "?"
            for e in entries]


class FrameCounter:
    """Counts the data messages in the client → server direction of a WebSocket (RFC 6455
    framing: text or binary opcodes start a message; continuation and control frames do not)."""

    def __init__(self, on_message):
        self.on_message = on_message
        self.buf = b""
        self.skip = 0

    def feed(self, data):
        if self.skip >= len(data):
            self.skip -= len(data)
            return
        self.buf += data[self.skip:]
        self.skip = 0
        while len(self.buf) >= 2:
            b0, b1 = self.buf[0], self.buf[1]
            length, head = b1 & 0x7F, 2
            if length == 126:
                if len(self.buf) < 4:
                    return
                length, head = int.from_bytes(self.buf[2:4], "big"), 4
            elif length == 127:
                if len(self.buf) < 10:
                    return
                length, head = int.from_bytes(self.buf[2:10], "big"), 10
            if b1 & 0x80:
                head += 4  # the client's masking key
            if b0 & 0x0F in (1, 2):
                self.on_message()
            total = head + length
            if len(self.buf) >= total:
                self.buf = self.buf[total:]
            else:
                self.skip, self.buf = total - len(self.buf), b""
                return


def make_handler(upstream, stats):
    host, port = upstream.hostname, upstream.port or 80
    local = threading.local()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def _body(self):
            if self.headers.get("transfer-encoding", "").lower() == "chunked":
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0], 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
            length = int(self.headers.get("content-length") or 0)
            return self.rfile.read(length) if length else None

        def _reply(self, status, body, headers=()):
            self.send_response(status)
            for k, v in headers:
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _control(self):
            self._body()
            if self.path.startswith("/_proxy/reset"):
                stats.reset()
                self._reply(200, b"{}", [("Content-Type", "application/json")])
            elif self.path.startswith("/_proxy/stats"):
                self._reply(200, json.dumps(stats.snapshot()).encode(),
                            [("Content-Type", "application/json")])
            else:
                self._reply(404, b"{}", [("Content-Type", "application/json")])

        def _websocket(self):
            stats.count(self.command, self.path, websocket=True)
            up = socket.create_connection((host, port), timeout=30)
            head = [f"{self.command} {self.path} HTTP/1.1\r\n"]
            for k, v in self.headers.items():
                head.append(f"{k}: {v}\r\n")
            up.sendall(("".join(head) + "\r\n").encode("latin-1"))
            up.settimeout(None)
            down = self.connection
            down.settimeout(None)
            socks = [up, down]
            frames = FrameCounter(stats.message)
            try:
                while True:
                    ready, _, _ = select.select(socks, [], [], 3600)
                    if not ready:
                        break
                    for s in ready:
                        data = s.recv(65536)
                        if not data:
                            return
                        if s is down:
                            frames.feed(data)
                        (down if s is up else up).sendall(data)
            except OSError:
                pass
            finally:
                up.close()
                self.close_connection = True

        def _forward(self):
            if self.path.startswith("/_proxy/"):
                return self._control()
            if self.headers.get("upgrade", "").lower() == "websocket":
                return self._websocket()
            stats.count(self.command, self.path)
            body = self._body()
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            headers["Host"] = f"{host}:{port}"
            if body is not None:
                headers["Content-Length"] = str(len(body))
            started = time.monotonic()
            for attempt in range(2):
                conn = getattr(local, "conn", None)
                if conn is None:
                    conn = local.conn = http.client.HTTPConnection(host, port, timeout=120)
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    break
                except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError,
                        http.client.CannotSendRequest):
                    # The upstream closed an idle keep-alive connection: try once on a new one,
                    # as HTTP clients do.
                    conn.close()
                    local.conn = None
                    if attempt == 1:
                        return self._reply(502, b'{"detail":"proxy: upstream unreachable"}',
                                           [("Content-Type", "application/json")])
            if resp.getheader("connection", "").lower() == "close":
                conn.close()
                local.conn = None
            out = [(k, v) for k, v in resp.getheaders() if k.lower() not in HOP_BY_HOP]
            stats.answered(self.command, self.path, resp.status, time.monotonic() - started)
            # Only entries the server took count as messages (a 503 batch is sent again).
            if self.command == "POST" and LOGS_PATH.match(self.path) and resp.status < 300:
                stats.logs(log_levels(body))
            self._reply(resp.status, data, out)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _forward

    return Handler


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--upstream", required=True, help="e.g. http://127.0.0.1:4200")
    parser.add_argument("--listen", action="append", required=True, help="NAME=PORT (0: any free port)")
    args = parser.parse_args()
    upstream = urllib.parse.urlsplit(args.upstream)
    ports = {}
    for spec in args.listen:
        name, port = spec.split("=", 1)
        server = Server(("127.0.0.1", int(port)), make_handler(upstream, Stats()))
        ports[name] = server.server_address[1]
        threading.Thread(target=server.serve_forever, daemon=True).start()
    print(json.dumps(ports), flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
