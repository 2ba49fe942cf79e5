"""The Push-T suite: what an action does, what the images show, the scripted pusher on known
scenes, and collect -> train -> eval end to end."""

import numpy as np
import pytest
from helpers import tiny_train_and_eval

pytest.importorskip("gym_pusht", reason="the pusht suite needs gym-pusht (docs/pusht.md)")

from vlaforge.cli import main  # noqa: E402
from vlaforge.envs import get_suite  # noqa: E402
from vlaforge.envs.config import EnvConfig  # noqa: E402
from vlaforge.envs.pusht.env import ACTION_SCALE, GOAL_POSE  # noqa: E402
from vlaforge.envs.pusht.expert import pose_error  # noqa: E402
from vlaforge.seeds import EVAL_SEEDS  # noqa: E402

SUITE = get_suite("pusht")


def make(split: str = "train", size: int = 64):
    return SUITE.make_env("push_t", split, SUITE.resolve(EnvConfig(suite="pusht", image_size=size)))


def test_an_action_moves_the_agent_toward_its_relative_target_and_zero_holds_it():
    env = make()
    env.reset(seed=1)
    env.sim._set_state([100.0, 100.0, 400.0, 400.0, 0.0])  # agent far from the block
    start = env.agent_position()
    env.step(np.zeros(2, np.float32))
    np.testing.assert_allclose(env.agent_position(), start, atol=1e-6)
    for _ in range(5):  # each step aims ACTION_SCALE px right of where the agent is; the PD controller lags
        before = env.agent_position()
        env.step(np.array([1.0, 0.0], np.float32))
        moved = env.agent_position() - before
        assert 0.2 * ACTION_SCALE < moved[0] < ACTION_SCALE and abs(moved[1]) < 1e-6, moved
    with pytest.raises(ValueError, match=r"action must have shape \(2,\)"):
        env.step(np.zeros(4, np.float32))


def test_the_top_view_shows_the_agent_and_the_target_where_the_task_points_say():
    env = make(size=64)
    env.reset(seed=0)
    env.sim._set_state([96.0, 400.0, 400.0, 120.0, 0.0])
    image, points = env.render_views()[0].astype(int), env.task_points()
    np.testing.assert_allclose(points[:6], [*env.block_pose()[:2], 0.0, 256.0, 256.0, 0.0], rtol=1e-6)
    u, v = int(96 * 64 / 512), int(400 * 64 / 512)  # the agent: column from x, row from y
    r, g, b = image[v, u]
    assert b > 200 and r < 120 and g < 150, image[v, u]  # the agent's blue
    gu, gv = points[8:10].astype(int)  # the target's pixel: inside the green target outline
    assert (gu, gv) == (32, 32) and np.abs(image[gv + 3, gu] - (144, 238, 144)).sum() < 40  # LightGreen


def test_the_scripted_pusher_solves_known_scenes_and_the_error_measure_is_zero_at_the_target():
    assert pose_error(np.array(GOAL_POSE)) == 0
    assert pose_error(np.array(GOAL_POSE) + [10.0, 0, 0]) == pytest.approx(10.0)
    env = make()
    expert = SUITE.make_expert(env)
    for seed in (0, 2, 3):  # solved in 161, 169 and 181 steps when this test was written
        env.reset(seed=seed)
        expert.reset()
        done = truncated = False
        while not (done or truncated):
            _, _, done, truncated, info = env.step(expert.act())
        assert info["success"] and info["coverage"] > 0.95 and env.steps < 300, (seed, env.steps, info["coverage"])


def test_only_the_held_out_split_uses_the_held_out_wordings():
    seen = {make("train").reset(seed=s)[0]["instruction"] for s in range(20)}
    held = {make("unseen_paraphrase").reset(seed=s)[0]["instruction"] for s in range(20)}
    assert len(seen) == 3 and len(held) == 2 and not seen & held


def test_collect_train_eval_end_to_end(tmp_path):
    data, run = tmp_path / "data", tmp_path / "run"
    assert main(["collect", "--env.suite=pusht", "--episodes_per_task=1", "--noise=0.1", "--workers=1",
                 f"--output={data}"]) == 0
    results = tiny_train_and_eval(data, run, max_steps=3)
    assert results["suite"] == "pusht" and list(results["per_task"]) == ["push_t"]
    assert results["episodes_detail"][0]["seed"] == EVAL_SEEDS
