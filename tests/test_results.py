"""Published figures: provenance in every results file, caches keyed on what made them, and the
README/docs regenerated from the committed JSON (benchmarks/common.py, benchmarks/report.py)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))

import common  # noqa: E402
import report  # noqa: E402


def test_readme_and_docs_match_the_committed_results():
    """What `python benchmarks/report.py` would write is what is committed, byte for byte."""
    stale = [str(p.relative_to(report.ROOT)) for p, text in report.targets().items()
             if not p.is_file() or p.read_text() != text]
    assert not stale, f"run python benchmarks/report.py: stale {stale}"


def test_no_typed_figure_contradicts_its_results_file():
    assert report.prose_mismatches() == []


def test_every_results_file_has_provenance_from_a_clean_commit_on_this_branch():
    """Evidence, not hearsay: every results file was written by its script from committed code
    (dirty = False) at a commit this branch contains."""
    shallow = subprocess.run(["git", "rev-parse", "--is-shallow-repository"], cwd=BENCH, capture_output=True,
                             text=True).stdout.strip()
    for path in sorted(report.RESULTS.glob("*.json")):
        d = json.loads(path.read_text())
        assert "provenance" in d, f"{path.name} has no provenance: re-run its benchmark or delete it with its claims"
        p = d["provenance"]
        assert {"commit", "dirty", "date", "machine", "command", "argv", "seeds", "stages", "total_seconds"} <= set(p)
        assert p["stages"] and all(s["seconds"] >= 0 for s in p["stages"].values()), path.name
        assert p["dirty"] is False, f"{path.name} was written from uncommitted code"
        assert p["commit"][:10] in report.source(path.stem)
        if shallow == "false":
            ancestor = subprocess.run(["git", "merge-base", "--is-ancestor", p["commit"], "HEAD"], cwd=BENCH)
            assert ancestor.returncode == 0, f"{path.name}: commit {p['commit'][:10]} is not on this branch"


def test_every_benchmark_script_imports():
    """A script is run by hand, often hours after the code it imports last changed: a moved
    function must fail here, not at the start of an hour-long measurement. One interpreter
    loads them all by path (each in its own try), so torch is imported once."""
    probe = ("import importlib.util, sys\n"
             "for path in sys.argv[1:]:\n"
             "    try:\n"  # by path: benchmarks/metaworld.py shares its name with the metaworld package
             "        spec = importlib.util.spec_from_file_location('bench_' + path.rsplit('/', 1)[1][:-3], path)\n"
             "        module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)\n"
             "        spec.loader.exec_module(module)\n"
             "    except Exception as e:\n"
             "        print(f'{path}: {type(e).__name__}: {e}')\n")
    scripts = sorted(str(p) for p in BENCH.glob("*.py"))
    run = subprocess.run([sys.executable, "-c", probe, *scripts], cwd=BENCH, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(BENCH)}, timeout=300)
    assert run.returncode == 0 and not run.stdout.strip(), run.stdout + run.stderr[-2000:]
    assert len(scripts) > 30


def test_report_check_mode_fails_on_a_stale_block(tmp_path, monkeypatch):
    readme = tmp_path / "README.md"
    (tmp_path / "docs").mkdir()
    readme.write_text("x\n<!-- figures:render_fps -->\n| render | 9999 |\n<!-- /figures:render_fps -->\n")
    monkeypatch.setattr(report, "ROOT", tmp_path)
    assert report.main(["--check"]) == 1
    assert "9999" in readme.read_text()  # --check writes nothing
    assert report.main([]) == 0 and "9999" not in readme.read_text()
    assert report.main(["--check"]) == 0
    readme.write_text("<!-- figures:nonsense -->\n<!-- /figures:nonsense -->\n")
    with pytest.raises(SystemExit, match="unknown figures block 'nonsense'"):
        report.main([])


def test_a_block_whose_results_file_is_absent_says_how_to_measure_it(tmp_path, monkeypatch):
    results = tmp_path / "results"
    results.mkdir()
    (results / "balance.json").write_text((report.RESULTS / "balance.json").read_text())
    monkeypatch.setattr(report, "RESULTS", results)
    data = report.data()  # ssl, active learning, curation and synthetic absent, balance present
    assert data.count("Not measured at a recorded commit") == 4
    assert "`python benchmarks/ssl_pretraining.py --methods=[mae,simclr,moco,predictive]`" in data
    assert "`python benchmarks/curation.py`" in data and "Task-balanced sampling" in data
    text = report.fill("<!-- figures:sim2real -->\n<!-- /figures:sim2real -->\n", "README.md")
    assert "Not measured" in text and "python benchmarks/sim2real.py --steps=2000" in text
    assert "metaworld.py --cpu --suite=mt50" in report.part(report.metaworld)


def test_typed_figures_are_checked_against_the_file_they_name(tmp_path, monkeypatch):
    (tmp_path / "docs").mkdir()
    results = tmp_path / "benchmarks" / "results"
    results.mkdir(parents=True)
    (results / "toy.json").write_text(json.dumps({"figures": {"success": 0.689, "gain": 0.077}}))
    monkeypatch.setattr(report, "ROOT", tmp_path)
    monkeypatch.setattr(report, "RESULTS", results)
    (tmp_path / "README.md").write_text("# toy\n")
    doc = tmp_path / "docs" / "toy.md"
    doc.write_text("## Measured (`results/toy.md`)\n\nsuccess 68.9%, gain +7.7 points, 95% CI\n")
    assert report.prose_mismatches() == []
    doc.write_text("## Measured (`results/toy.md`)\n\nsuccess 72.0%, gain +9 points\n")
    found = report.prose_mismatches()
    assert len(found) == 2 and "'72.0%'" in found[0] and "toy.json" in found[0]
    doc.write_text("## Elsewhere\n\nsuccess 72.0% (no results file named here)\n")
    assert report.prose_mismatches() == []


def test_differences_state_the_verdict_their_interval_allows():
    assert report.diff(0.08, (-0.01, 0.17)).endswith("(no effect detected at this size)")
    assert report.diff(0.28, (0.18, 0.37)) == "+28.0 [+18.0, +37.0]"
    assert report.parse_diff("+0.08 [-0.01, +0.17]") == (0.08, (-0.01, 0.17))


def _planted(outcomes: list[bool]) -> dict:
    """An evaluation's results.json with one episode per scene seed 0 .. n-1."""
    return {"successes": sum(outcomes), "episodes": len(outcomes),
            "episodes_detail": [{"task": "reach", "seed": i, "success": o} for i, o in enumerate(outcomes)]}


