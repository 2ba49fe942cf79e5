import gymnasium as gym
import numpy as np
import pytest

import vlaforge.envs
from vlaforge.envs.tabletop import TabletopEnv, gym_id
from vlaforge.envs.tabletop.tasks import FAMILIES, HELD_OUT_PAIRS, TEMPLATES, sample_episode


def rollout(env, seed, steps=15):
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(0)
    out = [obs]
    for _ in range(steps):
        obs, *_ = env.step(rng.uniform(-1, 1, 4).astype(np.float32))
        out.append(obs)
    return out


def test_same_seed_same_episode():
    a, b = TabletopEnv("pick_place"), TabletopEnv("pick_place")
    ra, rb = rollout(a, 7), rollout(b, 7)
    assert ra[0]["instruction"] == rb[0]["instruction"]
    for oa, ob in zip(ra, rb):
        np.testing.assert_array_equal(oa["image"], ob["image"])
        np.testing.assert_array_equal(oa["state"], ob["state"])


def test_different_seeds_differ():
    env = TabletopEnv("push")
    o1, _ = env.reset(seed=1)
    o2, _ = env.reset(seed=2)
    assert not np.array_equal(o1["image"], o2["image"])


@pytest.mark.parametrize("size,cams", [(64, ("front",)), (128, ("front", "top"))])
def test_observation_contract(size, cams):
    env = TabletopEnv("reach", image_size=size, cameras=cams)
    obs, info = env.reset(seed=0)
    assert obs["image"].shape == (len(cams), size, size, 3) and obs["image"].dtype == np.uint8
    assert obs["state"].shape == (4,) and obs["state"].dtype == np.float32
    assert env.observation_space["image"].contains(obs["image"])
    assert isinstance(obs["instruction"], str) and obs["instruction"]
    assert obs["image"].std() > 5  # a rendered scene, not a blank frame


def test_gym_ids_registered():
    env = gym.make(gym_id("open_drawer"))
    obs, _ = env.reset(seed=3)
    assert "drawer" in obs["instruction"]
    env.close()
    assert gym_id("put_in_bowl") == "vlaforge/Tabletop-PutInBowl-v0"


def test_bad_inputs():
    with pytest.raises(KeyError, match="unknown tabletop task 'fly'"):
        TabletopEnv("fly")
    with pytest.raises(KeyError, match="unknown split"):
        TabletopEnv("reach", split="test")
    with pytest.raises(ValueError, match="image_size"):
        TabletopEnv("reach", image_size=50)
    env = TabletopEnv("reach")
    env.reset(seed=0)
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(3))
    with pytest.raises(ValueError, match="NaN"):
        env.step(np.array([0, np.nan, 0, 0]))


def test_gripper_moves_by_action():
    env = TabletopEnv("reach")
    obs, _ = env.reset(seed=0)
    for _ in range(5):
        obs2, *_ = env.step(np.array([1.0, 0, 0, -1], np.float32))
    # 1.0 commands 2 cm per step; the position servo's lag leaves ~1.6 cm in free motion.
    per_step = (obs2["state"][0] - obs["state"][0]) / 5
    assert 0.013 < per_step <= 0.02
    assert abs(obs2["state"][1] - obs["state"][1]) < 0.002


def test_splits_hold_out_pairs_and_paraphrases():
    rng = np.random.default_rng(0)
    for family in FAMILIES:
        train_t, held_t = TEMPLATES[family]
        for _ in range(20):
            tr = sample_episode(family, "train", rng)
            un = sample_episode(family, "unseen", rng)
            assert tuple(tr.objects[0][1:]) not in HELD_OUT_PAIRS
            assert all(tuple(o[1:]) not in HELD_OUT_PAIRS for o in tr.objects)
            if family not in ("open_drawer", "press_button"):
                assert tuple(un.objects[0][1:]) in HELD_OUT_PAIRS
                assert f"{un.objects[0][1]} {un.objects[0][2]}" in un.instruction
            assert any(_matches(tr.instruction, t) for t in train_t)
            assert any(_matches(un.instruction, t) for t in held_t)


def _matches(text, template):
    words = [w for w in template.split() if "{" not in w]
    return all(w in text.split() for w in words)


@pytest.mark.parametrize("name", vlaforge.envs.SUITES.names())
def test_every_registered_suite_keeps_the_env_contract(name):
    """Reset and one step of each registered suite's first task: the observation contract, a
    success flag and the instruction in info; an env that claims a robot is a RobotEnv."""
    from vlaforge.config import from_dict
    from vlaforge.envs.base import RobotEnv, check_observation
    from vlaforge.envs.config import EnvConfig

    suite = vlaforge.envs.get_suite(name)
    if name == "tabletop-bullet":
        pytest.importorskip("pybullet")
    if name == "pusht":
        pytest.importorskip("gym_pusht", reason="the pusht suite needs gym-pusht (docs/pusht.md)")
    if name.startswith("libero-"):
        from vlaforge.envs.libero.env import assets_root, package_root

        try:
            package_root(), assets_root()
        except ImportError as e:
            pytest.skip(f"LIBERO is not installed: {e}")
    cfg = suite.resolve(from_dict(EnvConfig, {"suite": name}))
    split = "train" if "train" in suite.splits else suite.splits[0]
    task = suite.check([], split)[0]
    env = suite.make_env(task, split, cfg)
    try:
        obs, _ = env.reset(seed=0)
        size = cfg.image_size
        check_observation(obs, (len(cfg.cameras), size, size, 3), len(obs["state"]))
        obs, _, _, _, info = env.step(np.zeros(env.action_space.shape, np.float32))
        assert np.all(np.isfinite(obs["state"])) and "success" in info and info["instruction"] == obs["instruction"]
        assert isinstance(env.unwrapped, RobotEnv) == hasattr(env.unwrapped, "robot")
    finally:
        env.close()
