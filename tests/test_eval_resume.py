"""``eval --resume``: a killed evaluation keeps its finished episodes and refuses to mix two runs."""

import dataclasses
import json

import pytest
from helpers import synthetic_policy

import vlaforge.eval.rollout as rollout
from vlaforge.eval.config import EvalConfig


class Killed(BaseException):
    pass


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    return synthetic_policy(tmp_path_factory.mktemp("evalresume"))


def config(policy, out, **kw):
    return EvalConfig(policy=policy, split="train", tasks=["reach"], episodes=3, workers=1, max_steps=15,
                      output_dir=str(out), **kw)


def outcomes(results):
    return [(e["task"], e["seed"], e["success"], e["length"]) for e in results["episodes_detail"]]


def test_a_killed_evaluation_resumes_to_the_uninterrupted_result(policy, tmp_path, monkeypatch):
    reference = rollout.evaluate(config(policy, tmp_path / "ref"), show_progress=False)
    out = tmp_path / "killed"
    rollout.evaluate(config(policy, out), show_progress=False)  # an old, finished evaluation in the same place
    real, calls = rollout.run_episode, []

    def dies_on_the_third(job):
        calls.append(job)
        if len(calls) == 3:
            raise Killed
        return real(job)

    monkeypatch.setattr(rollout, "run_episode", dies_on_the_third)
    with pytest.raises(Killed):
        rollout.evaluate(config(policy, out), show_progress=False)
    monkeypatch.undo()
    assert not (out / "results.json").exists(), "config.yaml of the killed run beside results of the old one"
    with (out / "episodes.jsonl").open("a") as f:
        f.write('{"task": "reach", "se')  # killed mid-line
    with pytest.warns(UserWarning, match="dropping a torn last line"):
        resumed = rollout.evaluate(config(policy, out, resume=True), show_progress=False)
    assert resumed["resumed_episodes"] == 2 and outcomes(resumed) == outcomes(reference)
    assert len((out / "episodes.jsonl").read_text().splitlines()) == 1 + 3
    assert json.loads((out / "results.json").read_text())["success_rate"] == reference["success_rate"]


def test_resume_refuses_another_evaluation(policy, tmp_path):
    rollout.evaluate(config(policy, tmp_path), show_progress=False)
    before = (tmp_path / "episodes.jsonl").read_text()
    with pytest.raises(ValueError, match=r"--resume would mix two evaluations .*env: .*max_steps.*15.*20"):
        rollout.evaluate(dataclasses.replace(config(policy, tmp_path, resume=True), max_steps=20), show_progress=False)
    assert (tmp_path / "episodes.jsonl").read_text() == before
