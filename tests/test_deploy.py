"""Deployment: every registered deploy backend writes a directory through the one path
(deploy/artifact.py), passes its parity limit, loads and acts through load_policy; a backend
beyond its limit leaves nothing behind; ONNX export, static-int8 calibration, latency bench, and
clear errors."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from helpers import write_dataset

from vlaforge.cli import main
from vlaforge.deploy.artifact import deploy
from vlaforge.deploy.base import DeployBackend, DeployOptions
from vlaforge.deploy.latency import bench_latency, observation
from vlaforge.deploy.onnx import write_onnx
from vlaforge.eval.config import EvalConfig
from vlaforge.eval.rollout import evaluate
from vlaforge.models.config import PolicyConfig
from vlaforge.registry import DEPLOY_BACKENDS
from vlaforge.runtime.policy import example_inputs, load_policy
from vlaforge.train.config import TrainConfig
from vlaforge.train.trainer import train

pytest.importorskip("onnxruntime")
TINY = PolicyConfig(d_model=32, n_layers=1, n_heads=2, vision_channels=[8, 8])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("deploy")
    write_dataset(root / "data", episodes=4)
    return train(TrainConfig(dataset=str(root / "data"), output_dir=str(root / "run"), steps=3, batch_size=4,
                             tracking="none", policy=TINY), show_progress=False)


def test_onnx_export_matches_pytorch_and_runs_in_evaluation(trained, tmp_path):
    assert main(["export", "onnx", f"--policy={trained}", f"--output={tmp_path / 'onnx'}"]) == 0
    info = json.loads((tmp_path / "onnx/deploy.json").read_text())
    assert info["runtime"] == "onnxruntime" and info["parity_max_abs"] < 1e-4
    torch_policy, onnx_policy = load_policy(trained), load_policy(tmp_path / "onnx")
    for seed in range(3):
        obs = observation(torch_policy, seed)
        np.testing.assert_allclose(onnx_policy.act(obs), torch_policy.act(obs), atol=1e-4)
    res = evaluate(EvalConfig(policy=str(tmp_path / "onnx"), split="train", tasks=["reach"], episodes=1, workers=1,
                              max_steps=4, videos_per_task=0, output_dir=str(tmp_path / "eval")), False)
    assert res["episodes"] == 1 and res["episodes_detail"][0]["length"] == 4


@pytest.mark.parametrize("method", DEPLOY_BACKENDS.names())
def test_every_backend_deploys_within_its_parity_limit_and_acts_through_load_policy(trained, tmp_path, method):
    if method.startswith("openvino"):
        pytest.importorskip("openvino", reason="the openvino backend needs openvino (pip install 'vlaforge[deploy]')")
    limit = DEPLOY_BACKENDS.get(method).parity_limit
    options = DeployOptions(dataset=str(trained.parent.parent / "data"), calibration_samples=8)
    out = deploy(trained, tmp_path / method, method, options)
    info = json.loads((out / "deploy.json").read_text())
    assert info["method"] == method and info["parity_limit"] == limit and 0 <= info["parity_max_abs"] <= limit
    assert info["size_bytes"] > 0 and len(info["sha256"]) == 64
    base, deployed = load_policy(trained), load_policy(out)
    obs = observation(base)
    assert np.abs(deployed.act(obs) - base.act(obs)).max() < min(limit, 0.25)  # rounding moves actions a little
    if method not in ("onnx-fp32", "openvino-fp32", "compile", "sliced"):  # the others round: a method that did nothing would show 0
        assert info["parity_max_abs"] > 0
    if "int" in method and method != "static-int8":  # static-int8 stores fp32 weights + calibration frames
        # int8/int4 weights; the tiny test model is mostly convolutions, norms and constants, which stay fp32
        assert info["size_bytes"] < 0.8 * info["fp32_size_bytes"]


def test_a_backend_beyond_its_parity_limit_writes_nothing(trained, tmp_path, monkeypatch):
    """The one enforced parity check: a backend whose graph is not the policy's network (its
    weights perturbed) is refused, and the output directory never appears."""
    import copy

    import torch

    def perturbed(base, tmp, options):
        noisy = copy.copy(base)
        noisy.model = copy.deepcopy(base.model)
        with torch.no_grad():
            for p in noisy.model.parameters():
                p.add_(0.1 * torch.randn_like(p))
        return write_onnx(noisy, tmp, int8=False)

    monkeypatch.setattr(DEPLOY_BACKENDS, "_items", dict(DEPLOY_BACKENDS._items))
    DEPLOY_BACKENDS.register("perturbed")(DeployBackend(perturbed, parity_limit=1e-3, summary="a broken exporter"))
    with pytest.raises(RuntimeError, match="perturbed: parity check failed"):
        deploy(trained, tmp_path / "bad", "perturbed")
    assert not (tmp_path / "bad").exists() and list(tmp_path.iterdir()) == []


def test_static_int8_calibrates_on_the_dataset(trained, tmp_path):
    from vlaforge.runtime.pt2e import CALIBRATION_FILE, load_static_int8

    dataset = str(trained.parent.parent / "data")
    with pytest.raises(ValueError, match="--dataset"):
        deploy(trained, tmp_path / "none", "static-int8")
    out = deploy(trained, tmp_path / "s8", "static-int8", DeployOptions(dataset=dataset, calibration_samples=16))
    info = json.loads((out / "deploy.json").read_text())
    assert info["runtime"] == "torch-pt2e" and info["calibration"]["samples"] == 16
    assert 0 < info["parity_max_abs"] < 0.5 and (out / CALIBRATION_FILE).is_file()
    assert sorted(p.suffix for p in out.iterdir()) == [".json", ".json", ".json", ".safetensors", ".safetensors"]
    base, quant = load_policy(trained), load_static_int8(out, compile=False)
    obs = observation(base)
    assert np.abs(quant.act(obs) - base.act(obs)).max() < 0.25
    # Re-deriving the int8 graph from the stored calibration gives the same network every time.
    again = load_static_int8(out, compile=False)
    x = example_inputs(base, seed=3)
    np.testing.assert_array_equal(quant.predict(*x), again.predict(*x))
    # A fresh process, as an evaluation worker is, must re-derive it too.
    code = ("import sys; from pathlib import Path; from vlaforge.runtime.pt2e import load_static_int8; "
            "load_static_int8(Path(sys.argv[1]), compile=False)")
    done = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


class _Payload:
    """Unpickling this writes a marker file: the proof that a loader ran code from the directory."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_a_policy_directory_cannot_run_code_or_reach_outside_itself(trained, tmp_path):
    import pickle
    import shutil
    import zipfile

    marker = tmp_path / "code-ran"
    crafted = tmp_path / "crafted"
    shutil.copytree(trained, crafted)
    with zipfile.ZipFile(crafted / "model.pt2", "w") as z:  # a torch.export archive carrying a pickle
        z.writestr("model/archive_format", "pt2")
        z.writestr("model/models/model.json", "{}")
        z.writestr("model/data/constants/model.pkl", pickle.dumps(_Payload(str(marker))))
    (crafted / "deploy.json").write_text(json.dumps({"runtime": "torch-export", "model": "model.pt2"}))
    with pytest.raises(ValueError, match="'torch-export' is refused"):
        load_policy(crafted)
    assert main(["eval", f"--policy={crafted}", "--episodes=1", "--workers=1"]) == 2
    assert not marker.exists()

    outside = tmp_path / "outside.onnx"
    outside.write_bytes(b"not a model")
    (crafted / "link.onnx").symlink_to(outside)
    for runtime, key, name in [("onnxruntime", "model", "../outside.onnx"), ("onnxruntime", "model", str(outside)),
                               ("onnxruntime", "model", "link.onnx"), ("torch-pt2e", "calibration_file", "../x"),
                               ("onnxruntime", "model", ["model.onnx"])]:
        (crafted / "deploy.json").write_text(json.dumps({"runtime": runtime, key: name}))
        with pytest.raises(ValueError, match=f"{key} .*(inside the policy directory|leads outside)"):
            load_policy(crafted)


