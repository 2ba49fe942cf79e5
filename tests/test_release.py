"""The release pipeline (.ci/release, `make release`, CI's release job) against one registry: the
first policy becomes the champion; a second trained for a single step is refused by the gate,
the pipeline fails, and the champion stays."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_the_release_pipeline_promotes_then_refuses_a_degraded_policy(tmp_path):
    pytest.importorskip("sqlalchemy", reason="SQLAlchemy is not installed (pip install 'vlaforge[mlops]')")
    vlaforge = Path(sys.executable).parent / "vlaforge"
    env = {**os.environ, "VLAFORGE": str(vlaforge), "VLAFORGE_REGISTRY": f"sqlite:///{tmp_path / 'reg.db'}"}

    def release(name: str, **extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(ROOT / ".ci" / "release")], env={**env, "RELEASE_DIR": str(tmp_path / name), **extra},
                              capture_output=True, text=True, timeout=1200)

    first = release("first")
    assert first.returncode == 0, first.stderr[-3000:]
    assert json.loads((tmp_path / "first" / "gate" / "tabletop-release-v1" / "decision.json").read_text())[
        "decision"] == "promoted"
    second = release("second", RELEASE_STEPS="1")
    assert second.returncode == 1, second.stderr[-3000:]
    assert "the gate refused version 2 of tabletop-release: worse than v1" in second.stderr
    decision = json.loads((tmp_path / "second" / "gate" / "tabletop-release-v2" / "decision.json").read_text())
    assert decision["decision"] == "refused" and decision["test"]["decision"] == "inferior"
    shown = subprocess.run([str(vlaforge), "registry", "show", "--model=tabletop-release@champion"], env=env,
                           capture_output=True, text=True, timeout=300)
    assert json.loads(shown.stdout)["version"] == 1
