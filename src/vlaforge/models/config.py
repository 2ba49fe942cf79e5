"""Policy architecture settings (`--policy.*`). The config machinery (YAML, overrides, the CLI) is
vlaforge/config.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class PolicyConfig:
    name: str = field(default="vla", metadata={"help": "policy architecture"})
    d_model: int = field(default=128, metadata={"help": "transformer width"})
    n_layers: int = field(default=4, metadata={"help": "fusion transformer layers"})
    n_heads: int = field(default=4, metadata={"help": "attention heads"})
    chunk_size: int = field(default=8, metadata={"help": "actions predicted per call"})
    n_obs_steps: int = field(default=1, metadata={"help": "frames of observation history"})
    vision_channels: list[int] = field(default_factory=lambda: [32, 64, 64], metadata={"help": "CNN stage widths"})
    keypoints: int = field(default=32, metadata={"help": "spatial-softmax keypoint tokens per image (the first follow the "
                                                     "task's target and goal); the fusion sequence grows with them"})
    max_text_tokens: int = field(default=16, metadata={"help": "instruction length in tokens"})
    text_encoder: str = field(default="words", metadata={"help": "instruction tokens and embeddings: words | wordllama"})
    text_finetune: bool = field(default=False, metadata={"help": "wordllama: train the pretrained embeddings too"})
    dropout: float = field(default=0.0, metadata={"help": "dropout in the transformer"})
    head: str = field(default="regression", metadata={"help": "action head: regression | tokenized | dit | flow"})
    backbone: str = field(default="transformer", metadata={"help": "fusion token mixer: transformer | mamba"})
    ffn: str = field(default="mlp", metadata={"help": "fusion feed-forward: mlp | moe"})
    attention: str = field(default="auto",
                           metadata={"help": "attention kernel: auto | flash | mem_efficient | math | composed"})
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
