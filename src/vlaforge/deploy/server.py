"""Serve a policy's actions over HTTP on the local network, with a client and a load test.

    POST /act    {"image": base64 of the raw uint8 (V, H, W, 3) bytes, "image_shape": [V, H, W, 3],
                  "state": [floats], "instruction": "...", "reset": false, "seed": 0}
                 -> {"actions": [[...], ...], "inference_ms": ...}
    GET  /info   the policy's input shapes, chunk size, suite, env settings and tasks
    GET  /health "ok" (no token needed)
    GET  /metrics  Prometheus series, when served with a monitor (vlaforge.deploy.monitor)
    GET  /dashboard  live plots of those series (no token: the page asks for /dashboard#token=TOKEN)
    POST /outcome  {"seed": the episode's reset seed, "success": bool}, and GET /ab: when the
                 policy is an A/B test (vlaforge.deploy.ab)

Every request but /health and /dashboard must carry ``Authorization: Bearer <token>`` (compared in constant
time; a token under ``MIN_TOKEN`` characters, or with few distinct ones, is refused). The server
binds 127.0.0.1 unless told otherwise and treats every client as hostile:

- the body limit is enforced on the declared length before a byte of the body is read (a
  missing, negative or chunked length is refused), and a reply sent before the body was read is
  followed by a bounded drain of what the client still sends, so the kernel does not answer the
  unread bytes with a reset that destroys the reply;
- every socket read and write times out, and a watchdog closes a connection whose request
  (headers and body) has not fully arrived within ``timeout_s`` of its start, so neither an idle
  keep-alive connection nor a client that trickles bytes holds a thread for long;
- one address may hold at most ``max_per_client`` connections (429 beyond), and the listen
  backlog is deep enough for a burst of clients connecting at once;
- every malformed request is answered with a 4xx naming the field, including what the HTTP
  layer itself rejects (an unknown method gets 405, not 501).

A well-formed observation the policy refuses (a state far outside its training data) gets 422; a
non-finite action is never sent (500 instead), and replies are strict JSON. One policy, one
robot: requests reach the policy one at a time, on the process's policy thread (it keeps the
observation history; ``reset`` starts a new episode). Connections are kept alive (HTTP/1.1), so a
client pays for its TCP handshake once.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import http.client
import json
import secrets
import socket
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

from vlaforge.deploy.ab import ABTest
from vlaforge.deploy.dashboard import dashboard_html
from vlaforge.runtime.policy import on_policy_thread

MAX_BODY = 4 * 1024 * 1024
MAX_INSTRUCTION = 256
MAX_SEED = 2**63 - 1
MIN_TOKEN = 16
FIELDS = {"image", "image_shape", "state", "instruction", "reset", "seed"}
FLOAT32_MAX = float(np.finfo(np.float32).max)
LINGER_S = 2.0  # longest drain of an unread body after an early reply
LINGER_BYTES = 4 * MAX_BODY  # most bytes drained (discarded, never stored) after an early reply


class BadRequest(ValueError):
    """A request the server refuses, with the reason sent back to the client."""


def check_token(token: str) -> str:
    """The bearer token, or a one-line error if it is easy to guess."""
    if len(token) < MIN_TOKEN or len(set(token)) < 8:
        raise ValueError(f"token must have at least {MIN_TOKEN} characters, 8 of them distinct (make one with "
                         "`python -c 'import secrets; print(secrets.token_urlsafe(24))'`)")
    return token


def _finite_number(value: object) -> float:
    """A JSON number that fits float32; raises BadRequest("not a number" | "NaN or inf" |
    "a value beyond float32") for booleans, strings, NaN/inf and huge values."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadRequest("not a number")
    try:
        f = float(value)
    except OverflowError:  # an integer with hundreds of digits
        raise BadRequest("a value beyond float32") from None
    if not np.isfinite(f):
        raise BadRequest("NaN or inf")
    if abs(f) > FLOAT32_MAX:
        raise BadRequest("a value beyond float32")
    return f


