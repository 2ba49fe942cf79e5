"""The ablation grid runner on a tiny config."""

import json

import pytest

from vlaforge.cli import main
from vlaforge.config import ConfigError
from vlaforge.eval.ablate import ablate, effects, load_grid
from vlaforge.eval.config import AblateConfig

GRID = """
base:
  collect: {env: {tasks: [reach]}, episodes_per_task: 1, workers: 1}
  train: {steps: 3, batch_size: 4, tracking: none, ckpt_every: 100, grounding_scenes: 3,
          policy: {d_model: 32, n_layers: 1, n_heads: 2, vision_channels: [8, 8]}}
  eval: {episodes: 2, workers: 1, max_steps: 8, videos_per_task: 0}
  splits: [train]
axes:
  ema: {train.ema_decay: [0.0, 0.9]}
  demos: {collect.episodes_per_task: [1, 2]}
"""


def test_grid_runs_every_cell_shares_data_and_resumes(tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text(GRID)
    out = tmp_path / "ablate"
    s = ablate(AblateConfig(grid=str(grid), output_dir=str(out)), show_progress=False)
    assert len(s["cells"]) == 4 and {tuple(c["values"].values()) for c in s["cells"]} == {(0.0, 1), (0.0, 2), (0.9, 1), (0.9, 2)}
    assert len(list((out / "data").iterdir())) == 2  # one dataset per distinct collect setting
    for c in s["cells"]:
        r = json.loads(open(c["results"]).read())
        assert r["episodes"] == 2 and c["episodes"] == 2
        cfg = (out / "cells" / c["cell"] / "config.yaml").read_text()
        assert f"ema_decay: {c['values']['ema']}" in cfg
    assert set(s["effects"]) == {"ema", "demos"} and all(e["levels"][0]["episodes"] == 4 for e in s["effects"].values())
    assert "<img" in (out / "report.html").read_text() and (out / "scaling_demos.png").is_file()  # numeric: a curve
    policies = sorted(out.glob("cells/*/train/policy/model.safetensors"))
    stamps = [p.stat().st_mtime_ns for p in policies]
    assert main(["ablate", f"--grid={grid}", f"--output_dir={out}"]) == 0  # a rerun trains nothing again
    assert [p.stat().st_mtime_ns for p in policies] == stamps


def test_effects_pool_cells_by_value():
    rows = [{"values": {"a": 0, "b": "x"}, "successes": 2, "episodes": 10}, {"values": {"a": 0, "b": "y"}, "successes": 4, "episodes": 10},
            {"values": {"a": 1, "b": "x"}, "successes": 8, "episodes": 10}, {"values": {"a": 1, "b": "y"}, "successes": 10, "episodes": 10}]
    e = effects(rows, {"a": ("k.a", [0, 1]), "b": ("k.b", ["x", "y"])})
    assert e["a"]["contribution"] == pytest.approx(0.6) and e["b"]["contribution"] == pytest.approx(0.2)
    lo, hi = e["a"]["contribution_ci95"]
    assert 0.3 < lo < 0.6 < hi < 0.85


@pytest.mark.parametrize("text, message", [
    ("axes: {x: {train.no_such_key: [1, 2]}}", "no_such_key"),
    ("axes: {x: {train.steps: [5]}}", "at least two"),
    ("axes: {x: {train.output_dir: [a, b]}}", "set by the ablation"),
    ("axes: {x: {train.steps: [1, 2], train.seed: [1, 2]}}", "one key"),
    ("base: {train: {steps: oops}}\\naxes: {x: {train.seed: [1, 2]}}", "steps"),
    ("nonsense: 1", "base and axes"),
    ("base: {}", "no axes"),
])
def test_bad_grids_fail_before_running(tmp_path, text, message):
    grid = tmp_path / "g.yaml"
    grid.write_text(text.replace("\\n", "\n"))
    with pytest.raises(ConfigError, match=message):
        load_grid(str(grid))
    assert main(["ablate", f"--grid={grid}", f"--output_dir={tmp_path / 'o'}"]) == 2
    assert not (tmp_path / "o").exists()