@pytest.mark.slow
def test_static_int8_loads_compiled_through_load_policy(trained, tmp_path):
    dataset = str(trained.parent.parent / "data")
    out = deploy(trained, tmp_path / "s8", "static-int8", DeployOptions(dataset=dataset, calibration_samples=8))
    base, quant = load_policy(trained), load_policy(out)  # re-quantized from its calibration, then compiled
    obs = observation(base)
    assert np.abs(quant.act(obs) - base.act(obs)).max() < 0.25


def test_latency_bench_rows(trained):
    rows = bench_latency(str(trained), ["eager", "onnx-fp32", "dynamic-int8"], calls=3, warmup=1, threads=1)
    assert [r["runtime"] for r in rows] == ["eager", "onnx-fp32", "dynamic-int8"]
    assert all(r["p50_ms"] > 0 and r["p99_ms"] >= r["p50_ms"] and r["threads"] == 1 for r in rows)
    assert rows[0]["max_action_diff"] == 0 and rows[1]["max_action_diff"] < 1e-4


def test_deploy_errors_are_clear(trained, tmp_path, capsys):
    assert main(["quantize", "--method=int3", f"--policy={trained}", f"--output={tmp_path / 'q'}"]) == 2
    assert "unknown deploy method 'int3'" in capsys.readouterr().err
    assert main(["export", "tflite", f"--policy={trained}", f"--output={tmp_path / 'x'}"]) == 2
    assert "unknown export format 'tflite'" in capsys.readouterr().err
    (tmp_path / "taken").mkdir()
    assert main(["export", "onnx", f"--policy={trained}", f"--output={tmp_path / 'taken'}"]) == 2
    assert "already exists" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown runtime 'tpu'"):
        bench_latency(str(trained), ["tpu"])
    out = deploy(trained, tmp_path / "ok", "dynamic-int8")
    (out / "deploy.json").write_text("{not json")
    with pytest.raises(ValueError, match="deploy.json is unreadable"):
        load_policy(out)


