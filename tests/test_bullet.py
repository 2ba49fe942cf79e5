"""The PyBullet re-build of the tabletop tasks: same contract, same scenes, experts succeed."""

import numpy as np
import pytest

from vlaforge.config import ConfigError
from vlaforge.envs.config import DomainConfig, SensorRandomization
from vlaforge.envs.randomization import randomize
from vlaforge.envs.tabletop.env import TabletopEnv
from vlaforge.envs.tabletop.experts import Expert

pytest.importorskip("pybullet")
from vlaforge.envs.bullet import BulletTabletopEnv  # noqa: E402


def test_observation_contract_and_scene_match_mujoco():
    env, ref = BulletTabletopEnv("pick_place", cameras=("front", "top")), TabletopEnv("pick_place", cameras=("front", "top"))
    obs, info = env.reset(seed=7)
    ref_obs, ref_info = ref.reset(seed=7)
    assert obs["image"].shape == (2, 64, 64, 3) and obs["image"].dtype == np.uint8
    assert obs["state"].shape == (4,) and obs["state"].dtype == np.float32
    assert info["instruction"] == ref_info["instruction"] and env.episode == ref.episode
    np.testing.assert_allclose(obs["state"][:3], ref_obs["state"][:3], atol=2e-3)  # same start pose
    s, r = env.state(), ref.state()
    for name in s["objects"]:
        np.testing.assert_allclose(s["objects"][name][:2], r["objects"][name][:2], atol=2e-3)
    np.testing.assert_allclose(env.task_points(), ref.task_points(), atol=0.02)
    assert not np.array_equal(obs["image"], ref_obs["image"])  # another renderer
    assert env.render_views(128).shape == (2, 128, 128, 3)
    env.close()


@pytest.mark.parametrize("task", ["reach", "pick_place", "open_drawer", "press_button"])
def test_tabletop_experts_succeed_in_bullet(task):
    env = BulletTabletopEnv(task)
    expert = Expert(env)
    wins = 0
    for seed in range(4):
        env.reset(seed=seed)
        expert.reset()
        done = False
        while not done:
            _, _, terminated, truncated, info = env.step(expert.act())
            done = terminated or truncated
        wins += info["success"]
    assert wins >= 3
    env.close()


def test_randomization_on_bullet():
    env = randomize(BulletTabletopEnv("reach"), DomainConfig(sensor=SensorRandomization(latency=[1, 1])))
    env.reset(seed=0)
    _, _, _, _, info = env.step(np.array([1, 0, 0, -1], np.float32))
    np.testing.assert_array_equal(info["executed_action"], [0, 0, 0, -1])
    with pytest.raises(ConfigError, match="need a MuJoCo env"):
        randomize(BulletTabletopEnv("reach"), DomainConfig(preset="dr-visual"))
    with pytest.raises(KeyError, match="unknown tabletop-bullet task"):
        BulletTabletopEnv("juggle")
