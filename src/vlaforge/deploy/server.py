"""Serve a policy's actions over HTTP on the local network, with a client and a load test.

    POST /act    {"image": base64 of the raw uint8 (V, H, W, 3) bytes, "image_shape": [V, H, W, 3],
                  "state": [floats], "instruction": "...", "reset": false, "seed": 0}
                 -> {"actions": [[...], ...], "inference_ms": ...}
    GET  /info   the policy's input shapes, chunk size and tasks
    GET  /health "ok" (no token needed)

Every request but /health must carry ``Authorization: Bearer <token>`` (compared in constant
time). The server binds 127.0.0.1 unless told otherwise, refuses bodies over ``MAX_BODY`` bytes,
and answers any malformed request with 400 and a message naming the field; it never reaches the
policy with unchecked input. A well-formed observation the policy refuses (a state far outside its
training data) gets 422; a non-finite action is never sent (500 instead), and replies are strict
JSON. One policy, one robot: requests are served one at a time (the
policy keeps the observation history; ``reset`` starts a new episode).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import secrets
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

MAX_BODY = 4 * 1024 * 1024
MAX_INSTRUCTION = 256
FIELDS = {"image", "image_shape", "state", "instruction", "reset", "seed"}


class BadRequest(ValueError):
    """A request the server refuses, with the reason sent back to the client."""


def parse_request(body: bytes, image_shape: tuple[int, ...], state_dim: int) -> tuple[dict, bool, int]:
    """Validate an /act body -> (observation, reset, seed); raises BadRequest naming the problem."""
    try:
        req = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BadRequest(f"body is not JSON: {e}") from None
    if not isinstance(req, dict):
        raise BadRequest("body must be a JSON object")
    unknown = set(req) - FIELDS
    if unknown:
        raise BadRequest(f"unknown fields {sorted(unknown)}; allowed: {sorted(FIELDS)}")
    for key in ("image", "image_shape", "state", "instruction"):
        if key not in req:
            raise BadRequest(f"missing field {key!r}")
    if list(req["image_shape"]) != list(image_shape):
        raise BadRequest(f"image_shape must be {list(image_shape)}, got {req['image_shape']!r}")
    if not isinstance(req["image"], str):
        raise BadRequest("image must be a base64 string of raw uint8 bytes")
    try:
        raw = base64.b64decode(req["image"], validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("image is not valid base64") from None
    if len(raw) != int(np.prod(image_shape)):
        raise BadRequest(f"image has {len(raw)} bytes, expected {int(np.prod(image_shape))} for shape {list(image_shape)}")
    state = req["state"]
    if not (isinstance(state, list) and len(state) == state_dim and all(isinstance(v, (int, float)) for v in state)):
        raise BadRequest(f"state must be a list of {state_dim} numbers")
    state = np.asarray(state, np.float32)
    if not np.all(np.isfinite(state)):
        raise BadRequest("state contains NaN or inf")
    text = req["instruction"]
    if not isinstance(text, str) or not text.strip() or len(text) > MAX_INSTRUCTION:
        raise BadRequest(f"instruction must be a non-empty string of at most {MAX_INSTRUCTION} characters")
    reset, seed = req.get("reset", False), req.get("seed", 0)
    if not isinstance(reset, bool) or not isinstance(seed, int) or isinstance(seed, bool):
        raise BadRequest("reset must be true/false and seed an integer")
    obs = {"image": np.frombuffer(raw, np.uint8).reshape(image_shape).copy(), "state": state, "instruction": text}
    return obs, reset, seed


class PolicyServer:
    """An HTTP server around a policy; ``start()`` runs it in a thread, ``stop()`` ends it."""

    def __init__(self, policy, token: str = "", host: str = "127.0.0.1", port: int = 8765) -> None:
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be in [0, 65535] (0 = any free port), got {port}")
        self.policy, self.token = policy, token or secrets.token_urlsafe(24)
        self.lock = threading.Lock()
        try:
            self.httpd = ThreadingHTTPServer((host, port), self._handler())
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
            def log_message(self, *args) -> None:  # keep the console for the caller
                pass

            def _reply(self, code: int, payload: dict) -> None:
                body = json.dumps(payload, allow_nan=False).encode()  # strict JSON: never a NaN literal
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _authorized(self) -> bool:
                given = self.headers.get("Authorization", "")
                if hmac.compare_digest(given.encode(), f"Bearer {server.token}".encode()):
                    return True
                self._reply(401, {"error": "missing or wrong token (Authorization: Bearer <token>)"})
                return False

            def do_GET(self) -> None:
                if self.path == "/health":
                    return self._reply(200, {"status": "ok"})
                if not self._authorized():
                    return
                if self.path == "/info":
                    p = server.policy
                    return self._reply(200, {"image_shape": list(p.image_shape), "state_dim": p.state_dim,
                                             "chunk_size": p.cfg.chunk_size, "tasks": p.meta.get("tasks"),
                                             "suite": p.meta.get("suite")})
                self._reply(404, {"error": f"unknown path {self.path}; use /act, /info or /health"})

            def do_POST(self) -> None:
                if not self._authorized():
                    return
                if self.path != "/act":
                    return self._reply(404, {"error": f"unknown path {self.path}; POST /act"})
                try:
                    length = int(self.headers.get("Content-Length", ""))
                except ValueError:
                    return self._reply(411, {"error": "Content-Length header required"})
                if length > MAX_BODY:
                    return self._reply(413, {"error": f"body of {length} bytes exceeds the {MAX_BODY}-byte limit"})
                body = self.rfile.read(length)
                p = server.policy
                try:
                    obs, reset, seed = parse_request(body, p.image_shape, p.state_dim)
                except BadRequest as e:
                    return self._reply(400, {"error": str(e)})
                with server.lock:
                    if reset:
                        p.reset(seed)
                    t = time.perf_counter()
                    try:
                        actions = p.act(obs)
                    except FloatingPointError as e:
                        return self._reply(500, {"error": str(e)})
                    except ValueError as e:  # well-formed, but not an observation this policy can act on
                        return self._reply(422, {"error": str(e)})
                    ms = 1000 * (time.perf_counter() - t)
                self._reply(200, {"actions": actions.tolist(), "inference_ms": ms})

        return Handler

    def start(self) -> PolicyServer:
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class PolicyClient:
    """Talks to a PolicyServer: ``act(obs)`` returns the action chunk as the local policy would."""

    def __init__(self, url: str, token: str, timeout: float = 10.0) -> None:
        self.url, self.token, self.timeout = url.rstrip("/"), token, timeout
        self._reset, self._seed = True, 0

    def _call(self, method: str, path: str, payload: dict | None = None) -> dict:
        data = json.dumps(payload).encode() if payload is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"policy server answered {e.code}: {json.loads(e.read()).get('error')}") from None

    def info(self) -> dict:
        return self._call("GET", "/info")

    def reset(self, seed: int = 0) -> None:
        self._reset, self._seed = True, seed

    def act(self, obs: dict) -> np.ndarray:
        image = np.ascontiguousarray(obs["image"], dtype=np.uint8)
        payload = {"image": base64.b64encode(image.tobytes()).decode(), "image_shape": list(image.shape),
                   "state": [float(v) for v in obs["state"]], "instruction": obs["instruction"],
                   "reset": self._reset, "seed": self._seed}
        self._reset = False
        return np.asarray(self._call("POST", "/act", payload)["actions"], np.float32)


def load_test(policy, clients: int = 4, requests: int = 50) -> dict:
    """A bounded loopback load test: ``clients`` threads each send ``requests`` /act calls."""
    from vlaforge.deploy.latency import observation

    if clients < 1 or requests < 1:
        raise ValueError("clients and requests must be >= 1")
    server = PolicyServer(policy, port=0).start()
    obs = observation(policy)
    latencies: list[float] = []
    errors: list[str] = []

    def worker() -> None:
        client = PolicyClient(server.url, server.token)
        for _ in range(requests):
            t = time.perf_counter()
            try:
                client.act(obs)
                latencies.append(1000 * (time.perf_counter() - t))
            except Exception as e:  # counted, not raised: the test measures the server under load
                errors.append(str(e))

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    server.stop()
    lat = latencies or [float("nan")]
    return {"clients": clients, "requests": clients * requests, "errors": len(errors), "wall_s": wall,
            "requests_per_s": len(latencies) / wall, "latency_ms_p50": float(np.median(lat)),
            "latency_ms_p99": float(np.percentile(lat, 99))}
