import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch
from helpers import write_dataset

import vlaforge
from vlaforge.models.config import PolicyConfig
from vlaforge.train.config import OptimConfig, TrainConfig
from vlaforge.train.optim import lr_at
from vlaforge.train.trainer import TrainingError, train

TINY = PolicyConfig(d_model=32, n_layers=1, n_heads=2, chunk_size=4, vision_channels=[8, 8], n_obs_steps=2)


def tiny_cfg(tmp_path, ds, **kw):
    base = dict(dataset=str(ds), output_dir=str(tmp_path / "run"), steps=12, batch_size=8, log_every=1,
                ckpt_every=6, tracking="none", policy=TINY, optim=OptimConfig(warmup_steps=3))
    base.update(kw)
    return TrainConfig(**base)


def losses(run_dir):
    return [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "ds"
    write_dataset(root, episodes=3, length=10)
    return root


def test_resume_continues_exactly(tmp_path, dataset):
    cfg = tiny_cfg(tmp_path, dataset)
    train(cfg, show_progress=False)
    full = losses(tmp_path / "run")
    assert len(full) == 12
    # Simulate a crash after the step-6 checkpoint: drop what came later, then resume.
    shutil.rmtree(tmp_path / "run/checkpoints/step_0000012")
    shutil.rmtree(tmp_path / "run/policy")
    train(tiny_cfg(tmp_path, dataset, resume=True), show_progress=False)
    resumed = losses(tmp_path / "run")
    assert len(resumed) == 12
    assert resumed[:6] == full[:6]
    np.testing.assert_allclose(resumed[6:], full[6:], rtol=1e-6)


def test_resume_refuses_a_change_of_what_defines_the_run(tmp_path, dataset):
    train(tiny_cfg(tmp_path, dataset, steps=6, ckpt_every=3), show_progress=False)
    shutil.rmtree(tmp_path / "run/checkpoints/step_0000006")
    shutil.rmtree(tmp_path / "run/policy")
    config = (tmp_path / "run/config.yaml").read_text()
    for change, named in [({"seed": 1}, "seed: 0 -> 1"), ({"optim": OptimConfig(warmup_steps=3, lr=2e-3)}, "optim.lr"),
                          ({"dataset": str(tmp_path)}, "dataset"),
                          ({"policy": dataclasses.replace(TINY, d_model=64)}, "policy.d_model: 32 -> 64"),
                          ({"batch_size": 4}, "effective batch: 8 -> 4")]:
        with pytest.raises(ValueError, match=f"--resume would change what defines the run .*{named}"):
            train(tiny_cfg(tmp_path, dataset, steps=6, ckpt_every=3, resume=True, **change), show_progress=False)
        assert (tmp_path / "run/config.yaml").read_text() == config  # nothing was written
    # How the work is laid out is not part of the definition: half the micro-batch, twice accumulated.
    train(tiny_cfg(tmp_path, dataset, steps=6, ckpt_every=3, resume=True, batch_size=4, accumulate=2,
                   log_every=2, dataset=str(dataset) + "/."), show_progress=False)
    assert (tmp_path / "run/policy").is_dir()
    shutil.rmtree(tmp_path / "run/policy")
    with pytest.warns(UserWarning, match="resuming .* with changed settings: seed: 0 -> 1"):
        train(tiny_cfg(tmp_path, dataset, steps=6, ckpt_every=3, resume=True, seed=1, resume_allow_changes=True),
              show_progress=False)


def test_metrics_survive_a_torn_last_line_and_a_restart_before_any_checkpoint(tmp_path, dataset):
    train(tiny_cfg(tmp_path, dataset, steps=6, ckpt_every=3), show_progress=False)
    shutil.rmtree(tmp_path / "run/checkpoints/step_0000006")
    shutil.rmtree(tmp_path / "run/policy")
    log = tmp_path / "run/metrics.jsonl"
    log.write_text(log.read_text() + '{"step": 7, "lo')  # killed mid-write
    with pytest.warns(UserWarning, match="metrics.jsonl: dropping a torn last line"):
        train(tiny_cfg(tmp_path, dataset, steps=6, ckpt_every=3, resume=True), show_progress=False)
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [1, 2, 3, 4, 5, 6]

    # Killed before its first checkpoint, then started again without --resume: no repeated rows.
    run = tmp_path / "early"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 9.0}\n')
    train(tiny_cfg(tmp_path, dataset, steps=3, ckpt_every=3, output_dir=str(run)), show_progress=False)
    assert [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]