def test_seeded_comparisons_render_with_the_interval_over_seeds(tmp_path, monkeypatch):
    """SSL and active-learning blocks over two training seeds: mean (sd) per cell, the gain with
    the t interval over per-seed differences (and whether it spans zero), the pooled test's p."""
    from vlaforge.eval.stats import paired, seed_summary

    scratch = [_planted([True] * 5 + [False] * 5), _planted([True] * 6 + [False] * 4)]
    mae = [_planted([True] * 8 + [False] * 2), _planted([True] * 9 + [False])]  # +30 points in both seeds
    moco = [_planted([True] * 6 + [False] * 4), _planted([True] * 5 + [False] * 5)]  # +10, then -10
    gains = {"mae@5": paired(mae, scratch), "moco@5": paired(moco, scratch)}
    # McNemar: 6 discordant pairs, all for mae, two-sided exact p = 2 x 0.5^6
    assert common.paired_text(gains["mae@5"]) == "+30.0 seed-t [+30.0, +30.0] McNemar p=0.031"
    assert common.paired_text(paired(mae[:1], scratch[:1])).startswith("+30.0 bootstrap [")  # one seed
    assert common.seeded_text(seed_summary(mae)) == "85.0% (7.1)"  # mean of 80 and 90, sd 7.07
    results = tmp_path / "results"
    results.mkdir()
    ssl = {"settings": {"demos": [5], "methods": ["mae", "moco"], "seeds": 2}, "gains": gains,
           "cells": {"scratch@5": seed_summary(scratch), "mae@5": seed_summary(mae), "moco@5": seed_summary(moco)}}
    active = {"settings": {"seeds": 2}, "vs_random": {"uncertainty@20": paired(mae, scratch)},
              "curves": {"random": [{"demos": 10} | seed_summary(scratch)] * 2,
                         "uncertainty": [{"demos": 10} | seed_summary(scratch), {"demos": 20} | seed_summary(mae)]}}
    for name, figures in (("ssl", ssl), ("active_learning", active)):
        (results / f"{name}.json").write_text(json.dumps({"figures": figures, "rows": []}))
    monkeypatch.setattr(report, "RESULTS", results)
    text = report.ssl()
    assert "| mae | 85% (sd 7) |" in text and "| mae | 5 | +30.0 [+30.0, +30.0] | [" in text and "| 0.031 |" in text
    assert "| moco | 5 | +0.0 [" in text and "(no effect detected at this size)" in text.split("| moco | 5 |")[1]
    assert "| uncertainty | 20 | 85% (sd 7) | +30.0 [+30.0, +30.0] | 0.031 |" in report.active_learning()


