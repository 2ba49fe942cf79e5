"""docs/mlops.md's walkthrough, replayed as written with tiny sizes: train, register, gate, serve
with metrics and drift, a canary A/B test fed by simulated robots, and a drift drill."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import free_port

DOC = Path(__file__).parent.parent / "docs" / "mlops.md"


def walkthrough() -> str:
    text = DOC.read_text()
    block = text[text.index("<!-- walkthrough:start -->"):text.index("<!-- walkthrough:end -->")]
    return block.split("```bash\n", 1)[1].rsplit("```", 1)[0]


def test_the_walkthrough_block_is_one_fenced_script():
    script = walkthrough()
    assert script.startswith("set -euo pipefail") and "vlaforge traffic" in script and "```" not in script


@pytest.mark.slow  # about 2 minutes: a dozen CLI processes
def test_the_mlops_walkthrough_runs_as_written(tmp_path):
    pytest.importorskip("mlflow", reason="the registry needs mlflow (pip install 'vlaforge[mlops]')")
    pytest.importorskip("prometheus_client", reason="metrics need prometheus-client (pip install 'vlaforge[mlops]')")
    if shutil.which("curl") is None:
        pytest.skip("the walkthrough calls curl, which is not installed")
    bindir = str(Path(sys.executable).parent)  # this interpreter's vlaforge and python
    # A 90-point margin lets the gate promote two untrained policies in a few pairs: the canary branch runs.
    # 10 demos: the drift reference needs 10 training episodes.
    env = {**os.environ, "PATH": bindir + os.pathsep + os.environ["PATH"], "STEPS": "2", "DEMOS": "10",
           "EPISODES": "2", "ROUNDS": "3", "MARGIN": "0.9", "TRAFFIC": "12", "PORT": str(free_port())}
    env.pop("VLAFORGE_REGISTRY", None)
    env.pop("VLAFORGE_TOKEN", None)
    r = subprocess.run(["bash", "-c", walkthrough()], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    out = r.stdout
    assert r.returncode == 0, (out + r.stderr)[-4000:]
    assert (tmp_path / "registry" / "mlflow.db").is_file() and (tmp_path / "runs/mlops/v2/policy").is_dir()
    assert '"decision": "promoted"' in out  # both promotions: version 1 first, version 2 through the gate
    assert re.search(r"dashboard: http://127\.0\.0\.1:\d+/dashboard#token=\S{20,}", out)
    assert re.search(r"A/B: (running|promote|rollback)", out)
    assert len(re.findall(r'"episodes": 12,', out)) == 2  # both traffic runs
    assert '"domain": "real-proxy-B"' in out
    checks = re.search(r"^vlaforge_drift_checks_total (\S+)", out, re.M)
    assert checks and float(checks.group(1)) >= 1  # 24 episodes started: the window of 20 is full
    log = (tmp_path / "runs/mlops/ab.jsonl").read_text().splitlines()
    assert sum('"event": "outcome"' in line for line in log) == 12  # the canary's reported episodes
