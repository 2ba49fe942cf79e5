"""The policy server: token, validation of every field, parity with the local policy, load test."""

import base64
import json
import urllib.request

import numpy as np
import pytest
from helpers import write_dataset

from vlaforge.deploy.latency import observation
from vlaforge.deploy.server import MAX_BODY, PolicyClient, PolicyServer, load_test
from vlaforge.models.config import PolicyConfig
from vlaforge.runtime.policy import load_policy
from vlaforge.train.config import TrainConfig
from vlaforge.train.trainer import train


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    write_dataset(root / "data", episodes=2)
    out = train(TrainConfig(dataset=str(root / "data"), output_dir=str(root / "run"), steps=2, batch_size=4,
                            tracking="none", policy=PolicyConfig(d_model=32, n_layers=1, n_heads=2,
                                                                 vision_channels=[8, 8])), show_progress=False)
    return load_policy(out)


@pytest.fixture
def server(policy):
    s = PolicyServer(policy, token="secret", port=0).start()
    yield s
    s.stop()


def post(url, body: bytes, token="secret", headers=None):
    req = urllib.request.Request(url + "/act", data=body, method="POST",
                                 headers={"Authorization": f"Bearer {token}", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_client_gets_the_local_policys_actions(server, policy):
    assert server.url.startswith("http://127.0.0.1:")
    client = PolicyClient(server.url, "secret")
    assert client.info()["image_shape"] == list(policy.image_shape)
    obs = observation(policy, seed=1)
    policy.reset()
    np.testing.assert_allclose(client.act(obs), policy.act(obs), atol=1e-6)


def test_bad_requests_are_refused_with_the_reason(server, policy):
    obs = observation(policy)
    good = {"image": base64.b64encode(obs["image"].tobytes()).decode(), "image_shape": list(policy.image_shape),
            "state": obs["state"].tolist(), "instruction": "reach the red cube"}
    assert post(server.url, json.dumps(good).encode())[0] == 200
    assert post(server.url, json.dumps(good).encode(), token="wrong")[0] == 401
    cases = [
        (b"{not json", "not JSON"),
        (json.dumps({**good, "image_shape": [1, 32, 32, 3]}).encode(), "image_shape must be"),
        (json.dumps({**good, "image": good["image"][:-8]}).encode(), "image"),
        (json.dumps({**good, "image": "***"}).encode(), "not valid base64"),
        (json.dumps({**good, "state": [1.0, 2.0]}).encode(), "state must be a list of 4"),
        (json.dumps({**good, "state": [1.0, 2.0, "x", 3.0]}).encode(), "state must be"),
        (json.dumps({**good, "instruction": ""}).encode(), "instruction"),
        (json.dumps({**good, "instruction": "a" * 300}).encode(), "at most 256"),
        (json.dumps({**good, "evil": 1}).encode(), "unknown fields"),
        (json.dumps({k: v for k, v in good.items() if k != "state"}).encode(), "missing field 'state'"),
    ]
    for body, message in cases:
        code, reply = post(server.url, body)
        assert code == 400 and message in reply["error"], (message, reply)
    nan = json.dumps({**good, "state": [float("nan")] * 4}).encode()
    assert post(server.url, nan)[1]["error"] == "state contains NaN or inf"
    code, reply = post(server.url, b"x", headers={"Content-Length": str(MAX_BODY + 1)})
    assert code == 413


def test_odd_instructions_get_finite_actions_and_extreme_states_a_422(server, policy):
    obs = observation(policy)
    good = {"image": base64.b64encode(obs["image"].tobytes()).decode(), "image_shape": list(policy.image_shape),
            "state": obs["state"].tolist(), "instruction": "reach the red cube"}
    for text in ["?", "...", "\U0001f642", "\x00", "\u202e\u0301"]:
        code, reply = post(server.url, json.dumps({**good, "instruction": text}).encode())
        assert code == 200 and np.isfinite(reply["actions"]).all(), text
    for value in (1e20, -1e38):
        code, reply = post(server.url, json.dumps({**good, "state": [value] * 4}).encode())
        assert code == 422 and "standard deviations from the training data" in reply["error"]


def test_bad_ports_get_one_line_errors(server, policy):
    for port in (99999, -1):
        with pytest.raises(ValueError, match=r"port must be in \[0, 65535\]"):
            PolicyServer(policy, token="t", port=port)
    taken = int(server.url.rsplit(":", 1)[1])
    with pytest.raises(ValueError, match=f"cannot serve on 127.0.0.1:{taken}: .*choose another --port"):
        PolicyServer(policy, token="t", port=taken)


def test_loopback_load_test_measures_a_planted_service_time(policy, monkeypatch):
    """A policy that takes 20 ms per call behind the server's single lock: 3 clients x 10 requests
    cannot exceed 50 requests/s, and with three clients queued a request waits for the others."""
    import time

    real_act = policy.act

    def slow_act(obs, *a, **kw):
        time.sleep(0.02)
        return real_act(obs, *a, **kw)

    monkeypatch.setattr(policy, "act", slow_act)
    r = load_test(policy, clients=3, requests=10)
    assert r["requests"] == 30 and r["errors"] == 0
    assert r["wall_s"] >= 30 * 0.02 and r["requests_per_s"] <= 50
    assert r["latency_ms_p99"] >= r["latency_ms_p50"] >= 20 * 1.5  # queued behind at least one other request