def test_training_reduces_loss_and_exports_policy(tmp_path, dataset):
    cfg = tiny_cfg(tmp_path, dataset, steps=150, log_every=10, ckpt_every=150, batch_size=16, precision="bf16",
                   optim=OptimConfig(lr=3e-3, warmup_steps=10),
                   accumulate=2, tracking="mlflow")
    train(cfg, show_progress=False)
    ls = losses(tmp_path / "run")
    assert ls[-1] < 0.8 * ls[0]
    policy = vlaforge.load_policy(tmp_path / "run/policy")
    rng = np.random.default_rng(0)
    a = policy.act({"image": rng.integers(0, 255, (1, 64, 64, 3), dtype=np.uint8),
                    "state": np.zeros(4, np.float32), "instruction": "reach the red cube"})
    assert a.shape == (4, 4) and np.all(np.abs(a) <= 1)
    assert (tmp_path / "run/config.yaml").is_file()
    assert any((tmp_path / "run/mlruns").rglob("loss"))  # metrics reached the local MLflow store


def test_snapshots_are_loadable_policies_along_the_run(tmp_path, dataset):
    train(tiny_cfg(tmp_path, dataset, steps=6, ckpt_every=6, snapshot_every=2, ema_decay=0.0), show_progress=False)
    snaps = sorted(p.name for p in (tmp_path / "run/snapshots").iterdir())
    assert snaps == ["step_0000002", "step_0000004"]  # the final step is the policy itself
    early, final = (vlaforge.load_policy(tmp_path / "run" / d) for d in ("snapshots/step_0000002", "policy"))
    assert early.meta == final.meta
    w_early, w_final = early.model.state_dict(), final.model.state_dict()
    assert w_early.keys() == w_final.keys()
    assert any(not torch.equal(w_early[k], w_final[k]) for k in w_early)
    with pytest.raises(ValueError, match="snapshot_every"):
        train(tiny_cfg(tmp_path / "neg", dataset, snapshot_every=-1), show_progress=False)


@pytest.mark.parametrize("change, message", [
    ({"ckpt_every": 0}, "ckpt_every must be >= 1"), ({"log_every": 0}, "log_every must be >= 1"),
    ({"policy": dataclasses.replace(TINY, d_model=0)}, "policy.d_model must be >= 1, got 0"),
    ({"policy": dataclasses.replace(TINY, n_heads=3)},
     r"policy.d_model \(32\) must be a multiple of policy.n_heads \(3\)"),
])
def test_bad_training_settings_get_one_line_errors(tmp_path, dataset, change, message):
    with pytest.raises(ValueError, match=message):
        train(tiny_cfg(tmp_path, dataset, **change), show_progress=False)
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_existing_run_is_protected(tmp_path, dataset):
    train(tiny_cfg(tmp_path, dataset, steps=2, ckpt_every=2), show_progress=False)
    before = (tmp_path / "run/policy/model.safetensors").read_bytes()
    with pytest.raises(FileExistsError, match="--resume"):
        train(tiny_cfg(tmp_path, dataset, steps=2), show_progress=False)
    assert (tmp_path / "run/policy/model.safetensors").read_bytes() == before


def test_nan_loss_stops_with_checkpoint_intact(tmp_path, dataset, monkeypatch):
    from vlaforge.models.policy import VLAPolicy

    real = VLAPolicy.loss
    calls = {"n": 0}

    def flaky(self, batch):
        calls["n"] += 1
        out = real(self, batch)
        return out * float("nan") if calls["n"] > 4 else out

    monkeypatch.setattr(VLAPolicy, "loss", flaky)
    with pytest.raises(TrainingError, match="loss is nan at step 4"):
        train(tiny_cfg(tmp_path, dataset, ckpt_every=2), show_progress=False)
    ckpt = tmp_path / "run/checkpoints/step_0000004"
    assert (ckpt / "state.json").is_file() and list(ckpt.glob("*.safetensors"))


def test_fp16_refused_on_cpu(tmp_path, dataset):
    with pytest.raises(ValueError, match="fp16"):
        train(tiny_cfg(tmp_path, dataset, precision="fp16", device="cpu"), show_progress=False)


