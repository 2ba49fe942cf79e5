"""The streaming server: sessions that never mix, batched actions equal to one-by-one ones,
validation and admission, and the fleet load test."""

import numpy as np
import pytest
from helpers import write_dataset

from vlaforge.deploy.latency import observation
from vlaforge.models.config import PolicyConfig
from vlaforge.runtime.policy import load_policy
from vlaforge.train.config import TrainConfig
from vlaforge.train.trainer import train

msgpack = pytest.importorskip("msgpack", reason="the streaming server needs msgpack (pip install 'vlaforge[serve]')")
pytest.importorskip("websockets", reason="the streaming server needs websockets (pip install 'vlaforge[serve]')")

from vlaforge.deploy.stream import StreamClient, StreamServer, fleet_test  # noqa: E402

TOKEN = "s3cret-token-for-tests"


def tiny(root, head: str):
    """A two-frame-history policy (so a mixed-up history changes the actions) with ``head``."""
    write_dataset(root / "data", episodes=2)
    out = train(TrainConfig(dataset=str(root / "data"), output_dir=str(root / "run"), steps=3, batch_size=4,
                            tracking="none", policy=PolicyConfig(d_model=32, n_layers=1, n_heads=2, vision_channels=[8, 8],
                                                                 n_obs_steps=2, head=head, sample_steps=3)),
                show_progress=False)
    return load_policy(out)


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    return tiny(tmp_path_factory.mktemp("stream"), "regression")


@pytest.fixture(scope="module")
def flow_policy(tmp_path_factory):
    return tiny(tmp_path_factory.mktemp("stream_flow"), "flow")


def frames(policy, n: int, seed: int) -> list[dict]:
    return [observation(policy, seed=seed + i) for i in range(n)]


def one_by_one(policy, obs_list: list[dict], seed: int = 0) -> list[np.ndarray]:
    session = policy.new_session()
    session.reset(seed)
    return [policy.act_many([o], [session])[0] for o in obs_list]


@pytest.mark.parametrize("which", ["policy", "flow_policy"])
def test_act_many_equals_one_by_one_calls(which, request):
    """Three sessions, each with its own history and seed: every batched row equals the same
    session's calls made alone; for the flow head each session's noise is its own."""
    p = request.getfixturevalue(which)
    streams = [frames(p, 3, 10 * r) for r in range(3)]
    sessions = [p.new_session() for _ in range(3)]
    for r, s in enumerate(sessions):
        s.reset(r)
    batched = [p.act_many([streams[r][t] for r in range(3)], sessions) for t in range(3)]
    for r in range(3):
        alone = one_by_one(p, streams[r], seed=r)
        for t in range(3):
            np.testing.assert_allclose(batched[t][r], alone[t], atol=1e-5)
    if p.samples:  # different seeds draw different noise: rows must differ on the same inputs
        same = [p.new_session() for _ in range(2)]
        same[1].reset(1)
        a, b = p.act_many([streams[0][0]] * 2, same)
        assert np.abs(a - b).max() > 1e-4


def test_act_many_isolates_a_bad_row(policy):
    good, bad = observation(policy, seed=1), dict(observation(policy, seed=2), state=np.full(policy.state_dim, 1e30))
    sessions = [policy.new_session() for _ in range(2)]
    out = policy.act_many([good, bad], sessions)
    assert isinstance(out[1], ValueError) and "standard deviations" in str(out[1])
    np.testing.assert_allclose(out[0], one_by_one(policy, [good])[0], atol=1e-5)
    assert len(sessions[1].history) == 0  # the refused frame never entered its history
    with pytest.raises(ValueError, match="distinct sessions"):
        policy.act_many([good, good], [sessions[0], sessions[0]])


@pytest.fixture
def server(policy):
    s = StreamServer(policy, token=TOKEN, port=0, max_wait_ms=200, max_per_client=4).start()
    yield s
    s.stop()


