"""Gradient accumulation, skipped steps, and 2-process DDP / FSDP2 / tensor / pipeline parallelism
on gloo matching one process with the whole batch; sharded checkpoints resumed in one process."""

import json
import os
import shutil
import subprocess
import sys
import warnings

import pytest
import torch
from helpers import free_port, write_dataset
from safetensors.torch import load_file

from vlaforge.models.config import PolicyConfig
from vlaforge.models.policy import build_policy
from vlaforge.train import amp, parallel
from vlaforge.train.config import OptimConfig, ParallelConfig, TrainConfig
from vlaforge.train.optim import scaled_lr
from vlaforge.train.trainer import BCObjective, _warn_batch_norm, train_step

TINY = ["--policy.d_model=32", "--policy.n_layers=2", "--policy.n_heads=2", "--policy.chunk_size=4",
        "--policy.vision_channels=[8,8]", "--tracking=none", "--precision=fp32", "--log_every=1", "--ckpt_every=3",
        "--optim.warmup_steps=2", "--steps=6", "--threads=1"]
SPEC = {"image_size": 64, "cameras": ["front"], "state_dim": 4, "action_dim": 4, "vocab_size": 4}


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return build_policy(PolicyConfig(d_model=32, n_layers=1, n_heads=2, chunk_size=4, vision_channels=[8, 8]), SPEC)


def batch(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    valid = torch.ones(n, 4, dtype=torch.bool)
    valid[::3, 2:] = False  # some chunks run past their episode's end
    return {"image": torch.randint(0, 255, (n, 1, 1, 64, 64, 3), dtype=torch.uint8, generator=g),
            "state": torch.randn(n, 1, 4, generator=g), "tokens": torch.randint(1, 4, (n, 6), generator=g),
            "action": torch.randn(n, 4, 4, generator=g), "action_valid": valid}


def one_step(micro_batches):
    """One SGD step (the update is the gradient itself, so gradient differences are not hidden by
    Adam's normalisation of near-zero gradients)."""
    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = amp.grad_scaler("fp32", torch.device("cpu"))
    loss, norm, skipped = train_step(BCObjective(model), opt, scaler, micro_batches, "fp32", torch.device("cpu"), 1.0)
    return loss, norm, skipped, model


def test_accumulated_micro_batches_equal_one_large_batch():
    big = batch(8)
    halves = [{k: v[:4] for k, v in big.items()}, {k: v[4:] for k, v in big.items()}]
    loss_a, norm_a, _, a = one_step([big])
    loss_b, norm_b, _, b = one_step(halves)
    assert loss_a == pytest.approx(loss_b, rel=1e-5)
    assert float(norm_a) == pytest.approx(float(norm_b), rel=1e-4)
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, atol=1e-6, rtol=1e-5, msg=name)


@pytest.mark.parametrize("fp16_scaler", [False, True])
def test_non_finite_gradients_skip_the_step(fp16_scaler):
    model = tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    scaler = torch.amp.GradScaler("cpu", enabled=fp16_scaler, init_scale=1024.0)
    model.head.weight.register_hook(lambda g: torch.full_like(g, float("inf")))
    _, norm, skipped = train_step(BCObjective(model), opt, scaler, [batch(4)], "fp32", torch.device("cpu"), 1.0)
    assert skipped and not torch.isfinite(norm)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    if fp16_scaler:
        assert scaler.get_scale() == 512.0  # backed off
    _, _, skipped = one_step([batch(4)])[:3]
    assert not skipped


def test_lr_scaling_rules():
    cfg = OptimConfig(lr=1e-3, reference_batch=64)
    assert scaled_lr(cfg, 256) == 1e-3
    assert scaled_lr(OptimConfig(lr=1e-3, lr_scaling="linear"), 256) == pytest.approx(4e-3)
    assert scaled_lr(OptimConfig(lr=1e-3, lr_scaling="sqrt"), 256) == pytest.approx(2e-3)
    with pytest.raises(ValueError, match="lr_scaling 'cube'"):
        scaled_lr(OptimConfig(lr_scaling="cube"), 64)


