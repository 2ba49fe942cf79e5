"""Stream actions to many robots over one WebSocket each, batching their requests.

Why WebSocket with msgpack rather than gRPC streaming: the two pure-Python packages
(``websockets``, ``msgpack``) install anywhere without code generation or a 30 MB native
library, any language and a browser can speak it, and a WebSocket is exactly the long-lived,
two-way, per-robot channel a control loop needs. Images travel as raw bytes (no base64, no
JSON), and the connection is the session: its observation history and noise generator live
on the server as long as the robot stays connected.

    connect   ws://HOST:PORT/stream  with  Authorization: Bearer <token>  (401 before the upgrade)
    server -> {"image_shape": [V, H, W, 3], "state_dim": S, "chunk_size": K, "action_dim": A,
               "max_batch": B}
    robot  -> {"id": n, "image": <V*H*W*3 uint8 bytes>, "state": <S float32 bytes> or [numbers],
               "instruction": "...", "reset": false, "seed": 0}
    server -> {"id": n, "actions": <K*A float32 bytes>, "shape": [K, A], "inference_ms": ms,
               "batch": b}   or   {"id": n, "error": "...", "code": 400 | 422 | 500}

(every message a msgpack map; arrays little-endian.) Requests of different robots that are
waiting at the same moment run as one forward pass (``Policy.act_many``); the batcher waits at
most ``max_wait_ms`` for the connected robots that have not yet asked, and never when all of
them have, so a lone robot pays no batching delay. Validation is the HTTP server's
(``observation_fields``): a bad message gets an error reply naming the field and the session
stays usable. Binds 127.0.0.1 unless told otherwise; the token rules are the HTTP server's.

With a ``PolicyMonitor`` the same port answers plain HTTP too: ``GET /metrics`` (the token
required) and ``GET /dashboard``, the HTTP server's page. Every reply is counted as the HTTP
server counts an /act; its inference time is the forward pass of the batch it ran in, and a
``reset`` message starts an episode for the drift test.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from vlaforge.deploy.dashboard import dashboard_html
from vlaforge.deploy.server import MAX_BODY, BadRequest, check_token, observation_fields
from vlaforge.runtime.policy import on_policy_thread, policy_thread

PATH = "/stream"
STREAM_FIELDS = {"id", "image", "state", "instruction", "reset", "seed"}


def _msgpack():
    try:
        import msgpack
        import websockets  # noqa: F401
    except ImportError as e:
        raise ImportError(f"the streaming server needs websockets and msgpack: pip install 'vlaforge[serve]' ({e})") from None
    return msgpack


def parse_message(data: bytes | str, image_shape: tuple[int, ...], state_dim: int) -> tuple[int, dict, bool, int]:
    """Validate one robot message -> (id, observation, reset, seed); BadRequest names the problem."""
    msgpack = _msgpack()
    if not isinstance(data, bytes):
        raise BadRequest("messages must be binary (msgpack), not text")
    try:
        req = msgpack.unpackb(data, raw=False, strict_map_key=True, max_bin_len=MAX_BODY, max_str_len=4096,
                              max_array_len=4096, max_map_len=16)
    except Exception as e:  # msgpack raises ValueError, ExtraData, FormatError, StackError
        raise BadRequest(f"message is not msgpack: {type(e).__name__}") from None
    if not isinstance(req, dict):
        raise BadRequest("message must be a msgpack map")
    unknown = set(req) - STREAM_FIELDS
    if unknown:
        raise BadRequest(f"unknown fields {sorted(map(str, unknown))}; allowed: {sorted(STREAM_FIELDS)}")
    for key in ("image", "state", "instruction"):
        if key not in req:
            raise BadRequest(f"missing field {key!r}")
    rid = req.get("id", 0)
    if not (type(rid) is int and 0 <= rid < 2**63):
        raise BadRequest("id must be an integer in [0, 2^63)")
    if not isinstance(req["image"], bytes):
        raise BadRequest("image must be raw uint8 bytes")
    obs, reset, seed = observation_fields(req, req["image"], image_shape, state_dim)
    return rid, obs, reset, seed


@dataclass
class _Request:
    session: object
    obs: dict
    reset: bool
    seed: int
    done: asyncio.Future = field(repr=False)


class StreamServer:
    """A WebSocket server around a policy, one session per connection; ``start()`` runs it in a
    thread with its own event loop, ``stop()`` ends it. ``max_batch`` rows per forward pass,
    ``max_wait_ms`` the longest a request waits for other robots', ``max_sessions`` and
    ``max_per_client`` bound the connections in all and from one address; ``monitor`` (a
    vlaforge.deploy.monitor.PolicyMonitor) counts every request and serves /metrics."""

    def __init__(self, policy, token: str = "", host: str = "127.0.0.1", port: int = 8766, max_batch: int = 16,
                 max_wait_ms: float = 2.0, max_sessions: int = 64, max_per_client: int = 32, monitor=None) -> None:
        _msgpack()
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be in [0, 65535] (0 = any free port), got {port}")
        if max_batch < 1 or max_wait_ms < 0 or max_sessions < 1 or max_per_client < 1:
            raise ValueError("max_batch, max_sessions and max_per_client must be >= 1 and max_wait_ms >= 0, got "
                             f"{max_batch}, {max_sessions}, {max_per_client} and {max_wait_ms}")
        self.policy, self.host, self.port = policy, host, port
        self.token = check_token(token) if token else secrets.token_urlsafe(24)
        self.max_batch, self.max_wait = max_batch, max_wait_ms / 1000
        self.max_sessions, self.max_per_client = max_sessions, max_per_client
        self.monitor = monitor
        self.sessions: dict[object, str] = {}  # connection -> client address
        self.batches: list[int] = []  # sizes of the forward passes run (the load test reads them)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server = None

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}{PATH}"

    def start(self) -> StreamServer:
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._open(), self._loop).result()
        except OSError as e:
            self.stop()
            raise ValueError(f"cannot serve on {self.host}:{self.port}: {e.strerror or e} (choose another --port, "
                             "or 0 for any free one)") from None
        return self

    def stop(self) -> None:
        if self._server is not None:
            asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)

    async def _open(self) -> None:
        from websockets.asyncio.server import serve

        self._queue: asyncio.Queue[_Request] = asyncio.Queue()
        self._server = await serve(self._session, self.host, self.port, process_request=self._admit, compression=None,
                                   max_size=MAX_BODY, max_queue=4, open_timeout=10, ping_interval=20, ping_timeout=20)
        self.port = self._server.sockets[0].getsockname()[1]
        self._batcher = asyncio.create_task(self._batch_loop())

    async def _close(self) -> None:
        self._server.close()
        await self._server.wait_closed()
        self._batcher.cancel()

    def _admit(self, connection, request):
        """Before the upgrade: the path, the token and the connection bounds (else an HTTP error);
        with a monitor, the plain HTTP pages /dashboard and /metrics."""
        pages = (PATH, "/metrics", "/dashboard") if self.monitor is not None else (PATH,)
        if request.path not in pages:
            return connection.respond(404, f"unknown path; connect to {PATH}\n")
        if request.path == "/dashboard":  # static: its script sends the token
            return _page(connection, dashboard_html(), "text/html; charset=utf-8")
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode()):
            return connection.respond(401, "missing or wrong token (Authorization: Bearer <token>)\n")
        if request.path == "/metrics":
            return _page(connection, self.monitor.exposition().decode(), "text/plain; version=0.0.4; charset=utf-8")
        host = connection.remote_address[0]
        if len(self.sessions) >= self.max_sessions:
            return connection.respond(503, f"{self.max_sessions} robots are connected already\n")
        if sum(h == host for h in self.sessions.values()) >= self.max_per_client:
            return connection.respond(429, f"more than {self.max_per_client} connections from {host}\n")
        return None

    async def _session(self, connection) -> None:
        msgpack, p = _msgpack(), self.policy
        self.sessions[connection] = connection.remote_address[0]
        session = p.new_session()
        try:
            await connection.send(msgpack.packb({"image_shape": list(p.image_shape), "state_dim": p.state_dim,
                                                 "chunk_size": p.cfg.chunk_size, "action_dim": p.action_dim,
                                                 "max_batch": self.max_batch}))
            async for message in connection:
                rid, t0 = 0, time.perf_counter()
                try:
                    rid, obs, reset, seed = parse_message(message, p.image_shape, p.state_dim)
                except BadRequest as e:
                    if self.monitor is not None:
                        self.monitor.failed(400)
                    await connection.send(msgpack.packb({"id": rid, "error": str(e), "code": 400}))
                    continue
                request = _Request(session, obs, reset, seed, asyncio.get_running_loop().create_future())
                await self._queue.put(request)
                result, ms, batch = await request.done
                if isinstance(result, Exception):
                    code = 500 if isinstance(result, FloatingPointError) else 422
                    reply = {"id": rid, "error": str(result), "code": code}
                    if self.monitor is not None:
                        self.monitor.failed(code)
                else:
                    reply = {"id": rid, "actions": result.astype("<f4").tobytes(), "shape": list(result.shape),
                             "inference_ms": ms, "batch": batch}
                    if self.monitor is not None:  # counted before the reply, as the HTTP server does
                        self.monitor.observe(obs, result, ms, time.perf_counter() - t0, reset)
                await connection.send(msgpack.packb(reply))
        except Exception as e:  # a robot that hangs up mid-request is routine
            from websockets.exceptions import ConnectionClosed

            if not isinstance(e, ConnectionClosed):
                raise
        finally:
            del self.sessions[connection]

    async def _batch_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            deadline = loop.time() + self.max_wait
            while len(batch) < self.max_batch:
                if not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                    continue
                left = deadline - loop.time()
                if len(batch) >= len(self.sessions) or left <= 0:  # everyone has asked, or waited enough
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), left))
                except TimeoutError:
                    break
            t = time.perf_counter()
            results = await loop.run_in_executor(policy_thread(), self._forward, batch)  # off the event loop
            ms = 1000 * (time.perf_counter() - t)
            self.batches.append(len(batch))
            for request, result in zip(batch, results):
                if not request.done.done():
                    request.done.set_result((result, ms, len(batch)))

    def _forward(self, batch: list[_Request]) -> list:
        for r in batch:
            if r.reset:
                r.session.reset(r.seed)
        return self.policy.act_many([r.obs for r in batch], [r.session for r in batch])


def _page(connection, text: str, content_type: str):
    """A 200 reply to a plain HTTP GET on the WebSocket port (the connection then closes)."""
    response = connection.respond(200, text)
    del response.headers["Content-Type"]
    response.headers["Content-Type"] = content_type
    return response


class StreamClient:
    """One robot's connection to a StreamServer: ``act(obs)`` returns the action chunk the local
    policy would; ``reset(seed)`` starts a new episode with the next call."""

    def __init__(self, url: str, token: str, timeout: float = 10.0) -> None:
        from websockets.sync.client import connect

        self._msgpack, self.timeout = _msgpack(), timeout
        self._stack = contextlib.ExitStack()
        try:
            self.ws = self._stack.enter_context(connect(url, additional_headers={"Authorization": f"Bearer {token}"},
                                                        compression=None, max_size=MAX_BODY, open_timeout=timeout,
                                                        proxy=None))
        except Exception as e:
            raise RuntimeError(f"cannot open a policy stream at {url}: {e}") from None
        self.info = self._msgpack.unpackb(self.ws.recv(timeout))
        self._id, self._reset, self._seed = 0, True, 0

    def reset(self, seed: int = 0) -> None:
        self._reset, self._seed = True, seed

    def act(self, obs: dict) -> np.ndarray:
        image = np.ascontiguousarray(obs["image"], dtype=np.uint8)
        self._id += 1
        self.ws.send(self._msgpack.packb({
            "id": self._id, "image": image.tobytes(), "state": np.asarray(obs["state"], "<f4").tobytes(),
            "instruction": obs["instruction"], "reset": self._reset, "seed": self._seed}))
        self._reset = False
        reply = self._msgpack.unpackb(self.ws.recv(self.timeout))
        if "error" in reply:
            raise RuntimeError(f"policy server answered {reply['code']}: {reply['error']}")
        return np.frombuffer(reply["actions"], "<f4").reshape(reply["shape"]).copy()

    def close(self) -> None:
        self._stack.close()


def _percentiles(ms: list[float]) -> dict:
    ms = ms or [float("nan")]
    return {"p50_ms": float(np.median(ms)), "p99_ms": float(np.percentile(ms, 99)), "calls": len(ms)}


def overhead_test(policy, calls: int = 200, warmup: int = 20) -> dict:
    """One robot asking back to back: ``act()`` in process against the same call through the
    HTTP server and through the stream, p50/p99 over ``calls`` each (rounds interleaved so a
    drift of the machine hits all three alike). Server overhead = transport p50 - local p50."""
    from vlaforge.deploy.latency import observation
    from vlaforge.deploy.server import PolicyClient, PolicyServer

    obs = observation(policy)
    http, stream = PolicyServer(policy, port=0).start(), StreamServer(policy, port=0).start()
    clients = {"http": PolicyClient(http.url, http.token), "stream": StreamClient(stream.url, stream.token)}
    local = policy.new_session()
    # The local call runs on the policy thread too: the servers' calls do, and a second thread
    # running torch would slow both (runtime/policy.py, policy_thread).
    ways = {"local": lambda: on_policy_thread(policy.act_many, [obs], [local])[0],
            **{k: (lambda c=c: c.act(obs)) for k, c in clients.items()}}
    times: dict[str, list[float]] = {k: [] for k in ways}
    try:
        for i in range(warmup + calls):
            for name, call in ways.items():
                t = time.perf_counter()
                call()
                if i >= warmup:
                    times[name].append(1000 * (time.perf_counter() - t))
    finally:
        for c in clients.values():
            c.close()
        http.stop()
        stream.stop()
    out = {name: _percentiles(ms) for name, ms in times.items()}
    for name in clients:
        out[name]["overhead_p50_ms"] = out[name]["p50_ms"] - out["local"]["p50_ms"]
    return out


def fleet_test(policy, robots: int = 8, rate_hz: float = 20.0, seconds: float = 5.0, max_batch: int = 16,
               max_wait_ms: float = 2.0, seed: int = 0) -> dict:
    """``robots`` connections, each asking for a chunk every 1/``rate_hz`` s on its own clock
    (phases drawn from ``seed``), for ``seconds``. A request is due at its tick; its latency is
    counted from the tick, and a reply that arrives after the next tick is a deadline miss (that
    robot's next request then leaves late, as a real control loop's would)."""
    from vlaforge.deploy.latency import observation

    if robots < 1 or rate_hz <= 0 or seconds <= 0:
        raise ValueError(f"robots must be >= 1, rate_hz and seconds > 0, got {robots}, {rate_hz}, {seconds}")
    server = StreamServer(policy, port=0, max_batch=max_batch, max_wait_ms=max_wait_ms,
                          max_per_client=max(32, robots)).start()
    obs, period = observation(policy), 1.0 / rate_hz
    phases = np.random.default_rng(seed).uniform(0, period, robots)
    latencies: list[list[float]] = [[] for _ in range(robots)]
    misses, errors = [0] * robots, []
    start: list[float] = []
    warmup: list[int] = []

    def go() -> None:  # runs once every robot has connected and made its first call
        warmup.append(len(server.batches))
        start.append(time.perf_counter() + 0.05)

    ready = threading.Barrier(robots + 1, action=go)

    def robot(i: int) -> None:
        try:
            client = StreamClient(server.url, server.token)
            client.act(obs)  # warm-up: the session's first frame
        except Exception as e:
            errors.append(str(e))
            ready.wait()
            return
        ready.wait()
        tick = start[0] + phases[i]
        while tick < start[0] + seconds:
            time.sleep(max(0.0, tick - time.perf_counter()))
            try:
                client.act(obs)
            except Exception as e:
                errors.append(str(e))
            done = time.perf_counter()
            latencies[i].append(1000 * (done - tick))
            misses[i] += done > tick + period
            tick = max(tick + period, done)  # a late reply delays the next request, never doubles it
        client.close()

    threads = [threading.Thread(target=robot, args=(i,)) for i in range(robots)]
    for t in threads:
        t.start()
    ready.wait()
    for t in threads:
        t.join()
    batches = server.batches[warmup[0]:]
    server.stop()
    flat = [x for lat in latencies for x in lat]
    return {"robots": robots, "rate_hz": rate_hz, "seconds": seconds, "max_batch": max_batch, "max_wait_ms": max_wait_ms,
            "requests": len(flat), "errors": len(errors), "error_examples": sorted(set(errors))[:3],
            "achieved_hz_per_robot": len(flat) / robots / seconds, **_percentiles(flat),
            "deadline_misses": int(sum(misses)), "miss_rate": float(sum(misses) / max(1, len(flat))),
            "p99_under_period": bool(np.percentile(flat, 99) < 1000 * period) if flat else False,
            "mean_batch": float(np.mean(batches)) if batches else float("nan"), "forward_passes": len(batches)}