def parse_request(body: bytes, image_shape: tuple[int, ...], state_dim: int) -> tuple[dict, bool, int]:
    """Validate an /act body -> (observation, reset, seed); raises BadRequest naming the problem."""
    try:
        req = json.loads(body)
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError, an integer over Python's digit limit
        raise BadRequest(f"body is not JSON: {e}") from None
    except RecursionError:
        raise BadRequest("body is not JSON: nested too deeply") from None
    if not isinstance(req, dict):
        raise BadRequest("body must be a JSON object")
    unknown = set(req) - FIELDS
    if unknown:
        raise BadRequest(f"unknown fields {sorted(unknown)}; allowed: {sorted(FIELDS)}")
    for key in ("image", "image_shape", "state", "instruction"):
        if key not in req:
            raise BadRequest(f"missing field {key!r}")
    shape = req["image_shape"]
    if not (isinstance(shape, list) and all(type(v) is int for v in shape) and shape == list(image_shape)):
        raise BadRequest(f"image_shape must be {list(image_shape)}, got {shape!r}"[:200])
    if not isinstance(req["image"], str):
        raise BadRequest("image must be a base64 string of raw uint8 bytes")
    try:
        raw = base64.b64decode(req["image"], validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("image is not valid base64") from None
    return observation_fields(req, raw, image_shape, state_dim)


def observation_fields(req: dict, image: bytes, image_shape: tuple[int, ...], state_dim: int) -> tuple[dict, bool, int]:
    """The checks both protocols share, on a decoded request whose image is ``image`` (raw bytes):
    -> (observation, reset, seed). ``state`` is a list of numbers, or (the streaming protocol)
    raw little-endian float32 bytes."""
    if len(image) != int(np.prod(image_shape)):
        raise BadRequest(f"image has {len(image)} bytes, expected {int(np.prod(image_shape))} for shape {list(image_shape)}")
    state = req["state"]
    if isinstance(state, bytes) and len(state) == 4 * state_dim:
        state = np.frombuffer(state, "<f4").tolist()
    if not (isinstance(state, list) and len(state) == state_dim):
        raise BadRequest(f"state must be a list of {state_dim} numbers")
    try:
        state = np.asarray([_finite_number(v) for v in state], np.float32)
    except BadRequest as e:
        raise BadRequest(f"state must be a list of {state_dim} numbers" if str(e) == "not a number" else
                         f"state contains {e}") from None
    text = req["instruction"]
    if not isinstance(text, str) or not text.strip() or len(text) > MAX_INSTRUCTION:
        raise BadRequest(f"instruction must be a non-empty string of at most {MAX_INSTRUCTION} characters")
    reset, seed = req.get("reset", False), req.get("seed", 0)
    if not isinstance(reset, bool):
        raise BadRequest("reset must be true or false")
    if not (type(seed) is int and 0 <= seed <= MAX_SEED):
        raise BadRequest(f"seed must be an integer in [0, {MAX_SEED}]")
    obs = {"image": np.frombuffer(image, np.uint8).reshape(image_shape).copy(), "state": state, "instruction": text}
    return obs, reset, seed


def _raw_reply(code: int, message: str) -> bytes:
    """A complete HTTP/1.1 JSON error reply that closes the connection (sent before any handler runs)."""
    body = json.dumps({"error": message}).encode()
    head = (f"HTTP/1.1 {code} {HTTPStatus(code).phrase}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    return head.encode() + body


class _Server(ThreadingHTTPServer):
    """Threads per connection, at most ``max_per_client`` from one address, and a watchdog that
    shuts down connections whose request has not arrived by its deadline."""

    daemon_threads = True
    request_queue_size = 256  # listen backlog: the default 5 resets connections under a burst of clients

    def __init__(self, address: tuple[str, int], handler: type, timeout_s: float, max_per_client: int) -> None:
        super().__init__(address, handler)
        self.timeout_s, self.max_per_client = timeout_s, max_per_client
        self.guard = threading.Lock()
        self.open: dict[str, int] = {}
        self.deadlines: dict[socket.socket, float] = {}
        self.stopped = threading.Event()
        threading.Thread(target=self._watchdog, daemon=True).start()

    def process_request(self, request: socket.socket, client_address: tuple) -> None:
        host = client_address[0]
        with self.guard:
            full = self.open.get(host, 0) >= self.max_per_client
            if not full:
                self.open[host] = self.open.get(host, 0) + 1
        if full:
            try:
                request.settimeout(1.0)
                request.sendall(_raw_reply(429, f"more than {self.max_per_client} connections from {host}"))
            except OSError:
                pass
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: socket.socket, client_address: tuple) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self.guard:
                self.open[client_address[0]] -= 1
                self.deadlines.pop(request, None)

    def handle_error(self, request: socket.socket, client_address: tuple) -> None:
        """A client that hangs up or is cut off by the watchdog is routine, not a traceback."""
        error = sys.exc_info()[1]
        if not isinstance(error, OSError):
            print(f"policy server: {type(error).__name__}: {error} (client {client_address[0]})", file=sys.stderr)

    def _watchdog(self) -> None:
        while not self.stopped.wait(0.1):
            now = time.monotonic()
            with self.guard:
                late = [s for s, t in self.deadlines.items() if t < now]
            for s in late:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def _reset_and_act(policy, obs: dict, reset: bool, seed: int) -> tuple[np.ndarray, float]:
    """One request's work on the policy thread, which also serialises the requests (the policy
    keeps one observation history) -> (actions, inference ms, queueing excluded)."""
    t = time.perf_counter()
    if reset:
        policy.reset(seed)
    actions = policy.act(obs)
    return actions, 1000 * (time.perf_counter() - t)


class PolicyServer:
    """An HTTP server around a policy; ``start()`` runs it in a thread, ``stop()`` ends it.

    ``timeout_s`` bounds every socket operation and the time a request may take to arrive;
    ``max_per_client`` the concurrent connections from one address."""

    def __init__(self, policy, token: str = "", host: str = "127.0.0.1", port: int = 8765, timeout_s: float = 10.0,
                 max_per_client: int = 64, monitor=None) -> None:
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be in [0, 65535] (0 = any free port), got {port}")
        if not timeout_s > 0 or max_per_client < 1:
            raise ValueError(f"timeout_s must be > 0 and max_per_client >= 1, got {timeout_s} and {max_per_client}")
        self.policy = policy
        self.monitor = monitor  # a vlaforge.deploy.monitor.PolicyMonitor: GET /metrics and what it counts
        self.token = check_token(token) if token else secrets.token_urlsafe(24)
        try:
            self.httpd = _Server((host, port), self._handler(), timeout_s, max_per_client)
        except OSError as e:
            raise ValueError(f"cannot serve on {host}:{port}: {e.strerror or e} (choose another --port, or 0 for "
                             "any free one)") from None
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            unread = 0  # body bytes the client declared that have not been read

            def setup(self) -> None:
                self.timeout = self.server.timeout_s  # every recv/send on this connection
                # A reply is written as headers then body: with Nagle's algorithm the body waits for
                # the client's delayed ACK of the headers (40 ms on Linux) on a kept-alive connection.
                self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                super().setup()

            def log_message(self, *args) -> None:  # keep the console for the caller
                pass

            def _deadline(self, active: bool) -> None:
                """Start (or end) the watchdog's clock on the request now arriving."""
                with self.server.guard:
                    if active:
                        self.server.deadlines[self.connection] = time.monotonic() + self.server.timeout_s
                    else:
                        self.server.deadlines.pop(self.connection, None)

            def handle_one_request(self) -> None:
                self.unread = 0
                self._deadline(True)  # also bounds the idle wait of a kept-alive connection
                try:
                    super().handle_one_request()
                finally:
                    self._deadline(False)

            def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
                """The HTTP layer's own refusals (bad request line or headers), as JSON and 4xx."""
                if code == HTTPStatus.NOT_IMPLEMENTED:
                    code, message = HTTPStatus.METHOD_NOT_ALLOWED, f"method {self.command!r} not allowed; use GET or POST"
                elif code >= 500:
                    code = HTTPStatus.BAD_REQUEST
                if self.request_version == "HTTP/0.9":  # an unparseable request line: still send a status line
                    self.request_version = "HTTP/1.0"
                self.close_connection = True
                self._reply(int(code), {"error": message or HTTPStatus(code).phrase})

            def _reply(self, code: int, payload: dict | bytes, content_type: str = "application/json") -> None:
                # strict JSON: never a NaN literal
                body = payload if isinstance(payload, bytes) else json.dumps(payload, allow_nan=False).encode()
                if self.unread:
                    self.close_connection = True
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                if self.close_connection:
                    self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body)
                if self.unread:
                    self._linger()

            def _linger(self) -> None:
                """Half-close and discard what the client still sends, within LINGER_S and LINGER_BYTES."""
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_WR)
                end, drained = time.monotonic() + LINGER_S, 0
                while drained < LINGER_BYTES and (left := end - time.monotonic()) > 0:
                    self.connection.settimeout(left)
                    try:
                        chunk = self.connection.recv(65536)
                    except OSError:
                        break
                    if not chunk:
                        break
                    drained += len(chunk)
                self.unread = 0

            def _authorized(self) -> bool:
                given = self.headers.get("Authorization", "")
                if hmac.compare_digest(given.encode(), f"Bearer {server.token}".encode()):
                    return True
                self._reply(401, {"error": "missing or wrong token (Authorization: Bearer <token>)"})
                return False

            def _declared_length(self) -> int | None:
                """The body length the client declares; a reply is sent (and None returned) if it is
                missing, malformed, chunked or over the limit, before any of the body is read."""
                if self.headers.get("Transfer-Encoding"):
                    self.unread = 1  # an unknown amount follows
                    self._reply(411, {"error": "Transfer-Encoding is not accepted; send Content-Length"})
                    return None
                values = self.headers.get_all("Content-Length") or []
                if len(values) != 1 or not (values[0].strip().isascii() and values[0].strip().isdigit()):
                    self.unread = 1
                    self._reply(411 if not values else 400,
                                {"error": "Content-Length header required" if not values else
                                 "Content-Length must be one non-negative integer"})
                    return None
                length = int(values[0])
                self.unread = length
                if length > MAX_BODY:
                    self._reply(413, {"error": f"body of {length} bytes exceeds the {MAX_BODY}-byte limit"})
                    return None
                return length

            def handle_expect_100(self) -> bool:
                """Refuse an oversized body before the client sends it."""
                return self._authorized() and self._declared_length() is not None and super().handle_expect_100()

            def do_GET(self) -> None:
                self._deadline(False)
                if self.path == "/health":
                    return self._reply(200, {"status": "ok"})
                if self.path == "/dashboard" and server.monitor is not None:  # static: its script sends the token
                    return self._reply(200, dashboard_html().encode(), "text/html; charset=utf-8")
                if not self._authorized():
                    return
                if self.path == "/info":
                    p = server.policy
                    return self._reply(200, {"image_shape": list(p.image_shape), "state_dim": p.state_dim,
                                             "chunk_size": p.cfg.chunk_size, "tasks": p.meta.get("tasks"),
                                             "suite": p.meta.get("suite"), "env": p.meta.get("env")})
                if self.path == "/ab" and isinstance(server.policy, ABTest):
                    return self._reply(200, server.policy.state())
                if self.path == "/metrics" and server.monitor is not None:
                    return self._reply(200, server.monitor.exposition(), "text/plain; version=0.0.4; charset=utf-8")
                self._reply(404, {"error": f"unknown path {self.path[:100]}; use /act, /info, /metrics, /dashboard "
                                          "or /health"})

            def do_POST(self) -> None:
                # Until the length is checked, assume a body follows: an early reply then lingers.
                self.unread = int(bool(self.headers.get("Transfer-Encoding")) or
                                  self.headers.get("Content-Length", "0").strip() != "0")
                if not self._authorized():
                    return
                ab = isinstance(server.policy, ABTest)  # an A/B test takes outcomes
                if self.path != "/act" and not (ab and self.path == "/outcome"):
                    return self._reply(404, {"error": f"unknown path {self.path[:100]}; POST /act"
                                                      f"{' or /outcome' if ab else ''}"})
                length = self._declared_length()
                if length is None:
                    return
                try:
                    body = self.rfile.read(length)  # under the socket timeout and the watchdog's deadline
                except OSError:
                    body = b""
                self.unread = 0
                self._deadline(False)
                if len(body) < length:
                    self.close_connection = True
                    return self._reply(400, {"error": f"body ended after {len(body)} of {length} bytes (or arrived "
                                                      f"too slowly: {self.server.timeout_s:g} s per request)"})
                if self.path == "/outcome":
                    return self._outcome(body)
                p, monitor, t0 = server.policy, server.monitor, time.perf_counter()
                try:
                    obs, reset, seed = parse_request(body, p.image_shape, p.state_dim)
                    actions, ms = on_policy_thread(_reset_and_act, p, obs, reset, seed)
                except (BadRequest, FloatingPointError, ValueError) as e:
                    # 400: malformed; 500: the policy produced NaN; 422: well-formed, but not an
                    # observation this policy can act on
                    code = 400 if isinstance(e, BadRequest) else 500 if isinstance(e, FloatingPointError) else 422
                    if monitor is not None:
                        monitor.failed(code)
                    return self._reply(code, {"error": str(e)})
                if monitor is not None:  # counted before the reply: a client that has its reply sees it counted
                    monitor.observe(obs, actions, ms, time.perf_counter() - t0, reset)
                self._reply(200, {"actions": actions.tolist(), "inference_ms": ms})

            def _outcome(self, body: bytes) -> None:
                """POST /outcome {"seed": the episode's reset seed, "success": true|false}."""
                try:
                    req = json.loads(body)
                    if not (isinstance(req, dict) and set(req) == {"seed", "success"} and type(req["seed"]) is int
                            and type(req["success"]) is bool):
                        raise ValueError
                except ValueError:
                    return self._reply(400, {"error": 'outcome must be {"seed": int, "success": bool}'})
                try:
                    state = server.policy.record(req["seed"], req["success"])
                except ValueError as e:
                    return self._reply(409, {"error": str(e)})
                if server.monitor is not None:
                    server.monitor.record_ab(state)
                return self._reply(200, state)

        return Handler

    def start(self) -> PolicyServer:
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.stopped.set()
        self.httpd.shutdown()
        self.httpd.server_close()


