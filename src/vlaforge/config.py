"""Typed run configs: dataclasses, YAML load/save and ``--a.b=value`` overrides.

One dataclass tree describes a run completely; the CLI is generated from the same tree, and
every run saves its resolved tree as ``config.yaml`` beside its outputs.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from vlaforge.files import atomic_write_text

# Scene seeds: collection draws below EVAL_SEEDS, evaluation from it, so an evaluation never
# replays a scene a policy was trained on.
EVAL_SEEDS = 10**9


class ConfigError(ValueError):
    """A config key, value or file that cannot be used."""


@dataclass
class EnvConfig:
    suite: str = field(default="tabletop", metadata={"help": "suite name (see `vlaforge list`)"})
    tasks: list[str] = field(default_factory=list, metadata={"help": "task families; empty = every task"})
    image_size: int = field(default=64, metadata={"help": "camera resolution in pixels (64 or 128)"})
    cameras: list[str] = field(default_factory=list, metadata={"help": "camera views; empty = the suite's default"})
    max_steps: int = field(default=0, metadata={"help": "episode step limit; 0 = the suite's default"})
    num_objects: int = field(default=3, metadata={"help": "objects on the table (2 or 3)"})


def _range(lo: float, hi: float, doc: str):
    return field(default_factory=lambda: [lo, hi], metadata={"help": doc})


@dataclass
class VisualRandomization:
    """Appearance ranges, each ``[lo, hi]`` sampled uniformly per episode; defaults leave it nominal."""

    object_color: list[float] = _range(0.0, 0.0, "RGB offset added per channel to each task object's colour")
    surface_color: list[float] = _range(0.0, 0.0, "RGB offset per channel of table and backdrop (backdrop shown)")
    texture: float = field(default=0.0, metadata={"help": "probability of a random texture on table and backdrop"})
    light_intensity: list[float] = _range(1.0, 1.0, "scale of every light's brightness")
    light_direction: list[float] = _range(0.0, 0.0, "tilt of the lights in degrees (switches the suite's lights on)")
    camera_position: list[float] = _range(0.0, 0.0, "offset of each camera coordinate (m)")
    camera_rotation: list[float] = _range(0.0, 0.0, "rotation about each camera axis (degrees)")
    camera_fov: list[float] = _range(0.0, 0.0, "field-of-view offset (degrees)")


@dataclass
class PhysicsRandomization:
    """Scales of the nominal physical parameters, each ``[lo, hi]`` sampled per episode."""

    friction: list[float] = _range(1.0, 1.0, "scale of every contact friction coefficient")
    mass: list[float] = _range(1.0, 1.0, "scale of every body's mass and inertia")
    damping: list[float] = _range(1.0, 1.0, "scale of every joint's damping")
    actuator_gain: list[float] = _range(1.0, 1.0, "scale of every actuator's gain (servo stiffness)")


@dataclass
class SensorRandomization:
    """Sensor and timing imperfections, each ``[lo, hi]`` sampled per episode."""

    image_noise: list[float] = _range(0.0, 0.0, "std of Gaussian pixel noise (0-255 scale)")
    blur: list[float] = _range(0.0, 0.0, "std of Gaussian blur (pixels)")
    proprio_noise: list[float] = _range(0.0, 0.0, "std of Gaussian noise on the proprio state")
    latency: list[int] = field(default_factory=lambda: [0, 0], metadata={"help": "steps each action is delayed"})
    drop_frames: list[float] = _range(0.0, 0.0, "probability per step that the camera repeats its last frame")
    camera_offset: list[float] = _range(0.0, 0.0, "image shift in pixels per axis (calibration error)")


@dataclass
class DomainConfig:
    preset: str = field(default="", metadata={"help": "a named domain (see `vlaforge list`) instead of the ranges"})
    visual: VisualRandomization = field(default_factory=VisualRandomization)
    physics: PhysicsRandomization = field(default_factory=PhysicsRandomization)
    sensor: SensorRandomization = field(default_factory=SensorRandomization)


@dataclass
class SafetyConfig:
    """Limits the safety filter enforces on an end-effector-delta robot (tabletop units: m, s, N)."""

    workspace_lo: list[float] = field(default_factory=lambda: [-0.22, -0.22, 0.012],
                                      metadata={"help": "lower corner of the allowed end-effector box (m)"})
    workspace_hi: list[float] = field(default_factory=lambda: [0.22, 0.22, 0.26],
                                      metadata={"help": "upper corner of the allowed end-effector box (m)"})
    keep_out: list[list[float]] = field(default_factory=list,
                                        metadata={"help": "spheres [x, y, z, radius] the end effector must not enter"})
    max_speed: float = field(default=0.3, metadata={"help": "per-axis end-effector speed limit (m/s)"})
    max_accel: float = field(default=6.0, metadata={"help": "per-axis acceleration limit (m/s^2)"})
    max_grip_force: float = field(default=8.0, metadata={"help": "gripper squeeze force limit (N)"})
    gamma: float = field(default=0.5, metadata={"help": "barrier decay rate in (0, 1]: the share of the margin one step may use"})
    margin: float = field(default=0.005, metadata={"help": "distance kept from every boundary (m)"})


@dataclass
class SafeRLConfig:
    """Constrained fine-tuning of a trained policy with PPO-Lagrangian (vlaforge.safety.safe_rl)."""

    policy: str = field(default="", metadata={"help": "trained policy directory (regression head) to fine-tune"})
    task: str = field(default="press_button", metadata={"help": "task family of the policy's suite"})
    split: str = field(default="train", metadata={"help": "scene/instruction split"})
    algorithm: str = field(default="ppo-lagrangian", metadata={"help": "ppo-lagrangian | ppo (unconstrained baseline)"})
    # The speed limit is tighter than the filter's default: the demonstrations command up to
    # 0.4 m/s, so the constraint binds and the policy has to learn to move slower.
    safety: SafetyConfig = field(default_factory=lambda: SafetyConfig(max_speed=0.25))
    cost_terms: list[str] = field(
        default_factory=lambda: ["workspace", "keep_out", "speed"],
        metadata={"help": "violations that cost 1 per step: workspace | keep_out | speed | accel | grip_force"},
    )
    graded: bool = field(
        default=True,
        metadata={"help": "speed and accel cost their excess over the limit (fraction of it) instead of 1 per violating step"},
    )
    cost_limit: float = field(default=5.0, metadata={"help": "allowed expected cost per episode"})
    iterations: int = field(default=60, metadata={"help": "rollout + update rounds"})
    episodes_per_iteration: int = field(default=16, metadata={"help": "episodes collected per round"})
    action_horizon: int = field(default=1, metadata={"help": "actions executed per decision; 0 = chunk_size/2"})
    trainable: str = field(default="head", metadata={"help": "head (the action head learns) | all (the whole network)"})
    epochs: int = field(default=10, metadata={"help": "PPO passes over each round's decisions"})
    minibatch_size: int = field(default=64, metadata={"help": "decisions per gradient step"})
    lr: float = field(default=3e-4, metadata={"help": "actor learning rate"})
    head_lr: float = field(default=1e-3, metadata={"help": "learning rate of the log-std and the two value heads"})
    clip: float = field(default=0.2, metadata={"help": "PPO ratio clip"})
    target_kl: float = field(default=0.05, metadata={"help": "stop a round's epochs once the approximate KL passes this"})
    discount: float = field(default=0.99, metadata={"help": "discount per decision"})
    gae_lambda: float = field(default=0.95, metadata={"help": "GAE lambda"})
    init_std: float = field(default=0.3, metadata={"help": "initial exploration std (normalised action units)"})
    lagrange_lr: float = field(default=0.1, metadata={"help": "step size of the multiplier's ascent on J_c - cost_limit"})
    lagrange_init: float = field(default=0.0, metadata={"help": "initial Lagrange multiplier"})
    eval_episodes: int = field(default=20, metadata={"help": "deterministic episodes before and after, on held-out seeds"})
    seed: int = field(default=0, metadata={"help": "seed of scenes (training) and exploration noise"})
    output_dir: str = field(default="runs/safe_rl", metadata={"help": "run directory (metrics, checkpoint, policy/)"})
    resume: bool = field(default=False, metadata={"help": "continue from the checkpoint in output_dir"})


@dataclass
class CollectConfig:
    env: EnvConfig = field(default_factory=EnvConfig)
    split: str = field(default="train", metadata={"help": "scene/instruction split to draw from"})
    episodes_per_task: int = field(default=50, metadata={"help": "successful expert episodes per task"})
    workers: int = field(default=0, metadata={"help": "worker processes; 0 = one per core"})
    seed: int = field(default=0, metadata={"help": "first scene seed"})
    noise: float = field(default=0.3, metadata={"help": "std of action noise executed (not recorded), DART-style"})
    post_success_steps: int = field(default=5, metadata={"help": "expert steps recorded after the success step"})
    keep_failures: bool = field(
        default=False, metadata={"help": "record each scene's first attempt even when the expert fails (for QC, relabelling)"}
    )
    output: str = field(default="data/tabletop", metadata={"help": "dataset directory"})
    scenes: str = field(
        default="", metadata={"help": "selection JSON (vlaforge active) naming the (task, seed) scenes to collect instead"}
    )
    resume: bool = field(default=False, metadata={"help": "continue an interrupted collection in `output`"})
    domain: DomainConfig = field(default_factory=DomainConfig)


@dataclass
class PolicyConfig:
    name: str = field(default="vla", metadata={"help": "policy architecture"})
    d_model: int = field(default=128, metadata={"help": "transformer width"})
    n_layers: int = field(default=4, metadata={"help": "fusion transformer layers"})
    n_heads: int = field(default=4, metadata={"help": "attention heads"})
    chunk_size: int = field(default=8, metadata={"help": "actions predicted per call"})
    n_obs_steps: int = field(default=1, metadata={"help": "frames of observation history"})
    vision_channels: list[int] = field(default_factory=lambda: [32, 64, 64], metadata={"help": "CNN stage widths"})
    max_text_tokens: int = field(default=16, metadata={"help": "instruction length in tokens"})
    text_encoder: str = field(default="words", metadata={"help": "instruction tokens and embeddings: words | wordllama"})
    text_finetune: bool = field(default=False, metadata={"help": "wordllama: train the pretrained embeddings too"})
    dropout: float = field(default=0.0, metadata={"help": "dropout in the transformer"})
    head: str = field(default="regression", metadata={"help": "action head: regression | tokenized | dit | flow"})
    backbone: str = field(default="transformer", metadata={"help": "fusion token mixer: transformer | mamba"})
    ffn: str = field(default="mlp", metadata={"help": "fusion feed-forward: mlp | moe"})
    attention: str = field(default="auto", metadata={"help": "attention kernel: auto | flash | mem_efficient | math"})
    action_bins: int = field(default=256, metadata={"help": "tokenized head: bins per action dimension"})
    diffusion_steps: int = field(default=100, metadata={"help": "dit head: DDPM noise levels in training"})
    sample_steps: int = field(default=10, metadata={"help": "dit/flow heads: DDIM or Euler steps per action chunk"})
    head_layers: int = field(default=2, metadata={"help": "dit/flow heads: DiT blocks of the denoiser"})
    moe_experts: int = field(default=4, metadata={"help": "moe: experts per layer"})
    moe_top_k: int = field(default=2, metadata={"help": "moe: experts each token is routed to"})
    moe_capacity: float = field(default=1.25, metadata={"help": "moe: expert capacity as a multiple of an even share"})
    moe_aux_weight: float = field(default=0.01, metadata={"help": "moe: weight of the Switch load-balancing loss"})
    ssm_state: int = field(default=16, metadata={"help": "mamba: state size per channel"})
    ssm_expand: int = field(default=2, metadata={"help": "mamba: inner width as a multiple of d_model"})
    ssm_chunk: int = field(default=32, metadata={"help": "mamba: scan chunk length (parallel within, carried across)"})


@dataclass
class OptimConfig:
    name: str = field(default="adamw", metadata={"help": "adamw | radam | lion | sophia | lbfgs | kfac"})
    lr: float = field(default=1e-3, metadata={"help": "peak learning rate"})
    weight_decay: float = field(default=0.01, metadata={"help": "decoupled weight decay (matrices only)"})
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95], metadata={"help": "Adam betas"})
    warmup_steps: int = field(default=200, metadata={"help": "linear warmup steps"})
    min_lr_ratio: float = field(default=0.05, metadata={"help": "final lr as a fraction of the peak (cosine)"})
    lr_scaling: str = field(
        default="none", metadata={"help": "none | linear | sqrt: scale lr by the effective batch / reference_batch"}
    )
    reference_batch: int = field(default=64, metadata={"help": "effective batch that `lr` is tuned for"})
    curvature_every: int = field(default=10, metadata={"help": "steps between curvature updates (sophia, kfac)"})
    rho: float = field(default=0.04, metadata={"help": "sophia: Hessian scale in the clipped update"})
    damping: float = field(default=1e-3, metadata={"help": "kfac: Tikhonov damping of the Kronecker factors"})


@dataclass
class ParallelConfig:
    dp: int = field(default=1, metadata={"help": "replicated data-parallel degree (DDP)"})
    fsdp: int = field(default=1, metadata={"help": "sharded data-parallel degree (FSDP2)"})
    tp: int = field(default=1, metadata={"help": "tensor-parallel degree (fusion attention/MLP split by heads)"})
    pp: int = field(default=1, metadata={"help": "pipeline-parallel stages (fusion blocks split across ranks)"})
    pp_schedule: str = field(default="1f1b", metadata={"help": "gpipe | 1f1b"})
    pp_microbatches: int = field(default=4, metadata={"help": "pipeline micro-batches per batch"})


@dataclass
class TrainConfig:
    dataset: str = field(default="data/tabletop", metadata={"help": "dataset directory (LeRobot v3.0 layout)"})
    output_dir: str = field(default="runs/train", metadata={"help": "run directory"})
    steps: int = field(default=3000, metadata={"help": "optimizer steps"})
    batch_size: int = field(default=64, metadata={"help": "samples per micro-batch on each data-parallel rank"})
    accumulate: int = field(default=1, metadata={"help": "micro-batches per optimizer step"})
    precision: str = field(default="auto", metadata={"help": "auto | bf16 | fp16 | fp32 (fp16 only on CUDA)"})
    device: str = field(default="auto", metadata={"help": "auto | cpu | cuda"})
    image_shift: int = field(default=0, metadata={"help": "random-shift augmentation in pixels; 0 = off"})
    color_jitter: float = field(default=0.0, metadata={"help": "colour-jitter strength (0.2 = +-20% brightness, contrast, gains); 0 = off"})
    balance: str = field(default="none", metadata={"help": "none | task | instruction: draw every task (instruction) equally often"})
    init_encoder: str = field(
        default="", metadata={"help": "vision encoder from `vlaforge pretrain` (its output directory) to start from"}
    )
    clip_grad: float = field(default=1.0, metadata={"help": "max gradient norm; 0 = off"})
    ema_decay: float = field(default=0.995, metadata={"help": "EMA of weights; 0 = off"})
    ckpt_every: int = field(default=500, metadata={"help": "checkpoint period in steps"})
    log_every: int = field(default=25, metadata={"help": "metric logging period in steps"})
    snapshot_every: int = field(
        default=0, metadata={"help": "also export the policy every N steps to snapshots/step_N (learning curves); 0 = off"}
    )
    seed: int = field(default=0, metadata={"help": "seed for init, batches and dropout"})
    verify_data: bool = field(
        default=True, metadata={"help": "check the dataset's files against its manifest.json (sha256) before training"}
    )
    resume: bool = field(default=False, metadata={"help": "continue from the latest checkpoint in output_dir"})
    resume_allow_changes: bool = field(
        default=False, metadata={"help": "with --resume: accept settings that define the run (seed, data, model, optimizer, "
                                         "schedule) differing from the run's config.yaml instead of refusing"}
    )
    init_from: str = field(
        default="", metadata={"help": "policy directory to fine-tune (its architecture and normalisation are kept)"}
    )
    align_dataset: str = field(
        default="", metadata={"help": "target-domain dataset whose images (not actions) the visual features are aligned to"}
    )
    align_weight: float = field(default=1.0, metadata={"help": "weight of the feature-alignment (CORAL) loss"})
    qat: str = field(default="", metadata={"help": "quantization-aware training for a deploy method: int4-weight; empty = off"})
    prune: str = field(
        default="", metadata={"help": "prune and keep pruned: unstructured|channels|heads:sparsity, e.g. heads:0.25"}
    )
    teacher: str = field(
        default="", metadata={"help": "distillation: policy whose predicted chunks the student (--policy.*) learns"}
    )
    distill_weight: float = field(
        default=1.0, metadata={"help": "distillation: weight of the teacher's targets (1 - it: the demonstrations)"}
    )
    threads: int = field(default=0, metadata={"help": "torch CPU threads; 0 = all cores"})
    tracking: str = field(
        default="mlflow", metadata={"help": "mlflow | wandb | console | none (metrics.jsonl is always written)"}
    )
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)


@dataclass
class PretrainConfig:
    datasets: list[str] = field(
        default_factory=lambda: ["data/tabletop"], metadata={"help": "datasets whose frames (only) are learned from"}
    )
    method: str = field(default="simclr", metadata={"help": "mae | simclr | moco | predictive"})
    output_dir: str = field(default="runs/pretrain", metadata={"help": "run directory; the encoder is written here"})
    steps: int = field(default=1000, metadata={"help": "optimizer steps"})
    batch_size: int = field(default=64, metadata={"help": "frames per step"})
    lr: float = field(default=1e-3, metadata={"help": "AdamW learning rate (cosine decay after 50 warmup steps)"})
    horizon: int = field(default=4, metadata={"help": "predictive: how many steps ahead the predicted frame lies"})
    image_size: int = field(default=64, metadata={"help": "frame size the encoder is built for (must match the data)"})
    vision_channels: list[int] = field(default_factory=lambda: [32, 64, 64], metadata={"help": "CNN stage widths (as policy.vision_channels)"})
    d_model: int = field(default=128, metadata={"help": "policy width the FiLM layers condition on (as policy.d_model)"})
    precision: str = field(default="auto", metadata={"help": "auto | bf16 | fp16 | fp32"})
    device: str = field(default="auto", metadata={"help": "auto | cpu | cuda"})
    ckpt_every: int = field(default=500, metadata={"help": "checkpoint period in steps"})
    seed: int = field(default=0, metadata={"help": "seed for init and batches"})
    resume: bool = field(default=False, metadata={"help": "continue from the latest checkpoint in output_dir"})


@dataclass
class ActiveConfig:
    policy: str = field(default="", metadata={"help": "the current policy directory"})
    ensemble: list[str] = field(default_factory=list, metadata={"help": "ensemble: the other members' policy directories"})
    dataset: str = field(default="", metadata={"help": "its training dataset: episodes there count as covered (k-center)"})
    uncertainty: str = field(default="mc_dropout", metadata={"help": "ensemble | mc_dropout | head"})
    strategy: str = field(default="both", metadata={"help": "uncertainty | diversity | both | random"})
    select: int = field(default=8, metadata={"help": "scenes to choose"})
    max_per_task: int = field(default=0, metadata={"help": "at most this many scenes per task; 0 = no cap"})
    tasks: list[str] = field(default_factory=list, metadata={"help": "candidate tasks; empty = the policy's"})
    split: str = field(default="train", metadata={"help": "scene/instruction split of the pool"})
    pool_per_task: int = field(default=25, metadata={"help": "candidate scenes per task"})
    pool_seed: int = field(default=50_000, metadata={"help": "first candidate scene seed (kept apart from collect's)"})
    samples: int = field(default=8, metadata={"help": "mc_dropout / head: predictions per state"})
    horizon: int = field(default=10, metadata={"help": "policy steps per candidate scene over which uncertainty is averaged"})
    workers: int = field(default=0, metadata={"help": "worker processes; 0 = one per core"})
    seed: int = field(default=0, metadata={"help": "seed of the random strategy"})
    output: str = field(default="active/selection.json", metadata={"help": "selection file (collect --scenes reads it)"})


@dataclass
class DataConfig:
    action: str = field(default="check", metadata={"help": "check | clean | relabel | paraphrase | manifest | diff"})
    dataset: str = field(default="data/tabletop", metadata={"help": "the dataset (diff: the older version)"})
    other: str = field(default="", metadata={"help": "diff: the newer version (a dataset directory or a manifest.json)"})
    output: str = field(default="", metadata={"help": "clean/relabel: the new dataset; check: report directory (default <dataset>/qc)"})
    rules: list[str] = field(default_factory=list, metadata={"help": "check: rules to run; empty = all"})
    drop: list[str] = field(
        default_factory=lambda: ["nan", "failed", "truncated", "jerky", "duplicate", "outlier"],
        metadata={"help": "clean: rules whose flagged episodes are dropped (idle segments are always trimmed)"},
    )
    min_length: int = field(default=5, metadata={"help": "truncated: fewest frames an episode may have"})
    idle_steps: int = field(default=10, metadata={"help": "idle: steps without motion in a row that make a segment"})
    idle_eps: float = field(default=1e-3, metadata={"help": "idle: largest per-step state change that counts as no motion"})
    jerk: float = field(default=1.5, metadata={"help": "jerky: translation jerk |a[t] - 2a[t-1] + a[t-2]| threshold"})
    jerk_steps: int = field(default=10, metadata={"help": "jerky: frames in a row above the threshold that make a segment"})
    duplicate_distance: float = field(default=0.02, metadata={"help": "duplicate: RMS embedding distance of near-duplicates"})
    outlier_z: float = field(default=6.0, metadata={"help": "outlier: robust z-score of an outlying action"})
    per_instruction: int = field(default=3, metadata={"help": "paraphrase: new wordings per instruction"})
    seed: int = field(default=0, metadata={"help": "paraphrase: which wordings are chosen"})


@dataclass
class EvalConfig:
    policy: str = field(default="", metadata={"help": "policy directory"})
    split: str = field(default="unseen", metadata={"help": "split to evaluate"})
    tasks: list[str] = field(default_factory=list, metadata={"help": "task families; empty = the policy's tasks"})
    episodes: int = field(default=20, metadata={"help": "episodes per task"})
    workers: int = field(default=0, metadata={"help": "worker processes; 0 = one per core"})
    seed: int = field(default=EVAL_SEEDS, metadata={"help": "first scene seed (collection seeds stay below 1e9)"})
    output_dir: str = field(default="", metadata={"help": "where eval/ goes; empty = beside the policy"})
    videos_per_task: int = field(default=1, metadata={"help": "rollout GIFs per task in the report"})
    action_horizon: int = field(default=0, metadata={"help": "actions executed per chunk; 0 = chunk_size/2"})
    max_steps: int = field(default=0, metadata={"help": "episode step limit; 0 = the policy's env setting"})
    suite: str = field(
        default="", metadata={"help": "evaluate in another suite with the same tasks (cross-simulator); empty = the policy's"}
    )
    domain: DomainConfig = field(default_factory=DomainConfig)
    perturb: list[str] = field(
        default_factory=list, metadata={"help": "robustness sweep: factor=severity or factor=lo..hi (see docs/sim2real.md)"}
    )
    resume: bool = field(default=False, metadata={"help": "keep the finished episodes of the same evaluation (episodes.jsonl)"})


@dataclass
class TransferConfig:
    policy: str = field(default="", metadata={"help": "policy directory (trained in the source simulation)"})
    targets: list[str] = field(
        default_factory=lambda: ["real-proxy-A", "real-proxy-B", "real-proxy-C"],
        metadata={"help": "named target domains, or suites with the same tasks (tabletop-bullet: another simulator)"},
    )
    split: str = field(default="train", metadata={"help": "scene/instruction split, the same in source and targets"})
    episodes: int = field(default=20, metadata={"help": "episodes per task in each domain"})
    workers: int = field(default=0, metadata={"help": "worker processes; 0 = one per core"})
    seed: int = field(default=EVAL_SEEDS, metadata={"help": "first scene seed; every domain replays the same scenes"})
    output_dir: str = field(default="", metadata={"help": "where transfer/ goes; empty = beside the policy"})


@dataclass
class GeneralizeConfig:
    policy: str = field(default="", metadata={"help": "policy directory"})
    splits: list[str] = field(
        default_factory=list, metadata={"help": "splits to evaluate, the first the reference; empty = all of the suite's"}
    )
    episodes: int = field(default=20, metadata={"help": "episodes per task in each split"})
    workers: int = field(default=0, metadata={"help": "worker processes; 0 = one per core"})
    seed: int = field(default=EVAL_SEEDS, metadata={"help": "first scene seed of every split"})
    output_dir: str = field(default="", metadata={"help": "where generalization/ goes; empty = beside the policy"})


@dataclass
class ChainConfig:
    policy: str = field(default="", metadata={"help": "policy directory (trained on tabletop tasks)"})
    chains: int = field(default=50, metadata={"help": "chains to run, one scene each"})
    length: int = field(default=5, metadata={"help": "instructions per chain"})
    tasks: list[str] = field(
        default_factory=list, metadata={"help": "families a chain draws from; empty = the policy's chainable tasks"}
    )
    steps_per_instruction: int = field(default=0, metadata={"help": "step budget of each instruction; 0 = the env's max_steps"})
    split: str = field(default="train", metadata={"help": "scene/instruction split"})
    workers: int = field(default=0, metadata={"help": "worker processes; 0 = one per core"})
    seed: int = field(default=EVAL_SEEDS, metadata={"help": "first chain seed (scene and instruction order)"})
    action_horizon: int = field(default=0, metadata={"help": "actions executed per chunk; 0 = chunk_size/2"})
    output_dir: str = field(default="", metadata={"help": "where chains/ goes; empty = beside the policy"})


@dataclass
class HumanEvalConfig:
    action: str = field(default="serve", metadata={"help": "serve | export (also the first bare argument)"})
    study: str = field(default="runs/human_eval", metadata={"help": "study directory (its SQLite database: study.db)"})
    runs: list[str] = field(
        default_factory=list, metadata={"help": "evaluations whose videos are rated; two or more also give pairwise items"}
    )
    reference: str = field(
        default="", metadata={"help": "evaluation of human (teleoperated) rollouts: the other side of the Turing test"}
    )
    host: str = field(default="127.0.0.1", metadata={"help": "address the app listens on"})
    port: int = field(default=8000, metadata={"help": "port; 0 = any free one"})


@dataclass
class ReportConfig:
    path: str = field(default="", metadata={"help": "directory of a results JSON (also the first bare argument)"})


@dataclass
class CompareConfig:
    runs: list[str] = field(
        default_factory=list, metadata={"help": "two evaluations (results.json or its directory), A then B; also bare arguments"}
    )
    output_dir: str = field(default="", metadata={"help": "where compare.json and report.html go; empty = beside A"})
    alpha: float = field(default=0.05, metadata={"help": "significance level of the tests"})
    bootstrap: int = field(default=10000, metadata={"help": "bootstrap resamples of the success difference"})
    seed: int = field(default=0, metadata={"help": "bootstrap random seed"})
    power: float = field(default=0.8, metadata={"help": "power the episode calculator plans for"})
    detect: float = field(default=0.1, metadata={"help": "success difference the episode calculator plans to detect"})


@dataclass
class AblateConfig:
    grid: str = field(default="", metadata={"help": "grid YAML: base (a quickstart config) and axes (key: [values])"})
    output_dir: str = field(default="runs/ablate", metadata={"help": "one directory per grid cell under here"})
    split: str = field(default="", metadata={"help": "split whose success is compared; empty = the base's first split"})


@dataclass
class ExportConfig:
    format: str = field(default="onnx", metadata={"help": "export format: onnx (also the first bare argument)"})
    policy: str = field(default="", metadata={"help": "policy directory to export"})
    output: str = field(default="", metadata={"help": "new directory for the deployed policy"})


@dataclass
class QuantizeConfig:
    method: str = field(
        default="dynamic-int8",
        metadata={"help": "dynamic-int8 | int8-weight | int4-weight | static-int8 (torch) | onnx-int8 (ONNX Runtime) | bf16 | compile (fp32 weights on that runtime)"},
    )
    dataset: str = field(default="", metadata={"help": "static-int8: dataset whose frames calibrate the activations"})
    calibration_samples: int = field(default=64, metadata={"help": "static-int8: calibration frames"})
    policy: str = field(default="", metadata={"help": "policy directory to quantize"})
    output: str = field(default="", metadata={"help": "new directory for the quantized policy"})


@dataclass
class PruneConfig:
    policy: str = field(default="", metadata={"help": "policy directory to prune"})
    dataset: str = field(default="", metadata={"help": "dataset for the fine-tuning (its training data)"})
    method: str = field(default="unstructured", metadata={"help": "unstructured | channels | heads"})
    sparsity: float = field(default=0.5, metadata={"help": "fraction of weights (or channels, heads) removed"})
    steps: int = field(default=300, metadata={"help": "fine-tuning steps with the mask held; 0 = none"})
    lr: float = field(default=3e-4, metadata={"help": "fine-tuning peak learning rate"})
    output_dir: str = field(default="", metadata={"help": "run directory; the pruned policy goes to <output_dir>/policy"})


@dataclass
class BenchConfig:
    what: str = field(default="latency", metadata={"help": "latency | server (also the first bare argument)"})
    policy: str = field(default="", metadata={"help": "policy directory"})
    runtimes: list[str] = field(
        default_factory=lambda: ["eager", "bf16", "compile", "dynamic-int8", "int8-weight", "int4-weight", "static-int8",
                                 "onnx-fp32", "onnx-int8"],
        metadata={"help": "eager | bf16 | compile | dynamic-int8 | int8-weight | int4-weight | static-int8 | onnx-fp32 | "
                          "onnx-int8"},
    )
    calls: int = field(default=200, metadata={"help": "timed act() calls per runtime"})
    warmup: int = field(default=20, metadata={"help": "untimed calls first (compilation, caches)"})
    threads: int = field(default=0, metadata={"help": "CPU threads for torch and ONNX Runtime; 0 = all cores"})
    clients: int = field(default=4, metadata={"help": "server: concurrent loopback clients"})
    requests: int = field(default=50, metadata={"help": "server: requests per client"})
    output: str = field(default="", metadata={"help": "JSON file for the table; empty = <policy>/<what>.json"})


@dataclass
class ServeConfig:
    policy: str = field(default="", metadata={"help": "policy directory (trained or deployed)"})
    host: str = field(default="127.0.0.1", metadata={"help": "address to bind; 127.0.0.1 keeps it on this machine"})
    port: int = field(default=8765, metadata={"help": "TCP port (0 = any free port)"})
    token: str = field(default="", metadata={"help": "bearer token; empty = $VLAFORGE_TOKEN or a random one, printed"})


@dataclass
class ControlConfig:
    policy: str = field(default="", metadata={"help": "policy directory (trained or deployed)"})
    tasks: list[str] = field(default_factory=list, metadata={"help": "task families; empty = the policy's"})
    split: str = field(default="train", metadata={"help": "scene/instruction split"})
    episodes: int = field(default=5, metadata={"help": "episodes per task"})
    seed: int = field(default=EVAL_SEEDS, metadata={"help": "first scene seed"})
    rate_hz: float = field(default=20.0, metadata={"help": "control rate"})
    horizon: int = field(default=4, metadata={"help": "actions executed from a chunk before the next query"})
    asynchronous: bool = field(default=True, metadata={"help": "compute the next chunk while the current one executes"})
    ensemble: float = field(default=-1.0, metadata={"help": "temporal ensembling weight m (ACT); < 0 = off"})
    extra_latency_ms: float = field(default=0.0, metadata={"help": "artificial delay added to every query"})
    output: str = field(default="", metadata={"help": "JSON file; empty = <policy>/control.json"})


@dataclass
class RunsConfig:
    root: str = field(default="runs", metadata={"help": "directory searched for training runs"})


@dataclass
class QuickstartConfig:
    output_dir: str = field(default="runs/quickstart", metadata={"help": "everything goes under here"})
    splits: list[str] = field(default_factory=lambda: ["train", "unseen"], metadata={"help": "splits to evaluate"})
    # Scene diversity is what the policy's language grounding is starved of, and simulated
    # episodes are cheap, so the quickstart collects more than `vlaforge collect` does by default.
    collect: CollectConfig = field(default_factory=lambda: CollectConfig(episodes_per_task=150))
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


T = TypeVar("T")


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``hint``; ints widen to floats."""
    origin = typing.get_origin(hint)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"config key {key!r} expects a list, got {value!r}")
        (item,) = typing.get_args(hint)
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin in (typing.Union, types.UnionType):
        errors = []
        for option in typing.get_args(hint):
            if option is type(None) and value is None:
                return None
            try:
                return _coerce(value, option, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError("; ".join(errors))
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"config key {key!r} expects true/false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"config key {key!r} expects an integer, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"config key {key!r} expects a number, got {value!r}")
    if hint is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"config key {key!r} expects a string, got {value!r}")
    raise ConfigError(f"config key {key!r} has an unsupported type {hint}")