@pytest.fixture
def fresh_common(tmp_path, monkeypatch):
    monkeypatch.setattr(common, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(common, "_STAGES", {})
    monkeypatch.setattr(common, "_CACHE", {})
    monkeypatch.setattr(sys, "argv", ["benchmarks/toy.py", "--steps=3"])
    return tmp_path


def test_write_records_provenance_seeds_and_stages(fresh_common):
    with common.stage("collect"):
        pass
    common.record_stage("train", 12.5, reused=True)
    common.write("toy", {"rate": 0.5}, [{"a": 1}], "Toy", seeds={"train": 0})
    d = json.loads((fresh_common / "results" / "toy.json").read_text())
    p = d["provenance"]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=BENCH, capture_output=True, text=True).stdout.strip()
    assert p["commit"] == head and isinstance(p["dirty"], bool)
    assert p["argv"] == ["--steps=3"] and p["command"] == "python benchmarks/toy.py --steps=3"
    assert p["seeds"] == {"train": 0} and p["machine"]["cores"] >= 1
    assert p["stages"]["collect"]["reused"] is False and p["stages"]["train"] == {
        "seconds": 12.5, "reused": True, "made_by": {"commit": None, "dirty": None, "args": None, "date": None}}
    assert d["title"] == "Toy" and d["figures"] == {"rate": 0.5}
    assert "Commit " in (fresh_common / "results" / "toy.md").read_text()
    with pytest.raises(TypeError):
        common.write("toy", {}, [], "no seeds")  # seeds are required


def test_dirty_means_changed_source_not_rewritten_results(tmp_path):
    from vlaforge.train.tracking import git_commit

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    (tmp_path / "src.py").write_text("a = 1\n")
    (tmp_path / "benchmarks" / "results" / "toy.json").write_text("{}")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    assert git_commit(tmp_path)["dirty"] is False
    (tmp_path / "benchmarks" / "results" / "toy.json").write_text('{"rate": 1}')  # an earlier benchmark's output
    (tmp_path / "benchmarks" / "results" / "new.md").write_text("new")
    assert git_commit(tmp_path / "benchmarks")["dirty"] is False
    (tmp_path / "src.py").write_text("a = 2\n")
    assert git_commit(tmp_path / "benchmarks")["dirty"] is True


def test_cache_root_is_keyed_on_arguments_and_source(fresh_common, monkeypatch):
    base = fresh_common / "runs" / "bench_toy"
    a = common.cache_root(base, ["--steps=3", "--tasks=[reach]"])
    assert json.loads((a / "stamp.json").read_text())["args"] == ["--steps=3", "--tasks=[reach]"]
    assert common._CACHE["fresh"] is True
    assert common.cache_root(base, ["--tasks=[reach]", "--steps=3"]) == a  # order does not matter
    assert common._CACHE["fresh"] is False and common._CACHE["made_by"]["args"] == ["--steps=3", "--tasks=[reach]"]
    assert common.cache_root(base, ["--steps=4", "--tasks=[reach]"]) != a  # other arguments: other artefacts
    monkeypatch.setattr(common, "source_hash", lambda: "edited")
    assert common.cache_root(base, ["--steps=3", "--tasks=[reach]"]) != a  # other code: other artefacts
    with common.stage("train", reused=True):
        pass
    assert common._STAGES["train"]["made_by"]["args"] == ["--steps=3", "--tasks=[reach]"]


def test_train_once_reports_the_original_training_time_when_reused(fresh_common, monkeypatch):
    run = fresh_common / "runs" / "bench_toy" / "seed0"
    calls = []

    def make(resume):
        calls.append(resume)
        (run / "policy").mkdir(parents=True)

    clock = iter([0.0, 100.0, 142.5, 150.0])  # stage start, training start and end, stage end
    monkeypatch.setattr(common.time, "perf_counter", lambda: next(clock, 500.0))
    assert common.train_once(run, make, "train toy") == 42.5
    assert calls == [False] and common._STAGES["train toy"]["reused"] is False
    assert common.train_once(run, make, "train toy") == 42.5  # read back, not the time to find it
    assert calls == [False] and common._STAGES["train toy"]["reused"] is True
    assert json.loads((run / "train_seconds.json").read_text()) == {"seconds": 42.5, "resumed_from_checkpoint": False}


def test_no_benchmark_script_shadows_a_module_it_imports():
    """``python benchmarks/X.py`` puts benchmarks/ first on sys.path, so a script named like a
    standard-library module (ssl.py broke every script importing torch first) shadows it."""
    clashes = sorted(p.name for p in BENCH.glob("*.py") if p.stem in sys.stdlib_module_names)
    assert clashes == []
