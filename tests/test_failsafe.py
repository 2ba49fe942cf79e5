"""Fail-safes: the OOD detector flags corrupted camera frames and not clean ones; the watchdog
catches a slow policy; OOD observations trigger retreat, then a latched emergency stop."""

import time

import numpy as np
import pytest
from helpers import train_tiny_policy

from vlaforge.envs.tabletop.env import TabletopEnv
from vlaforge.runtime.policy import load_policy
from vlaforge.safety.ood import OODDetector
from vlaforge.safety.supervisor import HOLD, RETREAT, Supervisor


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    root = tmp_path_factory.mktemp("ood")
    policy = load_policy(train_tiny_policy(root, episodes_per_task=6, steps=30))
    return policy, OODDetector.fit(policy, str(root / "data"), samples=400), root


def clean_observations(n: int = 12) -> list[dict]:
    out = []
    for i in range(n):
        env = TabletopEnv(["reach", "press_button"][i % 2])
        obs, _ = env.reset(seed=10**9 + i)
        out.append(obs)
    return out


def corrupt(obs: dict, kind: str, rng: np.random.Generator) -> dict:
    image = obs["image"].astype(float)
    if kind == "noise":
        image = image + rng.normal(0, 70, image.shape)
    elif kind == "blackout":
        image = image * 0
    elif kind == "occlusion":
        image[:, 8:56, 8:56] = 128
    elif kind == "inverted":
        image = 255 - image
    return {**obs, "image": np.clip(image, 0, 255).astype(np.uint8)}


def test_ood_detector_flags_corruption_not_clean_frames(fitted, tmp_path):
    policy, detector, _ = fitted
    clean = clean_observations()
    scores = [detector.score(policy, o) for o in clean]
    assert sum(s > 1 for s in scores) <= 2  # the threshold is the held-out 99.5% quantile of few episodes
    rng = np.random.default_rng(0)
    for kind in ("noise", "blackout", "occlusion", "inverted"):
        flagged = [detector.score(policy, corrupt(o, kind, rng)) > 1 for o in clean[:6]]
        assert all(flagged), kind
    detector.save(tmp_path / "ood.safetensors")
    again = OODDetector.load(tmp_path / "ood.safetensors")
    assert again.score(policy, clean[0]) == pytest.approx(scores[0])


def test_ood_observations_retreat_then_latch_the_emergency_stop(fitted):
    policy, detector, _ = fitted
    sup = Supervisor(policy, ood=detector, recovery_steps=4, max_recoveries=2)
    sup.reset()
    obs = clean_observations(1)[0]
    assert sup.act(obs).shape == (policy.cfg.chunk_size, 4)
    bad = corrupt(obs, "blackout", np.random.default_rng(0))
    for _ in range(2):
        np.testing.assert_array_equal(sup.act(bad), np.repeat(RETREAT[None], 4, 0))
    np.testing.assert_array_equal(sup.act(bad)[0], HOLD)  # third strike: latched
    assert sup.stopped and np.array_equal(sup.act(obs)[0], HOLD)  # stays stopped on clean frames
    sup.release()
    assert not np.array_equal(sup.act(obs)[0], HOLD)
    assert [e["kind"] for e in sup.events] == ["ood", "ood", "ood", "estop", "release"]


class Slow:
    cfg = type("cfg", (), {"chunk_size": 8})

    def __init__(self, delay: float) -> None:
        self.delay = delay

    def reset(self, seed: int = 0) -> None:
        pass

    def act(self, obs):
        time.sleep(self.delay)
        return np.ones((8, 4), np.float32)


def test_watchdog_triggers_on_a_slow_policy():
    sup = Supervisor(Slow(0.3), budget_ms=50)
    chunk = sup.act({})
    np.testing.assert_array_equal(chunk, np.repeat(HOLD[None], 8, 0))
    assert sup.events[-1]["kind"] == "watchdog"
    np.testing.assert_array_equal(sup.act({})[0], HOLD)  # the late inference is still running
    time.sleep(0.35)
    fast = Supervisor(Slow(0.0), budget_ms=200)
    np.testing.assert_array_equal(fast.act({}), np.ones((8, 4)))
    assert fast.events == []
    with pytest.raises(ValueError, match="budget_ms"):
        Supervisor(Slow(0.0), budget_ms=0)
