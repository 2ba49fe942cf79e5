"""Online A/B testing: routing, the self-stopping decision on planted outcomes, its error rate with
equal policies, and the server's /outcome and /ab endpoints."""

import json
import urllib.error
import urllib.request

import numpy as np
import pytest
from helpers import synthetic_policy

from vlaforge.deploy.ab import ABTest
from vlaforge.deploy.latency import observation
from vlaforge.deploy.server import PolicyClient, PolicyServer
from vlaforge.runtime.policy import load_policy

TOKEN = "ab-test-token-for-tests"


class Fake:
    image_shape, state_dim, action_dim = (1, 8, 8, 3), 4, 2

    def __init__(self, value):
        self.value, self.resets = value, []

    def reset(self, seed=0):
        self.resets.append(seed)

    def act(self, obs):
        return np.full((4, 2), self.value)


def run(ab, rates, rng, episodes):
    """Serve ``episodes`` episodes, drawing each outcome with its arm's success rate."""
    for e in range(episodes):
        ab.reset(e)
        ab.act({})
        ab.record(e, bool(rng.random() < rates[ab.assigned[e]]))
        if ab.decision is not None:
            return ab.decision
    return None


def test_routing_is_seeded_sticky_and_respects_the_share(tmp_path):
    ab = ABTest(Fake(0.0), Fake(1.0), share=0.3, seed=5, log=tmp_path / "ab.jsonl")
    arms = [ab.arm_for(e) for e in range(2000)]
    assert abs(arms.count("challenger") / 2000 - 0.3) < 0.04
    ab.reset(7)
    assert ab.act({})[0, 0] == (1.0 if arms[7] == "challenger" else 0.0)
    again = ABTest(Fake(0.0), Fake(1.0), share=0.3, seed=5)
    assert [again.arm_for(e) for e in range(50)] == arms[:50]
    with pytest.raises(ValueError, match="never served"):
        ab.record(99999, True)
    ab.record(7, True)
    with pytest.raises(ValueError, match="already reported"):
        ab.record(7, False)
    lines = [json.loads(x) for x in (tmp_path / "ab.jsonl").read_text().splitlines()]
    assert lines[-1]["event"] == "outcome" and lines[-1]["episode"] == 7


def test_a_clearly_better_challenger_is_promoted_and_a_worse_one_rolled_back():
    rng = np.random.default_rng(0)
    better = ABTest(Fake(0.0), Fake(1.0), seed=1)
    d = run(better, {"champion": 0.2, "challenger": 0.9}, rng, 400)
    assert d and d["action"] == "promote" and d["winner"] == "challenger" and d["pairs"] < 60
    assert all(better.arm_for(10_000 + e) == "challenger" for e in range(20))  # all traffic to the winner
    worse = ABTest(Fake(0.0), Fake(1.0), seed=2)
    d = run(worse, {"champion": 0.9, "challenger": 0.2}, rng, 400)
    assert d and d["action"] == "rollback" and worse.events[-1] == {"time": worse.events[-1]["time"], "event": "decision", **d}
    assert worse.arm_for(10_000) == "champion"


def test_a_restarted_experiment_resumes_from_its_log(tmp_path):
    log = tmp_path / "ab.jsonl"
    rates, outcomes = {"champion": 0.5, "challenger": 0.9}, np.random.default_rng(4).random(400)

    def serve(ab, episodes):
        for e in episodes:
            ab.reset(e)
            ab.record(e, bool(outcomes[e] < rates[ab.assigned[e]]))
            if ab.decision is not None:
                return e

    whole = ABTest(Fake(0.0), Fake(1.0), seed=7)
    stop = serve(whole, range(400))
    assert stop is not None and stop > 10 and whole.decision["action"] == "promote"
    first = ABTest(Fake(0.0), Fake(1.0), seed=7, log=log)
    serve(first, range(10))  # the server stops after 10 episodes
    with log.open("a") as f:
        f.write('{"time": 1, "event": "outc')  # and crashed mid-write
    again = ABTest(Fake(0.0), Fake(1.0), seed=7, log=log)
    assert again.state()["episodes"] == first.state()["episodes"] and again.assigned == first.assigned
    assert serve(again, range(10, 400)) == stop and again.decision == whole.decision  # as if never stopped
    third = ABTest(Fake(0.0), Fake(1.0), seed=7, log=log)
    assert third.decision == whole.decision and third.arm_for(10_000) == whole.decision["winner"]
    with pytest.raises(ValueError, match="belongs to another experiment: share was 0.5, now 0.2"):
        ABTest(Fake(0.0), Fake(1.0), share=0.2, seed=7, log=log)
    other = Fake(1.0)
    other.meta = {"sha256": {"model.safetensors": "0" * 64}}
    with pytest.raises(ValueError, match="challenger_weights"):
        ABTest(Fake(0.0), other, seed=7, log=log)
    (tmp_path / "old.jsonl").write_text('{"event": "assigned", "episode": 1, "arm": "champion"}\n')
    with pytest.raises(ValueError, match="does not begin with a start record"):
        ABTest(Fake(0.0), Fake(1.0), log=tmp_path / "old.jsonl")


