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


def test_rtc_weights_follow_the_papers_soft_mask():
    from vlaforge.runtime.policy import rtc_weights

    w = rtc_weights(8, delay=2, overlap=5)
    c = np.array([0.75, 0.5, 0.25])
    np.testing.assert_allclose(w, [1, 1, *(c * np.expm1(c) / np.expm1(1)), 0, 0, 0], atol=1e-6)
    assert rtc_weights(4, delay=6, overlap=2).tolist() == [1, 1, 1, 1]
    assert rtc_weights(4, delay=0, overlap=0).tolist() == [0, 0, 0, 0]


def test_smoothness_is_measured_at_chunk_switches():
    from vlaforge.deploy.control_loop import smoothness

    actions = np.zeros((6, 2))
    actions[3:, 0] = 1.0  # one jump, at tick 3, where a new chunk took over
    s = smoothness(actions, [3])
    assert s["jump_at_switch"] == 1 and s["jump_elsewhere"] == 0
    assert s["jerk_at_switch"] == 1 and s["jerk_elsewhere"] == pytest.approx(1 / 3)  # ticks 2, 4 (|1 - 2 + 0|), 5


class InpaintingPolicy(SlowPolicy):
    """SlowPolicy that also answers act_inpainted, recording what the controller committed."""

    def __init__(self, delay: float) -> None:
        super().__init__(delay)
        self.inpainted: list[tuple[np.ndarray, int]] = []

    def act_inpainted(self, obs: dict, committed: np.ndarray, delay: int) -> np.ndarray:
        self.inpainted.append((np.array(committed), delay))
        return self.act(obs)


def test_rtc_controller_commits_the_current_chunks_remaining_actions_and_the_delay():
    """A 100 ms policy at 20 Hz: each new chunk is asked to continue the current chunk's actions
    from the query's tick on, with a delay of 2-3 ticks (the query's latency over the period)."""
    policy = InpaintingPolicy(0.1)
    stats = RealTimeController(policy, rate_hz=20, horizon=4, asynchronous=True, rtc=True).run_episode(RecordingEnv(), 0)
    assert stats.queries >= 5 and len(policy.inpainted) == stats.queries - 1  # every query but the first
    for committed, delay in policy.inpainted:
        assert committed.shape[1] == 4 and 1 <= len(committed) <= 8 and 2 <= delay <= 3
        assert np.all(committed[:, 0] == committed[0, 0])  # slices of one chunk, whose values name its query
    with pytest.raises(ValueError, match="alternatives"):
        RealTimeController(policy, rtc=True, ensemble=0.1)


def test_inpainted_chunk_holds_the_committed_actions(tmp_path):
    """A flow policy: the first `delay` actions of an inpainted chunk are the committed ones, the
    steps past the overlap are its own; a regression policy refuses."""
    from helpers import write_dataset

    from vlaforge.deploy.latency import observation
    from vlaforge.models.config import PolicyConfig
    from vlaforge.runtime.policy import load_policy
    from vlaforge.train.config import TrainConfig
    from vlaforge.train.trainer import train

    write_dataset(tmp_path / "data", episodes=2)
    policies = {}
    for head in ("flow", "regression"):
        policies[head] = load_policy(train(TrainConfig(
            dataset=str(tmp_path / "data"), output_dir=str(tmp_path / head), steps=2, batch_size=4, tracking="none",
            policy=PolicyConfig(d_model=32, n_layers=1, n_heads=2, vision_channels=[8, 8], head=head, sample_steps=4)),
            show_progress=False))
    flow, obs = policies["flow"], observation(policies["flow"])
    committed = np.linspace(-0.5, 0.5, 5 * 4, dtype=np.float32).reshape(5, 4)
    chunk = flow.act_inpainted(obs, committed, delay=2)
    np.testing.assert_allclose(chunk[:2], committed[:2], atol=1e-5)
    flow.reset()
    free = flow.act(obs)
    assert np.abs(free[:2] - committed[:2]).max() > 1e-3  # without inpainting they would differ
    with pytest.raises(ValueError, match="real-time chunking inpaints a sampling head"):
        policies["regression"].act_inpainted(obs, committed, delay=2)