def test_sessions_never_mix_histories(server, policy):
    """Two robots interleave their frames; each one's second chunk is the one its own two-frame
    history gives, not the one the other robot's frame would."""
    a, b = StreamClient(server.url, TOKEN), StreamClient(server.url, TOKEN)
    assert a.info["image_shape"] == list(policy.image_shape) and a.info["action_dim"] == policy.action_dim
    fa, fb = frames(policy, 2, 100), frames(policy, 2, 200)
    got_a, got_b = [], []
    for t in range(2):
        got_a.append(a.act(fa[t]))
        got_b.append(b.act(fb[t]))
    a.close(), b.close()
    for got, own in ((got_a, fa), (got_b, fb)):
        for t in range(2):
            np.testing.assert_allclose(got[t], one_by_one(policy, own)[t], atol=1e-5)
    mixed = one_by_one(policy, [fb[0], fa[1]])[1]
    assert np.abs(mixed - got_a[1]).max() > 1e-5  # the test could tell a mixed history apart


def test_concurrent_robots_are_batched_with_equal_actions(server, policy):
    """Four robots asking at once (the batcher waits up to 200 ms for all connected robots): one
    forward pass serves several, and every reply equals that robot's call made alone."""
    import threading

    clients = [StreamClient(server.url, TOKEN) for _ in range(4)]
    streams = [frames(policy, 2, 1000 * (r + 1)) for r in range(4)]
    got = [[None, None] for _ in range(4)]
    for t in range(2):
        def ask(r, t=t):
            got[r][t] = clients[r].act(streams[r][t])
        threads = [threading.Thread(target=ask, args=(r,)) for r in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    for c in clients:
        c.close()
    assert max(server.batches) > 1
    for r in range(4):
        for t in range(2):
            np.testing.assert_allclose(got[r][t], one_by_one(policy, streams[r])[t], atol=1e-5)


def test_bad_messages_are_answered_and_the_session_survives(server, policy):
    from websockets.sync.client import connect

    with connect(server.url, additional_headers={"Authorization": f"Bearer {TOKEN}"}, proxy=None) as ws:
        msgpack.unpackb(ws.recv(10))
        exchange_bad_messages(ws, policy)


def exchange_bad_messages(ws, policy):
    obs = observation(policy)
    good = {"id": 7, "image": obs["image"].tobytes(), "state": obs["state"].astype("<f4").tobytes(),
            "instruction": "reach the red cube"}
    cases = [
        (b"\xc1garbage", "not msgpack"),
        (msgpack.packb([1, 2]), "must be a msgpack map"),
        (msgpack.packb({**good, "image": good["image"][:-1]}), "image has"),
        (msgpack.packb({**good, "image": "text"}), "image must be raw uint8 bytes"),
        (msgpack.packb({**good, "state": b"\x00" * 3}), "state must be a list of 4 numbers"),
        (msgpack.packb({**good, "state": [float("nan")] * 4}), "state contains NaN or inf"),
        (msgpack.packb({**good, "evil": 1}), "unknown fields"),
        (msgpack.packb({**good, "seed": -1}), "seed must be"),
        (msgpack.packb({**good, "id": -5}), "id must be"),
        (msgpack.packb({k: v for k, v in good.items() if k != "instruction"}), "missing field 'instruction'"),
    ]
    for message, expected in cases:
        ws.send(message)
        reply = msgpack.unpackb(ws.recv(10))
        assert reply["code"] == 400 and expected in reply["error"], (expected, reply)
    ws.send("a text frame")
    assert "binary" in msgpack.unpackb(ws.recv(10))["error"]
    ws.send(msgpack.packb({**good, "state": [1e30] * 4}))
    assert msgpack.unpackb(ws.recv(10))["code"] == 422
    ws.send(msgpack.packb(good))
    reply = msgpack.unpackb(ws.recv(10))
    assert reply["id"] == 7 and reply["shape"] == [policy.cfg.chunk_size, policy.action_dim]


def test_admission_token_path_and_per_client_bound(server, policy):
    with pytest.raises(RuntimeError, match="401"):
        StreamClient(server.url, "wrong-token-0123456789")
    with pytest.raises(RuntimeError, match="404"):
        StreamClient(server.url.replace("/stream", "/other"), TOKEN)
    held = [StreamClient(server.url, TOKEN) for _ in range(4)]
    with pytest.raises(RuntimeError, match="429"):
        StreamClient(server.url, TOKEN)
    for c in held:
        c.close()
    with pytest.raises(ValueError, match="token must have at least 16 characters"):
        StreamServer(policy, token="short", port=0)


def test_fleet_load_test_keeps_the_rate(policy):
    """Three robots at 20 Hz for one second on the tiny policy: every tick served, none failed."""
    r = fleet_test(policy, robots=3, rate_hz=20, seconds=1.0)
    assert r["errors"] == 0 and r["requests"] >= 3 * 20 * 0.8
    assert 0 < r["mean_batch"] <= 3 and r["forward_passes"] > 0


def test_a_monitored_stream_counts_every_reply_and_serves_metrics_and_dashboard(policy, tmp_path):
    """Two robots, 6 episodes of 3 requests each, one malformed and one unusable message: the
    counts, the 12 episodes fed to the drift test (tests after 5 and 10), /metrics behind the
    token in Prometheus's content type, and the dashboard page on the same port."""
    import urllib.error
    import urllib.request

    pytest.importorskip("prometheus_client", reason="serving metrics need prometheus-client (pip install 'vlaforge[mlops]')")
    from websockets.sync.client import connect

    from vlaforge.deploy.monitor import DriftDetector, PolicyMonitor

    write_dataset(tmp_path / "reference", episodes=12)
    monitor = PolicyMonitor(policy.action_dim, DriftDetector.from_dataset(tmp_path / "reference", window=5, every=5,
                                                                          permutations=50))
    server = StreamServer(policy, token=TOKEN, port=0, monitor=monitor).start()
    try:
        robots = [StreamClient(server.url, TOKEN) for _ in range(2)]
        for episode in range(6):
            for r, robot in enumerate(robots):
                robot.reset(10 * episode + r)
                for t in range(3):
                    robot.act(observation(policy, seed=episode * 10 + t))
        for robot in robots:
            robot.close()
        with connect(server.url, additional_headers={"Authorization": f"Bearer {TOKEN}"}, proxy=None) as ws:
            msgpack.unpackb(ws.recv(10))
            obs = observation(policy)
            good = {"id": 1, "image": obs["image"].tobytes(), "state": [1e30] * 4, "instruction": "reach"}
            for message in (b"\xc1garbage", msgpack.packb(good)):
                ws.send(message)
                msgpack.unpackb(ws.recv(10))
        monitor.flush()
        http = server.url.replace("ws://", "http://").removesuffix("/stream")

        def get(path: str, token: str | None = TOKEN):
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            try:
                with urllib.request.urlopen(urllib.request.Request(http + path, headers=headers), timeout=10) as r:
                    return r.status, r.headers["Content-Type"], r.read().decode()
            except urllib.error.HTTPError as e:
                return e.code, None, ""

        assert get("/metrics", token=None)[0] == 401 and get("/metrics", token="wrong-token-0123456789")[0] == 401
        code, kind, text = get("/metrics")
        assert code == 200 and kind == "text/plain; version=0.0.4; charset=utf-8"
        series = {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines() if line[:1] != "#"}
        assert series['vlaforge_requests_total{code="200"}'] == 36
        assert series['vlaforge_requests_total{code="400"}'] == 1 and series['vlaforge_requests_total{code="422"}'] == 1
        assert series["vlaforge_inference_seconds_count"] == 36 and series["vlaforge_request_seconds_count"] == 36
        assert series["vlaforge_drift_episodes_total"] == 12 and series["vlaforge_drift_checks_total"] == 2
        code, kind, page = get("/dashboard", token=None)
        assert code == 200 and kind.startswith("text/html") and 'fetch("/metrics"' in page
        assert get("/other")[0] == 404
    finally:
        server.stop()
