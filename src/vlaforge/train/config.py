"""Settings of `vlaforge train`, `pretrain` and `runs` (optimizer, parallelism). The config
machinery (YAML, overrides, the CLI) is vlaforge/config.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vlaforge.models.config import PolicyConfig


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
    grounding_scenes: int = field(
        default=0, metadata={"help": "simulated scenes per task, without demonstrations, on which the grounding losses "
                                     "(target/goal heatmaps and positions) also train; 0 = off"}
    )
    grounding_fraction: float = field(
        default=0.25, metadata={"help": "with grounding_scenes: share of every batch drawn from the grounding scenes"}
    )
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
    seeds: list[int] = field(
        default_factory=list, metadata={"help": "train one run per seed into output_dir/seed<N> (overrides seed)"}
    )
    loader: str = field(default="auto", metadata={
        "help": "memory | stream | auto: decode the whole dataset into memory, or stream windows of episodes from "
                "disk (bounded memory); auto streams when the decoded frames would take over a quarter of free memory"})
    stream_window: int = field(default=64, metadata={"help": "stream: episodes per shuffle window (memory holds two)"})
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
    finetune: str = field(
        default="full", metadata={"help": "with --init_from: full (every weight) | lora (low-rank adapters on every "
                                          "Linear but the head) | head (the action head only)"}
    )
    lora_rank: int = field(default=8, metadata={"help": "rank r of the LoRA adapters"})
    lora_alpha: float = field(default=16.0, metadata={"help": "LoRA scale numerator: updates are scaled by alpha / r"})
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
class RunsConfig:
    root: str = field(default="runs", metadata={"help": "directory searched for training runs"})
