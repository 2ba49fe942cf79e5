"""Verified loads: a byte changed in a dataset or a policy directory after it was written is
caught by the sha256 recorded at write time, never silently used (issue 22, item 4)."""

import json

import numpy as np
import pytest
from helpers import write_dataset
from test_policy import make_policy

from vlaforge.data.dataset import DatasetError, LeRobotDataset
from vlaforge.data.manifest import write_manifest
from vlaforge.models.policy import load_policy


def flip(path, offset: int, count: int = 1) -> None:
    """Invert ``count`` bytes of ``path`` starting at ``offset`` (a negative offset counts from the end)."""
    data = bytearray(path.read_bytes())
    start = offset % len(data)
    for i in range(start, start + count):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture
def dataset(tmp_path):
    root = tmp_path / "ds"
    write_dataset(root, episodes=3, length=10)
    write_manifest(root)
    return root


def test_every_byte_flip_in_a_data_file_is_caught(dataset):
    data_file = next((dataset / "data").rglob("*.parquet"))
    clean = LeRobotDataset(dataset).load()
    assert LeRobotDataset(dataset).verify() > 0
    original = data_file.read_bytes()
    rng = np.random.default_rng(0)
    for offset in rng.integers(0, len(original), size=20):
        flip(data_file, int(offset))
        with pytest.raises(DatasetError, match=f"{data_file.name} does not match its sha256 in .*manifest.json"):
            LeRobotDataset(dataset).load()
        data_file.write_bytes(original)
    np.testing.assert_array_equal(LeRobotDataset(dataset).load().action, clean.action)


def test_a_dataset_without_a_manifest_loads_unverified(tmp_path):
    write_dataset(tmp_path / "ds", episodes=2)
    assert LeRobotDataset(tmp_path / "ds").verify() == 0  # written elsewhere: nothing to check against
    LeRobotDataset(tmp_path / "ds").load()


def test_a_changed_weight_or_normaliser_is_refused(tmp_path):
    policy_dir = make_policy().save(tmp_path / "policy")
    meta = json.loads((policy_dir / "config.json").read_text())
    assert set(meta["sha256"]) == {"model.safetensors", "normalization.json"}
    reference = load_policy(policy_dir)
    weights = policy_dir / "model.safetensors"
    original = weights.read_bytes()
    flip(weights, -1000, count=2)  # inside the tensor data: safetensors itself notices nothing
    changed = load_policy(policy_dir, verify=False)
    assert any(not np.array_equal(a.numpy(), b.numpy()) for a, b in
               zip(changed.model.state_dict().values(), reference.model.state_dict().values()))
    with pytest.raises(ValueError, match="model.safetensors does not match its sha256 in .*config.json"):
        load_policy(policy_dir)
    weights.write_bytes(original)
    norm = policy_dir / "normalization.json"
    norm.write_text(norm.read_text().replace("0.5", "0.6", 1))
    with pytest.raises(ValueError, match="normalization.json does not match its sha256"):
        load_policy(policy_dir)


def test_a_deployed_runtime_file_is_checked_too(tmp_path):
    pytest.importorskip("onnxruntime")
    from vlaforge.deploy.quantize import quantize

    policy_dir = make_policy().save(tmp_path / "policy")
    out = quantize(str(policy_dir), str(tmp_path / "int8"), "onnx-int8")
    assert len(json.loads((out / "deploy.json").read_text())["sha256"]) == 64
    load_policy(out)
    flip(out / "model.int8.onnx", -500)
    with pytest.raises(ValueError, match="model.int8.onnx does not match its sha256 in .*deploy.json"):
        load_policy(out)
