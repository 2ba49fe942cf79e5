"""Settings of `vlaforge collect` and `vlaforge data`. The config machinery (YAML, overrides, the
CLI) is vlaforge/config.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vlaforge.config import WorkersConfig
from vlaforge.envs.config import DomainConfig, EnvConfig


@dataclass
class CollectConfig(WorkersConfig):
    env: EnvConfig = field(default_factory=EnvConfig)
    split: str = field(default="train", metadata={"help": "scene/instruction split to draw from"})
    episodes_per_task: int = field(default=50, metadata={"help": "successful expert episodes per task"})
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
    video: bool = field(default=False, metadata={"help": "store the cameras as MP4 video (LeRobot v3.0) instead of PNG"})
    video_codec: str = field(default="av1", metadata={"help": "video: av1 (SVT-AV1, LeRobot's default) | h264"})


@dataclass
class DataConfig:
    action: str = field(default="check", metadata={
        "help": "check | clean | relabel | paraphrase | manifest | diff | convert | merge | split | delete | view"})
    dataset: str = field(default="data/tabletop", metadata={"help": "the dataset (diff: the older version)"})
    other: str = field(default="", metadata={"help": "diff: the newer version (a dataset directory or a manifest.json)"})
    output: str = field(default="", metadata={"help": "clean/relabel/convert/merge/split/delete: the new dataset; "
                                                      "check: report directory (default <dataset>/qc); "
                                                      "view: the .rrd file (default <dataset>/view.rrd)"})
    datasets: list[str] = field(default_factory=list, metadata={"help": "merge: the datasets to combine, in order"})
    episodes: list[int] = field(default_factory=list, metadata={
        "help": "split/delete: episode indices to take out; view: episodes to show (default the first)"})
    tasks: list[str] = field(default_factory=list, metadata={"help": "split/delete: tasks (or instructions) to take out"})
    rest: str = field(default="", metadata={"help": "split: where the episodes not taken out go (optional)"})
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
