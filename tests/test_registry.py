"""The policy registry on MLflow's model registry (SQLite, no server) and the promotion gate: its
anytime-valid non-inferiority test on planted outcomes, promotion, refusal and rollback."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import synthetic_policy

pytest.importorskip("mlflow", reason="MLflow is not installed (pip install 'vlaforge[mlops]'): registry untested")
pytest.importorskip("sqlalchemy", reason="SQLAlchemy is not installed (pip install 'vlaforge[mlops]'): registry untested")

import vlaforge  # noqa: E402
from vlaforge.cli import main  # noqa: E402
from vlaforge.eval.config import RegistryConfig  # noqa: E402
from vlaforge.eval.gate import paired_rounds, promote  # noqa: E402
from vlaforge.eval.stats import noninferiority_test  # noqa: E402
from vlaforge.runtime.registry import PolicyRegistry, parse_ref  # noqa: E402


def test_noninferiority_on_planted_outcomes():
    same = noninferiority_test([True] * 150, [True] * 150, margin=0.05)
    assert same["decision"] == "non-inferior" and 50 < same["stopped_at"] < 150
    worse = noninferiority_test([False] * 40, [True] * 40, margin=0.05)
    assert worse["decision"] == "inferior" and worse["stopped_at"] <= 10
    few = noninferiority_test([True, False, True], [True, True, False], margin=0.05)
    assert few["decision"] == "undecided" and few["stopped_at"] is None


def test_noninferiority_keeps_its_error_rate_at_the_margin():
    """A challenger exactly ``margin`` worse (the null's boundary), checked after every pair:
    accepted in at most alpha of the runs (plus three standard errors of the simulation)."""
    rng = np.random.default_rng(0)
    runs, n, margin, alpha = 600, 200, 0.1, 0.05
    accepted = 0
    for _ in range(runs):
        u = rng.random(n)
        x = np.where(u < 0.2, -1, np.where(u < 0.3, 1, 0))  # P(-1) - P(+1) = margin
        base = rng.random(n) < 0.5
        challenger = np.where(x == 1, True, np.where(x == -1, False, base))
        champion = np.where(x == 1, False, np.where(x == -1, True, base))
        accepted += noninferiority_test(list(challenger), list(champion), margin, alpha)["decision"] == "non-inferior"
    assert accepted / runs <= alpha + 3 * (alpha * (1 - alpha) / runs) ** 0.5


@pytest.fixture(scope="module")
def policies(tmp_path_factory):
    root = tmp_path_factory.mktemp("registry")
    return [synthetic_policy(root / f"p{i}", steps=1 + i) for i in range(3)]


@pytest.fixture
def reg(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'reg.db'}"
    monkeypatch.setenv("VLAFORGE_REGISTRY", uri)
    monkeypatch.chdir(tmp_path)
    return PolicyRegistry()


def results(tmp_path, rate):
    path = tmp_path / f"results_{rate}.json"
    path.write_text(json.dumps({"success_rate": rate, "episodes": 40, "ci95": [rate - 0.1, rate + 0.1], "split": "train"}))
    return str(path)


def test_register_keeps_a_copy_with_its_evidence_and_loads_by_alias(reg, policies, tmp_path):
    v = reg.register(policies[0], "arm", evaluation=results(tmp_path, 0.7), alias="challenger")
    assert (v["version"], v["aliases"]) == (1, ["challenger"])
    run_info = json.loads((Path(policies[0]).parent / "run_info.json").read_text())
    assert v["tags"]["vlaforge.dataset_hash"] == run_info["dataset_hash"] and v["tags"]["vlaforge.commit"] == run_info["commit"]
    assert v["tags"]["vlaforge.success_rate"] == "0.700000"
    copy = reg.local_path("arm@challenger")
    assert copy.resolve() != Path(policies[0]).resolve()
    assert (copy / "model.safetensors").read_bytes() == (Path(policies[0]) / "model.safetensors").read_bytes()
    assert vlaforge.load_policy("models:/arm@challenger").meta["tasks"] == ["reach", "press_button"]
    with pytest.raises(KeyError, match="no registered version 'arm@champion'"):
        reg.local_path("arm@champion")
    with pytest.raises(ValueError, match="must look like NAME@ALIAS or NAME/VERSION"):
        parse_ref("arm:latest")


def test_a_corrupt_policy_is_refused_before_anything_is_registered(reg, policies, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(policies[1], bad)
    with open(bad / "model.safetensors", "r+b") as f:
        f.seek(100)
        f.write(b"\x00\x01\x02")
    with pytest.raises(ValueError, match="does not match its sha256"):
        reg.register(bad, "arm")
    assert reg.names() == []


def planted(decision):
    def gate(champion, challenger, cfg, out):
        return {"decision": decision, "pairs": 40, "e_noninferior": 1.0, "e_inferior": 1.0, "pairs_detail": []}
    return gate


def test_promote_refuse_and_roll_back(reg, policies, tmp_path):
    for p in policies:
        reg.register(p, "arm")
    cfg = RegistryConfig(action="promote", name="arm", output_dir=str(tmp_path / "gates"))
    first = promote(RegistryConfig(**{**cfg.__dict__, "version": 1}), planted("inferior"))
    assert first["decision"] == "promoted" and "no champion" in first["reason"] and reg.aliases("arm")["champion"] == 1
    refused = promote(RegistryConfig(**{**cfg.__dict__, "version": 2}), planted("inferior"))
    assert refused["decision"] == "refused" and reg.aliases("arm")["champion"] == 1
    assert json.loads(reg.show("arm/2")["tags"]["vlaforge.gate"])["decision"] == "refused"
    undecided = promote(RegistryConfig(**{**cfg.__dict__, "version": 2}), planted("undecided"))
    assert undecided["decision"] == "refused" and "not shown non-inferior" in undecided["reason"]
    accepted = promote(RegistryConfig(**{**cfg.__dict__, "version": 3}), planted("non-inferior"))
    assert accepted["decision"] == "promoted" and reg.aliases("arm")["champion"] == 3 and reg.champions("arm") == [1, 3]
    assert (tmp_path / "gates" / "arm-v3" / "decision.json").is_file()
    assert reg.rollback("arm") == 1 and reg.aliases("arm")["champion"] == 1
    with pytest.raises(ValueError, match="no earlier champion"):
        reg.rollback("arm")


def test_the_gate_pairs_both_policies_on_the_same_scenes(policies, tmp_path):
    cfg = RegistryConfig(episodes=1, rounds=2, workers=1, margin=0.05)
    r = paired_rounds(policies[0], policies[1], cfg, tmp_path)
    assert r["decision"] == "undecided" and r["rounds"] == 2 and r["pairs"] == 4
    seeds = [(p["task"], p["seed"]) for p in r["pairs_detail"]]
    assert len(set(seeds)) == 4 and {s for _, s in seeds} == {cfg.seed, cfg.seed + 1}


def test_cli_lists_and_refuses_an_unknown_action(reg, policies, capsys):
    reg.register(policies[0], "arm", alias="challenger")
    assert main(["registry", "list"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"name": "arm", "aliases": {"challenger": 1}, "champions": []}]
    assert main(["registry", "publish"]) == 2
    assert "unknown registry action 'publish'; known: register, list, show, alias, promote, rollback" in capsys.readouterr().err