@pytest.mark.parametrize("head", ["flow", pytest.param("dit", marks=pytest.mark.slow)])
def test_sampling_heads_export_with_their_noise_as_an_input(head, tmp_path):
    """The sampling loop is unrolled into the graph and the initial noise is an input: the ONNX
    policy draws it from the session's generator as PyTorch does, so every seed's chunk matches,
    and different seeds give different chunks."""
    import onnx

    write_dataset(tmp_path / "data", episodes=2)
    policy = train(TrainConfig(dataset=str(tmp_path / "data"), output_dir=str(tmp_path / "run"), steps=2, batch_size=4,
                               tracking="none", policy=PolicyConfig(**{**TINY.__dict__, "head": head,
                                                                       "sample_steps": 3})), False)
    assert main(["export", "onnx", f"--policy={policy}", f"--output={tmp_path / 'onnx'}"]) == 0
    graph = onnx.load(str(tmp_path / "onnx/model.onnx")).graph
    assert [i.name for i in graph.input] == ["image", "state", "tokens", "noise"]
    torch_policy, onnx_policy = load_policy(policy), load_policy(tmp_path / "onnx")
    obs = observation(torch_policy)
    chunks = []
    for seed in (0, 1):
        torch_policy.reset(seed), onnx_policy.reset(seed)
        chunks.append(onnx_policy.act(obs))
        np.testing.assert_allclose(chunks[-1], torch_policy.act(obs), atol=1e-4)
    assert np.abs(chunks[0] - chunks[1]).max() > 1e-3


def test_control_cli_runs_a_deployed_policy_in_real_time(trained, tmp_path):
    out = deploy(trained, tmp_path / "q", "onnx-int8")
    assert main(["control", f"--policy={out}", "--tasks=[reach]", "--episodes=1", "--rate_hz=100",
                 f"--output={tmp_path / 'control.json'}"]) == 0
    r = json.loads((tmp_path / "control.json").read_text())
    assert r["episodes"][0]["steps"] == 100 and 0 <= r["deadline_miss_rate"] < 0.2 and r["inference_ms_p50"] > 0
