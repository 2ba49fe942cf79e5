"""Pruning: each method zeros what it claims, the zeros survive fine-tuning, bad specs fail."""

import json

import pytest
import torch
from helpers import write_dataset

from vlaforge.cli import main
from vlaforge.models.config import PolicyConfig
from vlaforge.runtime.policy import load_policy
from vlaforge.train.config import TrainConfig
from vlaforge.train.prune import apply_masks, parse_prune, pruning_masks, zero_fraction
from vlaforge.train.trainer import train

TINY = PolicyConfig(d_model=32, n_layers=2, n_heads=4, vision_channels=[8, 8])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("prune")
    write_dataset(root / "data", episodes=3)
    policy = train(TrainConfig(dataset=str(root / "data"), output_dir=str(root / "run"), steps=3, batch_size=4,
                               tracking="none", policy=TINY), show_progress=False)
    return root, policy


def test_unstructured_pruning_removes_the_smallest_weights(trained):
    model = load_policy(trained[1]).model
    weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    masks = pruning_masks(model, "unstructured", 0.5)
    apply_masks(model, masks)
    assert zero_fraction(model, masks) == pytest.approx(0.5, abs=0.01)
    kept = torch.cat([weights[n][m.bool()].abs() for n, m in masks.items()])
    dropped = torch.cat([weights[n][~m.bool()].abs() for n, m in masks.items()])
    assert dropped.max() <= kept.min()


def test_structured_pruning_zeros_whole_heads_and_channels(trained):
    model = load_policy(trained[1]).model
    apply_masks(model, pruning_masks(model, "heads", 0.25))
    for block in model.blocks.values():
        heads = block.mixer.v.weight.view(4, 8, -1).abs().sum((1, 2))
        assert int((heads == 0).sum()) == 1  # one of four heads per layer
        cols = block.mixer.proj.weight.view(32, 4, 8).abs().sum((0, 2))
        assert torch.equal(heads == 0, cols == 0)
    model = load_policy(trained[1]).model
    apply_masks(model, pruning_masks(model, "channels", 0.5))
    for block in model.blocks.values():
        fc1, fc2 = block.ffn[0], block.ffn[2]
        dead = fc1.weight.abs().sum(1) == 0
        assert int(dead.sum()) == fc1.out_features // 2
        assert torch.equal(dead, fc2.weight.abs().sum(0) == 0) and torch.all(fc1.bias[dead] == 0)
    model = load_policy(trained[1]).model
    both = pruning_masks(model, "structured", 0.5)
    assert both.keys() == pruning_masks(model, "channels", 0.5).keys() | pruning_masks(model, "heads", 0.5).keys()


def test_prune_cli_fine_tunes_with_the_mask_held(trained, tmp_path):
    root, policy = trained
    assert main(["prune", f"--policy={policy}", f"--dataset={root / 'data'}", "--method=unstructured", "--sparsity=0.6",
                 "--steps=5", f"--output_dir={tmp_path / 'p'}"]) == 0
    pruned = load_policy(tmp_path / "p/policy")
    info = json.loads((tmp_path / "p/policy/config.json").read_text())["pruning"]
    masks = pruning_masks(load_policy(policy).model, "unstructured", 0.6)
    assert info["method"] == "unstructured" and zero_fraction(pruned.model, masks) >= 0.6 - 0.01
    before = load_policy(policy).model.state_dict()
    changed = [n for n in masks if not torch.equal(pruned.model.state_dict()[n], before[n] * masks[n])]
    assert changed  # fine-tuning moved the kept weights


def test_bad_pruning_specs(trained, tmp_path, capsys):
    for spec, msg in (("random:0.5", "unknown pruning method"), ("heads:1.5", "sparsity must be in"),
                      ("heads", "method:sparsity")):
        with pytest.raises(ValueError, match=msg):
            parse_prune(spec)
    assert main(["prune", f"--policy={trained[1]}", "--method=heads", "--sparsity=0.5",
                 f"--output_dir={tmp_path / 'x'}"]) == 2
    assert "--dataset" in capsys.readouterr().err


@pytest.mark.parametrize("method", ["channels", "heads", "structured"])
def test_sliced_model_equals_the_masked_one_and_is_smaller(trained, method, tmp_path):
    """Cutting the zeroed channels (heads) out of the tensors changes no output, shrinks the
    parameter count by what pruning removed, and both the sliced torch runtime and the ONNX
    export carry the smaller network."""
    import numpy as np

    from vlaforge.deploy.artifact import deploy
    from vlaforge.deploy.latency import observation
    from vlaforge.runtime.policy import example_inputs
    from vlaforge.runtime.torch_methods import sliced

    policy = load_policy(trained[1])
    masks = pruning_masks(policy.model, method, 0.5)
    apply_masks(policy.model, masks)
    small = sliced(policy.model)
    x = example_inputs(policy, batch=3)
    with torch.no_grad():
        torch.testing.assert_close(small(*x), policy.model(*x), atol=1e-5, rtol=1e-5)
    full, cut = (sum(p.numel() for p in m.parameters()) for m in (policy.model, small))
    zeroed = sum(int((m == 0).sum()) for m in masks.values())
    assert full - cut >= 0.9 * zeroed  # what pruning zeroed is gone (head pruning also drops q and k rows)
    if method in ("heads", "structured"):
        assert all(a.n_heads == 2 for a in small.modules() if type(a).__name__ == "Attention")
    pruned_dir = policy.save(tmp_path / "pruned")
    deployed = load_policy(deploy(pruned_dir, tmp_path / "sliced", "sliced"))
    assert sum(p.numel() for p in deployed.model.parameters()) == cut
    obs = observation(policy)
    policy.reset(), deployed.reset()
    np.testing.assert_allclose(deployed.act(obs), policy.act(obs), atol=1e-5)
    assert sliced(small) is not small and sum(p.numel() for p in sliced(small).parameters()) == cut  # idempotent
    pytest.importorskip("onnxruntime")
    onnx_dir = deploy(pruned_dir, tmp_path / "onnx", "onnx-fp32")
    dense_dir = deploy(trained[1], tmp_path / "onnx_dense", "onnx-fp32")
    saved = (dense_dir / "model.onnx").stat().st_size - (onnx_dir / "model.onnx").stat().st_size
    assert saved >= 0.9 * 4 * (full - cut)  # the graph stores the sliced fp32 weights