def test_equal_policies_are_rarely_declared_different():
    rng = np.random.default_rng(3)
    runs, alpha = 150, 0.05
    wrong = sum(run(ABTest(Fake(0.0), Fake(1.0), alpha=alpha, seed=s), {"champion": 0.6, "challenger": 0.6}, rng, 300)
                is not None for s in range(runs))
    assert wrong / runs <= alpha + 3 * (alpha * (1 - alpha) / runs) ** 0.5


def test_the_server_takes_outcomes_and_reports_the_experiment(tmp_path):
    a, b = (load_policy(synthetic_policy(tmp_path / n, steps=s)) for n, s in (("a", 1), ("b", 2)))
    ab = ABTest(a, b, share=0.5, seed=0)
    server = PolicyServer(ab, token=TOKEN, port=0).start()
    try:
        client = PolicyClient(server.url, TOKEN)
        obs = observation(a, seed=0)
        for episode in range(4):
            client.reset(seed=episode)
            client.act(obs)

        def call(method, path, payload=None):
            req = urllib.request.Request(server.url + path, method=method, headers={"Authorization": f"Bearer {TOKEN}"},
                                         data=None if payload is None else json.dumps(payload).encode())
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    return r.status, json.loads(r.read())
            except urllib.error.HTTPError as e:
                return e.code, json.loads(e.read())

        code, state = call("POST", "/outcome", {"seed": 2, "success": True})
        assert code == 200 and sum(state["episodes"].values()) == 1
        assert call("POST", "/outcome", {"seed": 2, "success": True})[0] == 409
        assert call("POST", "/outcome", {"seed": "2", "success": True})[0] == 400
        code, state = call("GET", "/ab")
        assert code == 200 and state["decision"] is None and set(ab.assigned) == {0, 1, 2, 3}
    finally:
        server.stop()


def test_simulated_traffic_rolls_served_episodes_and_reports_them(tmp_path):
    """Traffic: each episode resets the server's policy with its scene seed (so the A/B test routes
    it), runs to the env's end on served actions, and posts the outcome."""
    from vlaforge.deploy.traffic import Traffic

    path = synthetic_policy(tmp_path / "a", steps=1)
    a, b = load_policy(path), load_policy(path)
    ab = ABTest(a, b, share=0.5, seed=0)
    server = PolicyServer(ab, token=TOKEN, port=0).start()
    try:
        traffic = Traffic(PolicyClient(server.url, TOKEN), horizon=8)
        out = traffic.run(range(1000, 1004), report=True)
        assert [o["task"] for o in out] == ["reach", "press_button"] * 2  # tasks[seed % 2]
        assert all(o["steps"] == 100 and not o["success"] for o in out)  # a 1-step policy never succeeds: max_steps
        assert set(ab.assigned) == set(range(1000, 1004)) and out[-1]["ab"]["episodes"] == ab.state()["episodes"]
        assert sum(out[-1]["ab"]["episodes"].values()) == 4
        with pytest.raises(ValueError, match="horizon must be in"):
            Traffic(PolicyClient(server.url, TOKEN), horizon=9)
    finally:
        server.stop()