class PolicyClient:
    """Talks to a PolicyServer over one kept-alive connection: ``act(obs)`` returns the action
    chunk as the local policy would."""

    def __init__(self, url: str, token: str, timeout: float = 10.0) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"url must look like http://HOST:PORT, got {url!r}")
        self.host, self.port = parts.hostname, parts.port or 80
        self.token, self.timeout = token, timeout
        self._conn: http.client.HTTPConnection | None = None
        self._reset, self._seed = True, 0

    def _call(self, method: str, path: str, payload: dict | None = None) -> dict:
        data = json.dumps(payload).encode() if payload is not None else None
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}
        for retry in (False, True):
            fresh = self._conn is None
            if fresh:
                self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
                self._conn.connect()
                self._conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # headers, then body
            try:
                self._conn.request(method, path, data, headers)
                r = self._conn.getresponse()
                body = r.read()
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.close()
                # A kept-alive connection the server has since closed (idle timeout): reconnect once.
                if fresh or retry:
                    raise
        if r.will_close:
            self.close()
        if r.status != 200:
            try:
                reason = json.loads(body).get("error")
            except ValueError:
                reason = body[:200]
            raise RuntimeError(f"policy server answered {r.status}: {reason}")
        return json.loads(body)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def info(self) -> dict:
        return self._call("GET", "/info")

    def reset(self, seed: int = 0) -> None:
        self._reset, self._seed = True, seed

    def outcome(self, seed: int, success: bool) -> dict:
        """Report an A/B-served episode's outcome; the experiment's state after it."""
        return self._call("POST", "/outcome", {"seed": int(seed), "success": bool(success)})

    def ab(self) -> dict:
        return self._call("GET", "/ab")

    def act(self, obs: dict) -> np.ndarray:
        image = np.ascontiguousarray(obs["image"], dtype=np.uint8)
        payload = {"image": base64.b64encode(image.tobytes()).decode(), "image_shape": list(image.shape),
                   "state": [float(v) for v in obs["state"]], "instruction": obs["instruction"],
                   "reset": self._reset, "seed": self._seed}
        self._reset = False
        return np.asarray(self._call("POST", "/act", payload)["actions"], np.float32)