def from_dict(cls: type[T], data: dict | None, prefix: str = "") -> T:
    """Build ``cls`` from a nested dict, rejecting unknown keys with the valid ones listed."""
    data = data or {}
    if not isinstance(data, dict):
        raise ConfigError(f"config section {prefix.rstrip('.') or '<root>'!r} must be a mapping, got {data!r}")
    hints = _hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            where = prefix.rstrip(".") or "<root>"
            raise ConfigError(f"unknown config key {prefix + str(key)!r}; valid keys in {where}: {', '.join(names)}")
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = from_dict(hint, value, f"{prefix}{key}.")
        else:
            kwargs[key] = _coerce(value, hint, prefix + key)
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def apply_overrides(cfg: T, overrides: list[str]) -> T:
    """Apply ``a.b=value`` strings (values parsed as YAML) to a config, returning a new one."""
    data = to_dict(cfg)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as e:
            raise ConfigError(f"override {item!r}: value is not valid YAML ({e})") from None
        node = data
        parts = key.split(".")
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                raise ConfigError(f"unknown config key {key!r}")
            node = node[p]
        if parts[-1] not in node:
            valid = ", ".join(node)
            raise ConfigError(f"unknown config key {key!r}; valid keys here: {valid}")
        if isinstance(node[parts[-1]], list) and not isinstance(value, list):
            value = [value] if value not in (None, "") else []
        node[parts[-1]] = value
    return from_dict(type(cfg), data)


def load_yaml(cls: type[T], path: str | os.PathLike) -> T:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {p} is not valid YAML: {e}") from None
    return from_dict(cls, data)


def save_yaml(cfg: Any, path: str | os.PathLike) -> None:
    """Write the config atomically so a crash never leaves half a config.yaml."""
    atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))


def describe_fields(cls: type, prefix: str = "", default: Any = None) -> list[tuple[str, str, Any, str]]:
    """(key, type, default, help) for every leaf of a config tree; drives ``--help``. Nested
    defaults are the parent's (a parent may set its own, e.g. the quickstart's episode count)."""
    rows = []
    hints = _hints(cls)
    default = cls() if default is None else default
    for f in dataclasses.fields(cls):
        hint, value = hints[f.name], getattr(default, f.name)
        if dataclasses.is_dataclass(hint):
            rows += describe_fields(hint, f"{prefix}{f.name}.", value)
        else:
            name = getattr(hint, "__name__", str(hint)).replace("typing.", "")
            rows.append((prefix + f.name, name, value, f.metadata.get("help", "")))
    return rows
