"""Meta-World adapter: instructions, task sets, observation contract, experts, end to end."""

import json

import numpy as np
import pytest
from helpers import tiny_train_and_eval

from vlaforge.cli import main
from vlaforge.envs import get_suite
from vlaforge.envs.config import EnvConfig
from vlaforge.envs.metaworld import BENCHMARKS, DIFFICULTY, INSTRUCTIONS, TASKS

metaworld = pytest.importorskip("metaworld")


def test_every_task_has_distinct_instructions():
    names = sorted(n[: -len("-v3")] for n in metaworld.env_dict.ALL_V3_ENVIRONMENTS)
    assert sorted(TASKS) == names and len(names) == 50
    for task, (train, held_out) in INSTRUCTIONS.items():
        assert len(set(train)) == 3 and held_out not in train, task
        assert all(s and s == s.lower().strip() for s in (*train, held_out)), task


def test_difficulty_groups_partition_the_50_tasks():
    assert {g: len(t) for g, t in DIFFICULTY.items()} == {"easy": 28, "medium": 11, "hard": 6, "very_hard": 5}
    assert sorted(t for group in DIFFICULTY.values() for t in group) == sorted(TASKS)


def test_benchmark_task_sets_match_the_package():
    strip = lambda names: sorted(n[: -len("-v3")] for n in names)  # noqa: E731
    env_dict = metaworld.env_dict
    assert sorted(BENCHMARKS["mt10"]["train"]) == strip(env_dict.MT10_V3)
    for name, sets in (("ml10", env_dict.ML10_V3), ("ml45", env_dict.ML45_V3)):
        assert sorted(BENCHMARKS[name]["train"]) == strip(sets["train"])
        assert sorted(BENCHMARKS[name]["test"]) == strip(sets["test"])


def test_splits_select_tasks():
    ml10 = get_suite("metaworld-ml10")
    assert ml10.check([], "test") == ["drawer-open", "door-close", "shelf-place", "sweep-into", "lever-pull"]
    assert len(ml10.check([], "train")) == 10
    mt50 = get_suite("metaworld-mt50")
    assert len(mt50.check([], "very_hard")) == 5 and len(mt50.check([], "train")) == 50
    with pytest.raises(KeyError, match="unknown task 'juggle'"):
        mt50.check(["juggle"], "train")
    with pytest.raises(KeyError, match="unknown split 'test'"):
        mt50.check([], "test")


@pytest.mark.parametrize("size", [64, 128])
def test_observation_contract_and_determinism(size):
    suite = get_suite("metaworld-mt10")
    env = suite.make_env("pick-place", "train", suite.resolve(EnvConfig(suite=suite.name, image_size=size)))
    a, _ = env.reset(seed=3)
    assert a["image"].shape == (1, size, size, 3) and a["image"].dtype == np.uint8
    assert a["state"].shape == (4,) and a["state"].dtype == np.float32
    assert a["instruction"] in INSTRUCTIONS["pick-place"][0]
    assert a["image"].std() > 10  # a rendered scene, not a blank frame
    points = env.task_points()
    assert points.shape == (10,) and np.all(np.abs(points[6:]) <= 1)  # target and goal are in view
    b, _ = env.reset(seed=3)
    c, _ = env.reset(seed=4)
    np.testing.assert_array_equal(a["image"], b["image"])
    assert not np.array_equal(a["image"], c["image"])  # positions are redrawn per seed
    obs, reward, terminated, truncated, info = env.step(np.zeros(4, np.float32))
    assert obs["image"].shape == (1, size, size, 3) and set(info) >= {"success", "instruction"}
    with pytest.raises(ValueError, match="NaN"):
        env.step(np.array([np.nan, 0, 0, 0]))
    env.close()


def test_unknown_names_fail_clearly():
    suite = get_suite("metaworld-mt10")
    with pytest.raises(KeyError, match="unknown Meta-World task 'juggle-v3'"):
        suite.make_env("juggle-v3", "train", EnvConfig(suite=suite.name))
    with pytest.raises(KeyError, match="unknown camera 'wrist'"):
        suite.make_env("reach", "train", EnvConfig(suite=suite.name, cameras=["wrist"]))


def test_held_out_paraphrase():
    suite = get_suite("metaworld-mt10")
    env = suite.make_env("drawer-open", "unseen_paraphrase", EnvConfig(suite=suite.name))
    obs, _ = env.reset(seed=0)
    assert obs["instruction"] == INSTRUCTIONS["drawer-open"][1]


def _expert_successes(tasks, seeds):
    suite = get_suite("metaworld-mt10")
    wins = {}
    for task in tasks:
        env = suite.make_env(task, "train", suite.resolve(EnvConfig(suite=suite.name)))
        expert = suite.make_expert(env)
        wins[task] = 0
        for seed in seeds:
            env.reset(seed=seed)
            done = False
            while not done:
                _, _, terminated, truncated, info = env.step(expert.act())
                done = terminated or truncated
            wins[task] += info["success"]
        env.close()
    return wins


def test_experts_succeed_on_a_few_tasks():
    wins = _expert_successes(["reach", "drawer-close", "button-press-topdown"], range(2))
    assert all(w == 2 for w in wins.values()), wins


@pytest.mark.slow
def test_experts_succeed_on_mt10():
    wins = _expert_successes(BENCHMARKS["mt10"]["train"], range(10))
    assert all(w >= 9 for w in wins.values()), wins


def test_collect_train_eval_end_to_end(tmp_path):
    data, run = tmp_path / "data", tmp_path / "run"
    assert main(["collect", "--env.suite=metaworld-mt10", "--env.tasks=[reach,drawer-close]", "--episodes_per_task=2",
                 "--workers=1", f"--output={data}"]) == 0
    info = json.loads((data / "meta/info.json").read_text())
    assert info["features"]["observation.images.corner2"]["shape"][:2] == [64, 64]
    assert "corner2.goal_v" in info["features"]["observation.environment_state"]["names"]
    results = tiny_train_and_eval(data, run, max_steps=10)
    assert results["suite"] == "metaworld-mt10" and sorted(results["per_task"]) == ["drawer-close", "reach"]