def run_clients(connect: Callable[[], tuple[Callable[[], object], Callable[[], None]]], clients: int,
                requests: int) -> dict:
    """``clients`` threads, released together, each calling ``connect()`` (-> its request
    function and its close) and then making ``requests`` timed requests; errors are counted,
    not raised (a load test measures the server under load). -> latencies (ms), error
    messages, wall seconds."""
    latencies: list[float] = []
    errors: list[str] = []
    gate = threading.Barrier(clients)

    def worker() -> None:
        call, close = connect()
        gate.wait()
        for _ in range(requests):
            t = time.perf_counter()
            try:
                call()
                latencies.append(1000 * (time.perf_counter() - t))
            except Exception as e:
                errors.append(f"{type(e).__name__}: {str(e)[:80]}")
        close()

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"latencies": latencies, "errors": errors, "wall_s": time.perf_counter() - t0}


def load_test(policy, clients: int = 4, requests: int = 50) -> dict:
    """A bounded loopback load test: ``clients`` threads each send ``requests`` /act calls."""
    from vlaforge.deploy.latency import observation

    if clients < 1 or requests < 1:
        raise ValueError("clients and requests must be >= 1")
    server = PolicyServer(policy, port=0).start()
    obs = observation(policy)

    def connect():
        client = PolicyClient(server.url, server.token)
        return (lambda: client.act(obs)), client.close

    r = run_clients(connect, clients, requests)
    server.stop()
    lat = r["latencies"] or [float("nan")]
    return {"clients": clients, "requests": clients * requests, "errors": len(r["errors"]),
            "error_examples": sorted(set(r["errors"]))[:3], "wall_s": r["wall_s"],
            "requests_per_s": len(r["latencies"]) / r["wall_s"], "latency_ms_p50": float(np.median(lat)),
            "latency_ms_p99": float(np.percentile(lat, 99))}