def test_lr_schedule_shape():
    cfg = OptimConfig(lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_at(0, 100, cfg) == pytest.approx(0.1)
    assert lr_at(9, 100, cfg) == pytest.approx(1.0)
    assert lr_at(55, 100, cfg) == pytest.approx(0.55, abs=1e-6)
    assert lr_at(100, 100, cfg) == pytest.approx(0.1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 + GradScaler needs CUDA")
def test_fp16_on_cuda(tmp_path, dataset):
    train(tiny_cfg(tmp_path, dataset, precision="fp16", device="cuda", steps=4), show_progress=False)
    assert (tmp_path / "run/policy/model.safetensors").is_file()


def test_fine_tuning_extends_the_vocabulary_and_starts_from_the_base(tmp_path, dataset):
    from vlaforge.data.dataset import LeRobotDataset
    from vlaforge.runtime.policy import load_policy
    from vlaforge.train.trainer import _finetune_model

    base_dir = train(tiny_cfg(tmp_path, dataset, steps=40), show_progress=False)
    new_ds = tmp_path / "new"
    write_dataset(new_ds, episodes=3, seed=5, length=10, tasks=["open the green drawer"])
    base = load_policy(base_dir)
    tuned_dir = train(tiny_cfg(tmp_path, new_ds, output_dir=str(tmp_path / "tuned"), policy=PolicyConfig(),
                               init_from=str(base_dir)), show_progress=False)
    tuned = load_policy(tuned_dir)
    old = base.tokenizer.vocab
    assert tuned.tokenizer.vocab[: len(old)] == old
    assert set(tuned.tokenizer.vocab[len(old):]) == {"drawer", "green", "open"} - set(old)
    assert tuned.cfg == base.cfg and tuned.meta["init_from"] == str(base_dir)
    assert tuned.meta["spec"] == base.meta["spec"]
    np.testing.assert_array_equal(tuned.normalizer.action_std, base.normalizer.action_std)  # base statistics kept

    # Before any fine-tuning step the extended model acts exactly as the base does on the new words.
    spec = dict(base.meta["spec"], vocab_size=len(tuned.tokenizer))
    start = _finetune_model(base, spec).eval()
    image = torch.randint(0, 255, (2, 2, 1, 64, 64, 3), dtype=torch.uint8)
    state = torch.randn(2, 2, 4)
    text = "open the green drawer"
    old_ids = torch.tensor([base.tokenizer.encode(text, TINY.max_text_tokens)] * 2)
    new_ids = torch.tensor([tuned.tokenizer.encode(text, TINY.max_text_tokens)] * 2)
    assert not torch.equal(old_ids, new_ids)
    with torch.no_grad():
        torch.testing.assert_close(start(image, state, new_ids), base.model(image, state, old_ids))

    # Same data, same steps: starting from the base beats starting from scratch.
    scratch = losses(train(tiny_cfg(tmp_path, new_ds, output_dir=str(tmp_path / "scratch")), show_progress=False).parent)
    assert losses(tuned_dir.parent)[0] < scratch[0]
    assert LeRobotDataset(new_ds).info["vlaforge"]["suite"] == tuned.meta["suite"]


def test_fine_tuning_rejects_a_mismatched_policy_or_dataset(tmp_path, dataset):
    base_dir = train(tiny_cfg(tmp_path, dataset, steps=2), show_progress=False)
    with pytest.raises(ValueError, match="takes the architecture from that policy"):
        train(tiny_cfg(tmp_path, dataset, output_dir=str(tmp_path / "a"), policy=PolicyConfig(d_model=64),
                       init_from=str(base_dir)), show_progress=False)
    big = tmp_path / "big"
    write_dataset(big, episodes=2, size=32, length=8)
    with pytest.raises(ValueError, match="image_size 32 differs from the --init_from policy's 64"):
        train(tiny_cfg(tmp_path, big, output_dir=str(tmp_path / "b"), policy=PolicyConfig(), init_from=str(base_dir)),
              show_progress=False)
    with pytest.raises(FileNotFoundError, match="lacks config.json"):
        train(tiny_cfg(tmp_path, dataset, output_dir=str(tmp_path / "c"), init_from=str(tmp_path)), show_progress=False)


@pytest.mark.parametrize("head,backbone,ffn", [("tokenized", "mamba", "moe"), ("dit", "transformer", "mlp"),
                                               ("flow", "mamba", "mlp"), ("regression", "transformer", "moe")])
def test_every_architecture_trains_exports_and_acts(tmp_path, dataset, head, backbone, ffn):
    policy_cfg = dataclasses.replace(TINY, head=head, backbone=backbone, ffn=ffn, sample_steps=3)
    train(tiny_cfg(tmp_path, dataset, steps=4, policy=policy_cfg, precision="bf16"), show_progress=False)
    log = [json.loads(line) for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["loss"]) for r in log)
    if ffn == "moe":  # routing is logged: dropped share and per-expert shares that sum to one
        assert 0.0 <= log[-1]["moe_dropped"] < 1.0
        assert sum(log[-1][f"moe_expert{i}_share"] for i in range(4)) == pytest.approx(1.0, abs=1e-4)
    policy = vlaforge.load_policy(tmp_path / "run/policy")
    assert (policy.cfg.head, policy.cfg.backbone, policy.cfg.ffn) == (head, backbone, ffn)
    rng = np.random.default_rng(0)
    o = {"image": rng.integers(0, 255, (1, 64, 64, 3), dtype=np.uint8), "state": np.zeros(4, np.float32),
         "instruction": "reach the red cube"}
    policy.reset(seed=5)
    a = policy.act(o)
    policy.reset(seed=5)
    assert a.shape == (4, 4) and np.array_equal(a, policy.act(o))  # sampling heads reproduce from the seed


def test_unknown_architecture_names_fail_clearly(tmp_path, dataset):
    for field, bad, kind in (("head", "difusion", "action head"), ("backbone", "rwkv", "backbone"),
                             ("ffn", "glu", "feed-forward")):
        cfg = tiny_cfg(tmp_path / field, dataset, policy=dataclasses.replace(TINY, **{field: bad}))
        with pytest.raises(KeyError, match=f"unknown {kind} '{bad}'"):
            train(cfg, show_progress=False)
