"""Verified loads: a byte changed in a dataset or a policy directory after it was written is
caught by the sha256 recorded at write time, never silently used (issue 22, item 4)."""

import json

import numpy as np
import pytest
from helpers import write_dataset
from test_policy import make_policy

from vlaforge.data.dataset import DatasetError, LeRobotDataset
from vlaforge.data.manifest import write_manifest
from vlaforge.runtime.policy import load_policy


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
    assert LeRobotDataset(dataset).manifest_problems() == []
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
    assert not (tmp_path / "ds/manifest.json").exists()  # written elsewhere: nothing to check against
    assert LeRobotDataset(tmp_path / "ds").manifest_problems() == []
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
    from vlaforge.deploy.artifact import deploy

    policy_dir = make_policy().save(tmp_path / "policy")
    out = deploy(policy_dir, tmp_path / "int8", "onnx-int8")
    assert len(json.loads((out / "deploy.json").read_text())["sha256"]) == 64
    load_policy(out)
    flip(out / "model.int8.onnx", -500)
    with pytest.raises(ValueError, match="model.int8.onnx does not match its sha256 in .*deploy.json"):
        load_policy(out)


def _edit_json(path, fn) -> None:
    path.write_text(json.dumps(fn(json.loads(path.read_text()))))


@pytest.mark.parametrize("edit, message", [
    (lambda info: [info], r"info.json must hold an object with codebase_version, fps and features, got a list"),
    (lambda info: {k: v for k, v in info.items() if k != "features"}, r"info.json: 'features' must map"),
    (lambda info: info | {"fps": "fast"}, r"info.json: 'fps' must be a number in \(0, 10000\), got 'fast'"),
])
def test_a_malformed_info_json_gets_one_line_naming_it(tmp_path, edit, message):
    write_dataset(tmp_path / "ds", episodes=1)
    _edit_json(tmp_path / "ds/meta/info.json", edit)
    with pytest.raises(DatasetError, match=message):
        LeRobotDataset(tmp_path / "ds")


def test_a_corrupt_stats_json_is_named(tmp_path):
    from vlaforge.train.config import TrainConfig
    from vlaforge.train.trainer import train

    write_dataset(tmp_path / "ds", episodes=1)
    stats = tmp_path / "ds/meta/stats.json"
    stats.write_text("{not json")
    with pytest.raises(DatasetError, match=r"corrupt dataset file .*stats.json"):
        LeRobotDataset(tmp_path / "ds")
    stats.write_text(json.dumps({"observation.state": {"mean": [0] * 4, "std": [1] * 4}, "action": {"mean": "x"}}))
    with pytest.raises(DatasetError, match=r"stats.json: observation.state must hold mean, std, min, max and count"):
        LeRobotDataset(tmp_path / "ds").load()
    with pytest.raises(ValueError, match=r"stats.json: action.mean is missing or not a list of numbers"):
        train(TrainConfig(dataset=str(tmp_path / "ds"), output_dir=str(tmp_path / "run"), steps=1, verify_data=False),
              show_progress=False)


def test_an_image_path_outside_the_dataset_is_refused(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    write_dataset(tmp_path / "ds", episodes=1)
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"not yours")
    data_file = next((tmp_path / "ds/data").rglob("*.parquet"))
    table = pq.read_table(data_file)
    images = [{"bytes": None, "path": "../../../secret.png"}] * table.num_rows
    col = table.column_names.index("observation.images.front")
    table = table.set_column(col, "observation.images.front", pa.array(images, table.schema.field(col).type))
    pq.write_table(table, data_file)
    with pytest.raises(DatasetError, match=r"image path '../../../secret.png' must name a file inside"):
        LeRobotDataset(tmp_path / "ds").load()


def test_a_wrong_length_normaliser_is_refused_on_load(tmp_path):
    policy_dir = make_policy().save(tmp_path / "policy")
    _edit_json(policy_dir / "normalization.json",
               lambda n: n | {"action": {"mean": n["action"]["mean"][:-1], "std": n["action"]["std"]}})
    with pytest.raises(ValueError, match=r"normalization.json: action.mean must be 4 finite numbers"):
        load_policy(policy_dir, verify=False)