def test_batch_norm_warning():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    with pytest.warns(UserWarning, match="BatchNorm"):
        _warn_batch_norm(model, TrainConfig(accumulate=2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _warn_batch_norm(model, TrainConfig(accumulate=1))
        _warn_batch_norm(tiny_model(), TrainConfig(accumulate=4))


def test_parallel_degrees_are_checked():
    with pytest.raises(ValueError, match="world size is 1"):
        parallel.init(ParallelConfig(dp=2), torch.device("cpu"))
    with pytest.raises(ValueError, match="tp combines with parallel.fsdp"):
        parallel.mesh_shape(ParallelConfig(dp=2, tp=2))
    with pytest.raises(ValueError, match="parallel.fsdp must be >= 1"):
        parallel.mesh_shape(ParallelConfig(fsdp=0))


# --- two processes on gloo -------------------------------------------------------------------


def run(tmp_path, name, args, nproc=1, resume=False):
    out = tmp_path / name
    base = [f"--dataset={tmp_path / 'data'}", f"--output_dir={out}", *TINY, *args] + (["--resume=true"] if resume else [])
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if nproc == 1:
        cmd = [sys.executable, "-m", "vlaforge", "train", *base]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "vlaforge", "train", *base]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


def losses(run_dir):
    return [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def weights(run_dir):
    return load_file(str(run_dir / "policy" / "model.safetensors"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One process, batch 8: what every 2-process run must reproduce."""
    tmp = tmp_path_factory.mktemp("par")
    write_dataset(tmp / "data", episodes=3, length=10)
    return tmp, run(tmp, "single", ["--batch_size=8"])


@pytest.mark.parametrize("mode", ["dp", "fsdp", "tp", "pp"])
def test_two_process_run_matches_one_process(reference, mode):
    tmp, single = reference
    per_rank = 4 if mode in ("dp", "fsdp") else 8  # tensor and pipeline ranks share one batch
    extra = ["--parallel.pp_microbatches=4", "--parallel.pp_schedule=gpipe"] if mode == "pp" else []
    out = run(tmp, mode, [f"--parallel.{mode}=2", f"--batch_size={per_rank}", *extra], nproc=2)
    assert losses(out) == pytest.approx(losses(single), rel=1e-4)
    want = weights(single)
    got = weights(out)
    assert set(got) == set(want)
    for k in want:
        torch.testing.assert_close(got[k], want[k], atol=2e-4, rtol=1e-3, msg=k)
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["effective_batch"] == 8
    held = summary["local_param_fraction"]  # rank 0's share of the weights
    assert {"dp": held == 1.0, "fsdp": 0.45 < held < 0.55, "tp": 0.5 < held < 0.9, "pp": 0.5 < held < 1.0}[mode], held


def test_two_nodes_on_loopback_match_one_process(reference):
    """What a two-machine cluster runs, on one machine: two torchrun agents (``--nnodes=2``, one
    process per node) meeting through c10d rendezvous on 127.0.0.1, data parallel across them."""
    tmp, single = reference
    port = free_port()
    out = tmp / "two_nodes"
    args = [f"--dataset={tmp / 'data'}", f"--output_dir={out}", *TINY, "--parallel.dp=2", "--batch_size=4"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1", "--rdzv_backend=c10d",
           f"--rdzv_endpoint=127.0.0.1:{port}", "--rdzv_id=vlaforge-two-nodes", "--local_addr=127.0.0.1",
           "-m", "vlaforge", "train", *args]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    agents = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) for _ in range(2)]
    logs = [a.communicate(timeout=300)[0] for a in agents]
    assert [a.returncode for a in agents] == [0, 0], "\n".join(log[-3000:] for log in logs)
    assert losses(out) == pytest.approx(losses(single), rel=1e-4)
    for k, v in weights(single).items():
        torch.testing.assert_close(weights(out)[k], v, atol=2e-4, rtol=1e-3, msg=k)
    assert json.loads((out / "train_summary.json").read_text())["world_size"] == 2


@pytest.mark.parametrize("mode", ["fsdp", "pp"])
def test_sharded_checkpoint_resumes_at_another_world_size(reference, mode):
    tmp, single = reference
    args = ["--parallel.fsdp=2", "--batch_size=4"] if mode == "fsdp" else ["--parallel.pp=2", "--batch_size=8"]
    out = run(tmp, f"{mode}_resume", args, nproc=2)  # pp: the default 1F1B schedule
    ckpt = sorted((out / "checkpoints").glob("step_*"))
    assert [p.name for p in ckpt] == ["step_0000003", "step_0000006"]
    assert len(list(ckpt[0].glob("*.safetensors"))) == 2  # one shard file per rank
    # Lose everything after step 3, then finish on one process with the whole batch.
    shutil.rmtree(ckpt[1])
    shutil.rmtree(out / "policy")
    run(tmp, f"{mode}_resume", ["--batch_size=8"], resume=True)
    assert losses(out) == pytest.approx(losses(single), rel=1e-4)
    for k, v in weights(single).items():
        torch.testing.assert_close(weights(out)[k], v, atol=2e-4, rtol=1e-3, msg=k)


@pytest.mark.slow
@pytest.mark.parametrize("mode", [["--parallel.dp=2", "--parallel.fsdp=2"], ["--parallel.fsdp=2", "--parallel.tp=2"]])
def test_two_dimensional_meshes_match_one_process(reference, mode):
    """HSDP (replicate x shard) and FSDP x tensor parallel on 4 processes."""
    tmp, single = reference
    per_rank = 2 if "--parallel.dp=2" in mode else 4
    out = run(tmp, "_".join(m.split(".")[1] for m in mode), [*mode, f"--batch_size={per_rank}"], nproc=4)
    assert losses(out) == pytest.approx(losses(single), rel=1e-4)
    for k, v in weights(single).items():
        torch.testing.assert_close(weights(out)[k], v, atol=2e-4, rtol=1e-3, msg=k)


def test_data_parallel_runs_the_other_architectures(reference):
    """DDP with a Mamba backbone, MoE feed-forward and tokenized head matches one process. The
    capacity is ample and the balancing loss off: both depend on which tokens share a forward."""
    tmp, _ = reference
    arch = ["--policy.backbone=mamba", "--policy.ffn=moe", "--policy.head=tokenized", "--policy.moe_capacity=100",
            "--policy.moe_aux_weight=0"]
    single = run(tmp, "arch_single", [*arch, "--batch_size=8"])
    out = run(tmp, "arch_dp", [*arch, "--parallel.dp=2", "--batch_size=4"], nproc=2)
    assert losses(out) == pytest.approx(losses(single), rel=1e-4)
    for k, v in weights(single).items():
        torch.testing.assert_close(weights(out)[k], v, atol=2e-4, rtol=1e-3, msg=k)


def test_tensor_parallel_refuses_what_it_cannot_split():
    for kw in ({"ffn": "moe"}, {"backbone": "mamba"}):
        torch.manual_seed(0)
        model = build_policy(PolicyConfig(d_model=32, n_layers=1, n_heads=2, chunk_size=4, vision_channels=[8, 8], **kw),
                             SPEC)
        with pytest.raises(ValueError, match="tensor parallelism splits attention heads"):
            parallel.apply_tp(model, mesh=None)
