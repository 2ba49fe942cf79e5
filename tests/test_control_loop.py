"""The real-time controller: async inference hides a slow policy, sync inference misses
deadlines, ensembling averages overlapping chunks; all with an artificially slow policy."""

import time

import numpy as np
import pytest

from vlaforge.deploy.control_loop import RealTimeController
from vlaforge.envs.tabletop.env import TabletopEnv


class SlowPolicy:
    """Chunks of 8 actions whose values tell which query produced them; each query sleeps."""

    def __init__(self, delay: float) -> None:
        self.delay, self.calls = delay, 0

    def reset(self, seed: int = 0) -> None:
        self.calls = 0

    def act(self, obs: dict) -> np.ndarray:
        time.sleep(self.delay)
        self.calls += 1
        chunk = np.zeros((8, 4), np.float32)
        chunk[:, 0] = 0.1 * self.calls
        chunk[:, 3] = -1
        return chunk


class RecordingEnv:
    """A stand-in env that records the actions it receives (the loop's timing is what is tested)."""

    def __init__(self, steps: int = 40) -> None:
        self.max_steps, self.actions, self.unwrapped = steps, [], self

    def reset(self, seed=None):
        self.actions = []
        return {"image": None}, {}

    def step(self, action):
        self.actions.append(np.array(action))
        done = len(self.actions) >= self.max_steps
        return {"image": None}, 0.0, False, done, {"success": False}


def test_async_inference_hides_a_slow_policy_that_sync_cannot():
    # 20 Hz (50 ms period); a query takes 100 ms; replanning after 4 of 8 actions leaves 200 ms.
    sync = RealTimeController(SlowPolicy(0.1), rate_hz=20, horizon=4, asynchronous=False).run_episode(RecordingEnv(), 0)
    asyn = RealTimeController(SlowPolicy(0.1), rate_hz=20, horizon=4, asynchronous=True).run_episode(RecordingEnv(), 0)
    assert sync.steps == asyn.steps == 40
    assert sync.deadline_misses >= 8  # every inline query (one per 4 ticks) is late
    assert asyn.deadline_misses <= 3  # only while the very first chunk is computed
    assert asyn.skipped_actions >= 2  # the ticks that passed during each background query
    assert np.percentile(asyn.inference_ms, 50) >= 95


def test_first_chunk_wait_holds_still_and_is_counted():
    env = RecordingEnv(steps=10)
    stats = RealTimeController(SlowPolicy(0.12), rate_hz=20, horizon=4, asynchronous=True).run_episode(env, 0)
    hold = np.array([0, 0, 0, -1], np.float32)
    waited = stats.deadline_misses
    assert waited >= 2 and all(np.array_equal(a, hold) for a in env.actions[:waited])
    assert env.actions[waited][0] == pytest.approx(0.1)


def test_temporal_ensembling_weights_older_chunks_more():
    ctl = RealTimeController(SlowPolicy(0.0), ensemble=0.5)
    chunks = [(0, np.full((8, 4), 1.0, np.float32)), (1, np.full((8, 4), 3.0, np.float32))]
    w = np.exp(-0.5 * np.arange(2))
    np.testing.assert_allclose(ctl._select(chunks, 2), np.full(4, (w[0] * 1 + w[1] * 3) / w.sum()), rtol=1e-6)
    np.testing.assert_allclose(ctl._select(chunks, 8), np.full(4, 3.0))  # only the newer chunk reaches tick 8
    assert ctl._select(chunks, 9) is None
    plain = RealTimeController(SlowPolicy(0.0))
    np.testing.assert_allclose(plain._select(chunks, 2), np.full(4, 3.0))  # newest chunk wins


def test_controller_runs_the_tabletop_sim_with_a_slow_policy_and_rejects_bad_settings():
    env = TabletopEnv("reach", max_steps=16)
    stats = RealTimeController(SlowPolicy(0.06), rate_hz=20, horizon=4).run_episode(env, seed=0)
    assert stats.steps == 16 and stats.queries >= 3 and stats.deadline_misses <= 3
    for kwargs, msg in (({"rate_hz": 0}, "rate_hz"), ({"horizon": 0}, "horizon"), ({"ensemble": -1.0}, "ensembling")):
        with pytest.raises(ValueError, match=msg):
            RealTimeController(SlowPolicy(0.0), **kwargs)
