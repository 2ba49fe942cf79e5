"""Safety filter limits (`--safety.*`) and safe-RL fine-tuning settings (`vlaforge safe-rl`). The
config machinery (YAML, overrides, the CLI) is vlaforge/config.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vlaforge.config import HorizonConfig


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
class SafeRLConfig(HorizonConfig):
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
