"""The barrier filter keeps the robot in its safe set, leaves safe actions alone, stops on bad
actions, and logs every intervention."""

import gymnasium as gym
import numpy as np
import pytest

from vlaforge.envs.tabletop.env import ROBOT, TabletopEnv
from vlaforge.safety.cbf import BarrierQP
from vlaforge.safety.config import SafetyConfig
from vlaforge.safety.filter import SafetyFilter

CFG = SafetyConfig(keep_out=[[0.0, -0.05, 0.08, 0.05], [0.12, 0.05, 0.05, 0.04]])


def violations(p: np.ndarray, cfg: SafetyConfig) -> bool:
    lo, hi = np.array(cfg.workspace_lo), np.array(cfg.workspace_hi)
    outside_box = np.any(p < lo) or np.any(p > hi)
    in_sphere = any(np.linalg.norm(p - np.array(s[:3])) < s[3] for s in cfg.keep_out)
    return bool(outside_box or in_sphere)


def adversarial_rollouts(env, episodes: int, seed: int = 0) -> int:
    """Steps spent outside the safe set under actions that push hard in drifting directions."""
    rng = np.random.default_rng(seed)
    bad = 0
    for ep in range(episodes):
        env.reset(seed=ep)
        direction = rng.uniform(-1, 1, 4)
        for _ in range(100):
            if rng.random() < 0.05:
                direction = rng.uniform(-1, 1, 4)
            env.step(np.clip(direction + rng.normal(0, 0.3, 4), -1, 1).astype(np.float32))
            bad += violations(env.unwrapped.ee_pos(), CFG)
    return bad


def test_filter_never_leaves_the_safe_set():
    assert adversarial_rollouts(TabletopEnv("reach", max_steps=100), 3) > 50  # unfiltered, it does leave
    env = SafetyFilter(TabletopEnv("reach", max_steps=100), CFG)
    assert adversarial_rollouts(env, 12) == 0
    assert env.events and {e["kind"] for e in env.events} <= {"modified", "infeasible"}
    assert np.percentile(env.filter_ms, 50) < 20


def test_safe_actions_pass_unchanged():
    env = SafetyFilter(TabletopEnv("reach", max_steps=30), CFG)
    env.reset(seed=3)
    rng = np.random.default_rng(1)
    for _ in range(20):
        a = np.r_[rng.uniform(-0.05, 0.05, 3), -1.0].astype(np.float32)  # slow moves, gripper open
        _, _, _, _, info = env.step(a)
        np.testing.assert_array_equal(info["safety"]["action"], a)
    assert env.events == []


def test_invalid_actions_stop_the_robot_and_are_logged():
    env = SafetyFilter(TabletopEnv("reach", max_steps=30), CFG)
    env.reset(seed=0)
    before = env.unwrapped.ee_pos()
    for bad in (np.array([np.nan, 0, 0, 0], np.float32), np.array([np.inf, 1, 0, 0], np.float32), np.zeros(3)):
        _, _, _, _, info = env.step(bad)
        np.testing.assert_array_equal(info["safety"]["action"][:3], 0.0)
    assert [e["kind"] for e in env.events] == ["invalid_action"] * 3
    assert np.linalg.norm(env.unwrapped.ee_pos() - before) < 0.01


def test_speed_acceleration_and_grip_force_limits():
    robot = ROBOT
    cfg = SafetyConfig(max_speed=0.2, max_accel=4.0, max_grip_force=8.0)
    qp = BarrierQP(cfg, robot)
    mid = np.array([0.0, 0.0, 0.12])
    safe, status = qp.filter(np.array([1.0, -1.0, 1.0, 1.0]), mid, opening=1.0, previous=np.zeros(4))
    speed = cfg.max_speed * robot.dt / robot.max_delta
    accel = cfg.max_accel * robot.dt ** 2 / robot.max_delta
    assert status == "modified"
    assert np.all(np.abs(safe[:3]) <= min(speed, accel) + 1e-6)
    squeeze = cfg.max_grip_force / robot.finger_gain / robot.finger_open
    assert safe[3] <= 1 - 2 * (1 - squeeze) + 1e-6  # cannot close further than the force limit allows


def test_infeasible_limits_fall_back_to_the_safe_stop():
    qp = BarrierQP(SafetyConfig(max_accel=0.5), ROBOT)
    # Moving fast out past the upper wall: the barrier wants a reversal the acceleration limit forbids.
    safe, status = qp.filter(np.array([1.0, 0, 0, -1]), np.array([0.25, 0.0, 0.1]), 1.0, np.array([1.0, 0, 0, -1]))
    assert status == "infeasible" and np.array_equal(safe[:3], np.zeros(3))


@pytest.mark.parametrize("bad, message", [
    (SafetyConfig(gamma=0.0), "gamma"),
    (SafetyConfig(keep_out=[[0, 0, 0]]), "keep_out"),
    (SafetyConfig(workspace_lo=[0.1, 0, 0], workspace_hi=[0.0, 0.1, 0.1]), "workspace"),
    (SafetyConfig(max_speed=-1.0), "max_speed"),
])
def test_bad_limits_fail_clearly(bad, message):
    with pytest.raises(ValueError, match=message):
        SafetyFilter(TabletopEnv("reach"), bad)


def test_only_robot_envs_get_a_safety_filter():
    """Suites declare their robot through their env (``RobotEnv``); one that does not is refused
    by name instead of being guarded with the tabletop gripper's limits."""
    from vlaforge.envs.base import RobotEnv

    assert isinstance(TabletopEnv("reach").unwrapped, RobotEnv)

    class NoRobot(gym.Env):
        observation_space = gym.spaces.Box(-1, 1, (4,))
        action_space = gym.spaces.Box(-1, 1, (4,))

    with pytest.raises(ValueError, match="NoRobot is not one"):
        SafetyFilter(NoRobot(), CFG)
