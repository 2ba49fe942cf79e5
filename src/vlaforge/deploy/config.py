"""Settings of the deployment verbs: export, quantize, prune, bench, serve, control. The config
machinery (YAML, overrides, the CLI) is vlaforge/config.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vlaforge.seeds import EVAL_SEEDS


@dataclass
class ExportConfig:
    format: str = field(default="onnx", metadata={"help": "export format: onnx (also the first bare argument)"})
    policy: str = field(default="", metadata={"help": "policy directory to export"})
    output: str = field(default="", metadata={"help": "new directory for the deployed policy"})


@dataclass
class QuantizeConfig:
    method: str = field(
        default="dynamic-int8",
        metadata={"help": "a deploy backend (`vlaforge list`): dynamic-int8 | int8-weight | int4-weight | static-int8 | "
                          "onnx-int8 | onnx-fp32 | bf16 | compile"},
    )
    dataset: str = field(default="", metadata={"help": "static-int8: dataset whose frames calibrate the activations"})
    calibration_samples: int = field(default=64, metadata={"help": "static-int8: calibration frames"})
    policy: str = field(default="", metadata={"help": "policy directory to quantize"})
    output: str = field(default="", metadata={"help": "new directory for the quantized policy"})


@dataclass
class PruneConfig:
    policy: str = field(default="", metadata={"help": "policy directory to prune"})
    dataset: str = field(default="", metadata={"help": "dataset for the fine-tuning (its training data)"})
    method: str = field(default="unstructured", metadata={"help": "unstructured | channels | heads | structured (channels and heads)"})
    sparsity: float = field(default=0.5, metadata={"help": "fraction of weights (or channels, heads) removed"})
    steps: int = field(default=300, metadata={"help": "fine-tuning steps with the mask held; 0 = none"})
    lr: float = field(default=3e-4, metadata={"help": "fine-tuning peak learning rate"})
    output_dir: str = field(default="", metadata={"help": "run directory; the pruned policy goes to <output_dir>/policy"})


@dataclass
class BenchConfig:
    what: str = field(default="latency", metadata={"help": "latency | server | stream (also the first bare argument)"})
    policy: str = field(default="", metadata={"help": "policy directory"})
    runtimes: list[str] = field(
        default_factory=lambda: ["eager", "bf16", "compile", "dynamic-int8", "int8-weight", "int4-weight", "static-int8",
                                 "onnx-fp32", "onnx-int8", "openvino-fp32"],
        metadata={"help": "eager (the fp32 policy) and deploy backends (`vlaforge list`); each is deployed through "
                          "the same path as quantize, parity checked, then timed"},
    )
    calls: int = field(default=200, metadata={"help": "timed act() calls per runtime"})
    warmup: int = field(default=20, metadata={"help": "untimed calls first (compilation, caches)"})
    threads: int = field(default=0, metadata={"help": "CPU threads for torch and ONNX Runtime; 0 = all cores"})
    clients: int = field(default=4, metadata={"help": "server: concurrent loopback clients"})
    requests: int = field(default=50, metadata={"help": "server: requests per client"})
    robots: int = field(default=8, metadata={"help": "stream: robots, one connection each"})
    rate_hz: float = field(default=20.0, metadata={"help": "stream: requests per second per robot"})
    seconds: float = field(default=5.0, metadata={"help": "stream: length of the fleet run"})
    max_batch: int = field(default=16, metadata={"help": "stream: most requests in one forward pass"})
    max_wait_ms: float = field(default=2.0, metadata={"help": "stream: longest wait for other robots' requests"})
    output: str = field(default="", metadata={"help": "JSON file for the table; empty = <policy>/<what>.json"})


@dataclass
class ServeConfig:
    policy: str = field(default="", metadata={"help": "policy directory (trained or deployed)"})
    host: str = field(default="127.0.0.1", metadata={"help": "address to bind; 127.0.0.1 keeps it on this machine"})
    port: int = field(default=8765, metadata={"help": "TCP port (0 = any free port)"})
    token: str = field(
        default="", metadata={"help": "bearer token, >= 16 characters; empty = $VLAFORGE_TOKEN or a random one, printed"}
    )
    protocol: str = field(
        default="http", metadata={"help": "http (JSON, one request at a time) | stream (WebSocket + msgpack, a "
                                          "session per robot, batched)"}
    )
    timeout_s: float = field(
        default=10.0, metadata={"help": "http: seconds a request may take to arrive, and any socket read or write"}
    )
    max_per_client: int = field(default=64, metadata={"help": "concurrent connections allowed from one address"})
    max_batch: int = field(default=16, metadata={"help": "stream: most requests in one forward pass"})
    max_wait_ms: float = field(default=2.0, metadata={"help": "stream: longest wait for other robots' requests"})
    metrics: bool = field(default=False, metadata={"help": "Prometheus metrics at GET /metrics (behind the token) "
                                                       "and a live page at GET /dashboard, on either protocol"})
    drift_reference: str = field(default="", metadata={
        "help": "metrics: training dataset whose episodes' first frames the drift detector compares with the "
                "first observation of each live episode; empty = no drift test"})
    drift_window: int = field(default=20, metadata={"help": "drift: episodes in each test (an episode starts at a "
                                                            "reset)"})
    drift_every: int = field(default=5, metadata={"help": "drift: episodes between tests"})
    deadline_ms: float = field(default=0.0, metadata={"help": "metrics: inference slower than this counts as a "
                                                                "deadline miss; 0 = none"})
    challenger: str = field(default="", metadata={
        "help": "http: an A/B test: episodes routed between --policy (champion) and this policy, stopping itself"})
    ab_share: float = field(default=0.5, metadata={"help": "A/B: the challenger's share of episodes"})
    ab_alpha: float = field(default=0.05, metadata={"help": "A/B: the test's error rate (anytime-valid)"})
    ab_log: str = field(default="ab.jsonl", metadata={"help": "A/B: every assignment, outcome and decision, appended"})


@dataclass
class TrafficConfig:
    url: str = field(default="http://127.0.0.1:8765", metadata={"help": "the policy server (vlaforge serve)"})
    token: str = field(default="", metadata={"help": "its bearer token; empty = $VLAFORGE_TOKEN"})
    episodes: int = field(default=20, metadata={"help": "episodes, the served policy's tasks in turn"})
    seed: int = field(default=EVAL_SEEDS, metadata={"help": "first scene seed (each episode its own, and its A/B "
                                                            "routing key)"})
    split: str = field(default="train", metadata={"help": "scene/instruction split"})
    horizon: int = field(default=0, metadata={"help": "actions executed from a chunk before the next query; 0 = half"})
    domain: str = field(default="", metadata={"help": "a named randomized domain (`vlaforge list`) instead of the "
                                                      "source simulation, e.g. real-proxy-B for a drift drill"})
    report: bool = field(default=False, metadata={"help": "post each outcome to the server's A/B test (POST /outcome)"})


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
    rtc: bool = field(
        default=False, metadata={"help": "real-time chunking: inpaint each new chunk to continue the current one "
                                         "(flow and dit heads)"}
    )
    extra_latency_ms: float = field(default=0.0, metadata={"help": "artificial delay added to every query"})
    output: str = field(default="", metadata={"help": "JSON file; empty = <policy>/control.json"})
