"""``vlaforge <verb>``: each verb maps to one config dataclass and one library function.

    vlaforge train --config run.yaml --train.steps=5000 --policy.d_model=256
Flags are the dotted keys of the verb's config; values are parsed as YAML (lists: [a,b]).
"""

from __future__ import annotations

import itertools
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable

from vlaforge.config import ConfigError, apply_overrides, describe_fields, load_yaml
from vlaforge.data.config import CollectConfig, DataConfig
from vlaforge.deploy.config import (
    BenchConfig,
    ControlConfig,
    ExportConfig,
    PruneConfig,
    QuantizeConfig,
    ServeConfig,
    TrafficConfig,
)
from vlaforge.eval.config import (
    AblateConfig,
    ActiveConfig,
    ChainConfig,
    CompareConfig,
    EvalConfig,
    GeneralizeConfig,
    HumanEvalConfig,
    LiberoBenchConfig,
    QuickstartConfig,
    RegistryConfig,
    ReportConfig,
    TransferConfig,
)
from vlaforge.safety.config import SafeRLConfig
from vlaforge.train.config import PretrainConfig, RunsConfig, TrainConfig


def _collect(cfg: CollectConfig) -> Any:
    from vlaforge.data.collect import collect

    path = collect(cfg)
    print(f"dataset written to {path}")


def _train(cfg: TrainConfig) -> Any:
    from vlaforge.train.trainer import train_seeds

    for out in train_seeds(cfg):
        if os.environ.get("RANK", "0") == "0":
            print(f"policy written to {out}")


def _eval(cfg: EvalConfig) -> Any:
    from vlaforge.eval.rollout import evaluate

    if cfg.perturb:
        from vlaforge.eval.robustness import sweep

        for factor, points in sweep(cfg)["curves"].items():
            print(f"{factor:14s} " + "  ".join(f"{p['severity']:.2f}: {p['success_rate']:5.1%}" for p in points))
        return
    r = evaluate(cfg)
    print(f"{r['suite']}/{r['split']}: success {r['success_rate']:.1%} (95% CI {r['ci95'][0]:.1%}-{r['ci95'][1]:.1%}) "
          f"over {r['episodes']} episodes")
    for task, v in r["per_task"].items():
        print(f"  {task:14s} {v['success_rate']:6.1%}  [{v['ci95'][0]:.0%}, {v['ci95'][1]:.0%}]")


def _transfer(cfg: TransferConfig) -> Any:
    from vlaforge.eval.transfer import transfer

    s = transfer(cfg)
    for name, r in s["domains"].items():
        gap = f"  gap {r['gap']:+.1%} [{r['gap_ci95'][0]:+.1%}, {r['gap_ci95'][1]:+.1%}]" if "gap" in r else ""
        print(f"{name:14s} {r['success_rate']:6.1%}  [{r['ci95'][0]:.0%}, {r['ci95'][1]:.0%}]{gap}")


def _generalize(cfg: GeneralizeConfig) -> Any:
    from vlaforge.eval.generalization import generalize

    s = generalize(cfg)
    for name, r in s["splits"].items():
        gap = f"  gap {r['gap']:+.1%} [{r['gap_ci95'][0]:+.1%}, {r['gap_ci95'][1]:+.1%}]" if "gap" in r else ""
        print(f"{name:18s} {r['success_rate']:6.1%}  [{r['ci95'][0]:.0%}, {r['ci95'][1]:.0%}]{gap}")


def _chains(cfg: ChainConfig) -> Any:
    from vlaforge.eval.chains import evaluate_chains

    s = evaluate_chains(cfg)
    print("  ".join(f"{p['position']}: {p['rate']:.0%}" for p in s["positions"]))
    lo, hi = s["average_length_ci95"]
    print(f"average completed length {s['average_length']:.2f} [{lo:.2f}, {hi:.2f}] over {s['chains']} chains")


def _human_eval(cfg: HumanEvalConfig) -> Any:
    from vlaforge.eval.human_study import build_items, connect, summarize_study

    if cfg.action not in ("serve", "export"):
        raise ValueError(f"unknown human-eval action {cfg.action!r}; known: serve, export")
    if cfg.action == "export" and not (Path(cfg.study) / "study.db").is_file():
        raise FileNotFoundError(f"no study at {cfg.study} (expected {Path(cfg.study) / 'study.db'})")
    db = connect(cfg.study)
    if cfg.action == "export":
        out = Path(cfg.study) / "human_eval.json"
        out.write_text(json.dumps(summarize_study(db), indent=2))
        print(f"{out}: the study's ratings, aggregated")
        return
    from werkzeug.serving import make_server

    from vlaforge.eval.human_app import create_app

    n = build_items(db, cfg.runs, cfg.reference)
    server = make_server(cfg.host, cfg.port, create_app(db), threaded=True)
    print(f"human evaluation of {n} items at http://{cfg.host}:{server.server_port}/ (ratings in {cfg.study}/study.db)",
          flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        server.server_close()


def _report(cfg: ReportConfig) -> Any:
    from vlaforge.eval.rebuild import rebuild_report

    print(f"report written to {rebuild_report(cfg.path)}")


def _compare(cfg: CompareConfig) -> Any:
    from vlaforge.eval.compare import compare

    r = compare(cfg)
    for name, v in r["runs"].items():
        print(f"{name}: {v['success_rate']:6.1%} [{v['ci95'][0]:.0%}, {v['ci95'][1]:.0%}]  {v['policy']}")
    print(r["verdict"])


def _ablate(cfg: AblateConfig) -> Any:
    from vlaforge.eval.ablate import ablate

    s = ablate(cfg)
    for name, e in s["effects"].items():
        lo, hi = e["contribution_ci95"]
        levels = "  ".join(f"{lv['value']}: {lv['success_rate']:.1%}" for lv in e["levels"])
        print(f"{name:14s} {levels}  contribution {e['contribution']:+.1%} [{lo:+.1%}, {hi:+.1%}]")
    print(f"written to {Path(cfg.output_dir) / 'ablate.json'}")


def _pretrain(cfg: PretrainConfig) -> Any:
    from vlaforge.train.pretrain import pretrain

    run = pretrain(cfg)
    s = json.loads((run / "pretrain.json").read_text())
    print(f"{s['method']} on {s['frames']} frames: loss {s['loss_first']:.4f} -> {s['loss_last']:.4f}; "
          f"encoder written to {run / 'encoder.safetensors'} (train --init_encoder={run})")


def _active(cfg: ActiveConfig) -> Any:
    from vlaforge.eval.active import select

    r = select(cfg)
    per_task = ", ".join(f"{t} {n}" for t, n in r["selected_per_task"].items())
    how = cfg.strategy if cfg.strategy in ("random", "diversity") else f"{cfg.strategy} ({cfg.uncertainty})"
    print(f"{how} chose {len(r['scenes'])} of {r['pool']} scenes ({per_task}); written to "
          f"{cfg.output}: vlaforge collect --scenes={cfg.output} --output=DATASET --resume")


def _data(cfg: DataConfig) -> Any:
    actions = ("check", "clean", "relabel", "paraphrase", "manifest", "diff", "convert", "merge", "split", "delete",
               "view")
    if cfg.action not in actions:
        raise ValueError(f"unknown data action {cfg.action!r}; known: {', '.join(actions)}")
    if cfg.action == "check":
        from vlaforge.data.quality import check_dataset, write_check_report

        report, eps, _ = check_dataset(cfg)
        path = write_check_report(report, eps, Path(cfg.output or Path(cfg.dataset) / "qc"))
        for name, r in report["rules"].items():
            print(f"{name:10s} {r['episodes']:4d} episodes flagged")
        for problem in report["integrity"]:
            print(f"integrity: {problem}")
        print(f"{len(report['flagged_episodes'])} of {report['episodes']} episodes flagged; report {path}")
    elif cfg.action == "clean":
        from vlaforge.data.quality import clean_dataset

        s = clean_dataset(cfg)
        print(f"kept {s['kept']}, dropped {s['dropped']} {s['dropped_by_rule']}, trimmed {s['frames_trimmed']} idle frames; "
              f"clean dataset written to {cfg.output}")
    elif cfg.action == "relabel":
        from vlaforge.data.annotate import relabel_dataset

        s = relabel_dataset(cfg)
        print(f"{s['relabelled']} failed episodes relabelled with what they achieved, {s['dropped_nothing_achieved']} "
              f"achieved nothing and were left out; written to {cfg.output}")
    elif cfg.action == "paraphrase":
        from vlaforge.data.annotate import paraphrase_dataset

        table = paraphrase_dataset(cfg)
        print(f"{sum(map(len, table.values()))} wordings for {len(table)} instructions in {Path(cfg.dataset) / 'meta/paraphrases.json'}")
    elif cfg.action in ("convert", "merge", "split", "delete"):
        from vlaforge.data import tools

        s = {"convert": tools.convert, "merge": tools.merge, "split": tools.split, "delete": tools.split}[cfg.action](cfg)
        if cfg.action == "convert":
            print(f"{s['episodes']} episodes converted to v3.0 in {cfg.output}"
                  + (f"; features dropped: {', '.join(s['dropped_features'])}" if s["dropped_features"] else "")
                  + (f"; renamed: {s['renamed_features']}" if s["renamed_features"] else ""))
        elif cfg.action == "merge":
            print(f"{s['episodes']} episodes of {len(cfg.datasets)} datasets written to {cfg.output}")
        else:
            print("; ".join(f"{n} episodes written to {out}" for out, n in s["outputs"].items()))
    elif cfg.action == "view":
        from vlaforge.data.view import view

        s = view(cfg)
        print(f"{s['frames']} frames of episodes {s['episodes']} written to {s['output']}; open it with: rerun {s['output']}")
    elif cfg.action == "manifest":
        from vlaforge.data.manifest import write_manifest

        m = write_manifest(cfg.dataset)
        print(f"{Path(cfg.dataset) / 'manifest.json'}: {m['total_episodes']} episodes, hash {m['hash']}")
    else:
        from vlaforge.data.manifest import diff_manifests, read_manifest

        if not cfg.other:
            raise ValueError("data diff needs two versions: vlaforge data diff OLD NEW (directories or manifest files)")
        d = diff_manifests(read_manifest(cfg.dataset), read_manifest(cfg.other))
        if d["same"]:
            print(f"same content (hash {d['hash'][0][:12]})")
            return
        print(f"{d['hash'][0][:12]} -> {d['hash'][1][:12]}: {d['episodes'][0]} -> {d['episodes'][1]} episodes; "
              f"{len(d['added'])} added, {len(d['removed'])} removed, {d['kept']} kept")
        for task, (a, b) in d["tasks"].items():
            print(f"  {task}: {a} -> {b}")
        print(f"  files changed: {len(d['files_changed'])}")


def _distill(cfg: TrainConfig) -> Any:
    if not cfg.teacher:
        raise ValueError("distill needs --teacher=DIR (the policy to distill) and the student's --policy.* settings")
    _train(cfg)


def _export(cfg: ExportConfig) -> Any:
    if cfg.format != "onnx":
        raise ValueError(f"unknown export format {cfg.format!r}; known: onnx")
    if not cfg.policy or not cfg.output:
        raise ValueError("export needs --policy=DIR and --output=DIR")
    _deploy(cfg.policy, cfg.output, "onnx-fp32")


def _quantize(cfg: QuantizeConfig) -> Any:
    if not cfg.policy or not cfg.output:
        raise ValueError("quantize needs --policy=DIR and --output=DIR (a new directory for the deployed policy)")
    _deploy(cfg.policy, cfg.output, cfg.method, dataset=cfg.dataset, calibration_samples=cfg.calibration_samples)


def _deploy(policy: str, output: str, method: str, **options: Any) -> None:
    """Export and quantize: one path (deploy/artifact.py), one parity check."""
    from vlaforge.deploy.artifact import deploy
    from vlaforge.deploy.base import DeployOptions

    out = deploy(policy, output, method, DeployOptions(**options))
    info = json.loads((out / "deploy.json").read_text())
    print(f"{method} policy written to {out}: {info['size_bytes'] / 1e6:.2f} MB, max action difference from fp32 "
          f"{info['parity_max_abs']:.3g} (limit {info['parity_limit']:g}, normalised units)")


def _bench(cfg: BenchConfig) -> Any:
    from rich.console import Console
    from rich.table import Table

    from vlaforge.deploy.latency import bench_latency

    if cfg.what not in ("latency", "server", "stream"):
        raise ValueError(f"unknown benchmark {cfg.what!r}; known: latency, server, stream")
    if not cfg.policy:
        raise ValueError(f"bench {cfg.what} needs --policy=DIR")
    out = Path(cfg.output) if cfg.output else Path(cfg.policy) / f"{cfg.what}.json"
    if cfg.what == "server":
        from vlaforge.deploy.server import load_test
        from vlaforge.runtime.policy import load_policy

        r = load_test(load_policy(cfg.policy), cfg.clients, cfg.requests)
        out.write_text(json.dumps({"policy": cfg.policy, **r}, indent=2))
        print(f"{r['requests']} requests from {r['clients']} clients: {r['requests_per_s']:.1f} requests/s, "
              f"p50 {r['latency_ms_p50']:.1f} ms, p99 {r['latency_ms_p99']:.1f} ms, {r['errors']} errors; written to {out}")
        return
    if cfg.what == "stream":
        from vlaforge.deploy.stream import fleet_test, overhead_test
        from vlaforge.runtime.policy import load_policy, on_policy_thread

        policy = on_policy_thread(load_policy, cfg.policy)
        one = overhead_test(policy, cfg.calls, cfg.warmup)
        fleet = fleet_test(policy, cfg.robots, cfg.rate_hz, cfg.seconds, cfg.max_batch, cfg.max_wait_ms)
        out.write_text(json.dumps({"policy": cfg.policy, "one_robot": one, "fleet": fleet}, indent=2))
        print(f"one robot: act() p50 {one['local']['p50_ms']:.2f} ms, over the stream +{one['stream']['overhead_p50_ms']:.2f} "
              f"ms, over HTTP +{one['http']['overhead_p50_ms']:.2f} ms; {fleet['robots']} robots at {fleet['rate_hz']:g} Hz: "
              f"p50 {fleet['p50_ms']:.1f} ms, p99 {fleet['p99_ms']:.1f} ms, {fleet['miss_rate']:.1%} deadline misses, "
              f"mean batch {fleet['mean_batch']:.2f}, {fleet['errors']} errors; written to {out}")
        return
    rows = bench_latency(cfg.policy, cfg.runtimes, cfg.calls, cfg.warmup, cfg.threads)
    out.write_text(json.dumps({"policy": cfg.policy, "rows": rows}, indent=2))
    table = Table(title=f"act() latency, batch 1, {rows[0]['threads']} threads")
    for col in ("runtime", "p50 ms", "p99 ms", "speed-up (p50)", "max action diff"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["runtime"], f"{r['p50_ms']:.2f}", f"{r['p99_ms']:.2f}", f"{rows[0]['p50_ms'] / r['p50_ms']:.2f}x",
                      f"{r['max_action_diff']:.3g}")
    Console(width=None if sys.stdout.isatty() else 200).print(table)
    print(f"written to {out}")


def _bench_libero(cfg: LiberoBenchConfig) -> Any:
    from vlaforge.eval.libero_protocol import run

    summary = run(cfg)
    for name, s in summary["suites"].items():
        print(f"{name}: {s['success_rate']:.1%} [{s['ci95'][0]:.1%}, {s['ci95'][1]:.1%}] over {s['trials']} trials, "
              f"{s['tasks_with_expert']}/{len(s['tasks'])} tasks with an expert")
    average = "n/a (needs all four suites)" if summary["average"] is None else f"{summary['average']:.1%}"
    print(f"average {average}; protocol {summary['protocol']}"
          + "".join(f"\n  differs: {r}" for r in summary["differs_from_standard"])
          + f"\nwritten to {Path(cfg.output_dir) / 'libero.json'} and libero.md")
    return summary


def _control(cfg: ControlConfig) -> Any:
    from vlaforge.deploy.control_loop import run_control

    r = run_control(cfg)
    out = Path(cfg.output) if cfg.output else Path(cfg.policy) / "control.json"
    out.write_text(json.dumps(r, indent=2))
    mode = ("async" if cfg.asynchronous else "sync") + (", real-time chunking" if cfg.rtc else "")
    print(f"{mode} at {cfg.rate_hz:g} Hz: success {r['success_rate']:.1%}, deadline misses {r['deadline_miss_rate']:.1%} "
          f"of ticks, inference p50 {r['inference_ms_p50']:.1f} ms, action jump at chunk switches "
          f"{r['jump_at_switch']:.3f} (elsewhere {r['jump_elsewhere']:.3f}); written to {out}")


def _serve(cfg: ServeConfig) -> Any:
    import threading

    from vlaforge.runtime.policy import load_policy

    if not cfg.policy:
        raise ValueError("serve needs --policy=DIR")
    if cfg.protocol not in ("http", "stream"):
        raise ValueError(f"unknown --protocol={cfg.protocol!r}; known: http, stream")
    if (cfg.drift_reference or cfg.deadline_ms) and not cfg.metrics:
        raise ValueError("--drift_reference and --deadline_ms feed the metrics: add --metrics=true")
    if cfg.challenger and cfg.protocol != "http":
        raise ValueError("--challenger is served by --protocol=http only (outcomes arrive by POST /outcome)")
    if cfg.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: binding {cfg.host} exposes the policy beyond this machine; keep the token secret", file=sys.stderr)
    from vlaforge.runtime.policy import on_policy_thread

    given = cfg.token or os.environ.get("VLAFORGE_TOKEN", "")
    policy = on_policy_thread(load_policy, cfg.policy)  # the servers run it there: torch on one thread
    if cfg.challenger:
        from vlaforge.deploy.ab import ABTest

        policy = ABTest(policy, on_policy_thread(load_policy, cfg.challenger), cfg.ab_share, cfg.ab_alpha,
                        log=cfg.ab_log)
    monitor = None
    if cfg.metrics:
        from vlaforge.deploy.monitor import DriftDetector, PolicyMonitor

        drift = DriftDetector.from_dataset(cfg.drift_reference, window=cfg.drift_window,
                                           every=cfg.drift_every) if cfg.drift_reference else None
        monitor = PolicyMonitor(policy.action_dim, drift, cfg.deadline_ms)
    if cfg.protocol == "http":
        from vlaforge.deploy.server import PolicyServer

        server = PolicyServer(policy, given, cfg.host, cfg.port, cfg.timeout_s, cfg.max_per_client, monitor).start()
        what = ("POST /act, GET /info" + (", GET /metrics" if monitor else "")
                + (", POST /outcome, GET /ab" if cfg.challenger else ""))
    else:
        from vlaforge.deploy.stream import StreamServer

        server = StreamServer(policy, given, cfg.host, cfg.port, cfg.max_batch, cfg.max_wait_ms,
                              max_per_client=cfg.max_per_client, monitor=monitor).start()
        what = "a WebSocket per robot, msgpack messages" + ("; GET /metrics" if monitor else "")
    if monitor is not None:
        origin = server.url.replace("ws://", "http://").removesuffix("/stream")
        what += f"; dashboard: {origin}/dashboard#token=TOKEN"
    # A token the user chose (flag or environment) is never echoed into logs; a generated one must be.
    shown = f"token: {server.token}" if not given else \
        f"token: the one from {'--token' if cfg.token else '$VLAFORGE_TOKEN'}"
    print(f"serving {cfg.policy} at {server.url} ({what}); {shown}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()


def _traffic(cfg: TrafficConfig) -> Any:
    from vlaforge.deploy.traffic import drive

    summary = drive(cfg)
    print(json.dumps(summary, indent=2))
    return summary


def _prune(cfg: PruneConfig) -> Any:
    from vlaforge.deploy.prune import prune

    out = prune(cfg)
    pruning = json.loads((out / "config.json").read_text())["pruning"]
    print(f"{cfg.method} pruning at {cfg.sparsity:.0%}: {pruning['zero_fraction']:.1%} of the prunable weights are zero; "
          f"policy written to {out}")


def _safe_rl(cfg: SafeRLConfig) -> Any:
    from vlaforge.safety.safe_rl import safe_finetune

    s = safe_finetune(cfg)
    for when in ("before", "after"):
        r = s[when]
        print(f"{when:6s} success {r['success_rate']:6.1%} [{r['ci95'][0]:.0%}, {r['ci95'][1]:.0%}]  cost {r['cost']:.2f} "
              f"per episode (limit {r['cost_limit']:g})")
    print(f"fine-tuned policy written to {s['policy']}")


def _runs(cfg: RunsConfig) -> Any:
    from rich.console import Console
    from rich.table import Table

    from vlaforge.train.runs import list_runs

    rows = list_runs(cfg.root)
    table = Table(title=f"training runs under {cfg.root}")
    for col in ("run", "status", "step", "loss", "optimizer", "precision", "dataset", "commit"):
        table.add_column(col)
    for r in rows:
        table.add_row(*(f"{v:.4f}" if isinstance(v, float) else str(v or "") for v in r.values()))
    Console(width=None if sys.stdout.isatty() else 200).print(table)


def _quickstart(cfg: QuickstartConfig) -> Any:
    from vlaforge.quickstart import quickstart

    s = quickstart(cfg)
    keys = ("stage_seconds", "success_rate", "ci95", "over_seeds", "reports")
    print(json.dumps({k: s[k] for k in keys if k in s}, indent=2))


def _registry(cfg: RegistryConfig) -> None:
    from vlaforge.eval.gate import registry

    result = registry(cfg)
    print(json.dumps(result, indent=2, default=str))
    if cfg.action == "promote" and result["decision"] != "promoted":  # a pipeline's gate fails here
        print(f"error: the gate refused version {result['version']} of {result['name']}: {result['reason']}",
              file=sys.stderr)
        sys.exit(1)


VERBS: dict[str, tuple[type, Callable[[Any], Any], str]] = {
    "collect": (CollectConfig, _collect, "roll scripted experts and write a LeRobot v3.0 dataset"),
    "train": (TrainConfig, _train, "train a policy on a dataset"),
    "pretrain": (PretrainConfig, _pretrain, "self-supervised pretraining of the vision encoder: --method=mae|simclr|moco|predictive"),
    "active": (ActiveConfig, _active, "active learning: choose the next scenes to demonstrate by uncertainty and diversity"),
    "data": (DataConfig, _data, "vlaforge data check|clean|relabel|paraphrase|manifest|diff|convert|merge|split|delete|view: "
                                     "curation, versions and tools"),
    "eval": (EvalConfig, _eval, "evaluate a policy in closed loop; writes results.json and report.html"),
    "ablate": (AblateConfig, _ablate, "run a grid of component toggles / data sizes: vlaforge ablate --grid grid.yaml"),
    "generalize": (GeneralizeConfig, _generalize, "evaluate on every split; gaps to the train split with intervals"),
    "chains": (ChainConfig, _chains, "long-horizon chains (CALVIN protocol): instructions in a row in one scene"),
    "human-eval": (HumanEvalConfig, _human_eval, "human evaluation web app: vlaforge human-eval serve|export --study=DIR"),
    "report": (ReportConfig, _report, "rebuild a report.html from its results JSON: vlaforge report DIR"),
    "compare": (CompareConfig, _compare, "A/B test of two evaluations: vlaforge compare RUN_A RUN_B (paired by scene)"),
    "distill": (TrainConfig, _distill, "train a student (--policy.*) on a teacher's chunks: --teacher=DIR"),
    "transfer": (TransferConfig, _transfer, "evaluate in the source simulation and held-out target domains"),
    "export": (ExportConfig, _export, "export a policy for deployment: vlaforge export onnx --policy=DIR --output=DIR"),
    "quantize": (QuantizeConfig, _quantize, "post-training quantization into a deployed policy directory"),
    "control": (ControlConfig, _control, "run a policy in real time: fixed rate, chunking, async inference"),
    "prune": (PruneConfig, _prune, "prune a policy (unstructured, channels, heads) and fine-tune it with the mask held"),
    "safe-rl": (SafeRLConfig, _safe_rl, "constrained RL fine-tuning (PPO-Lagrangian) under a violation-cost budget"),
    "bench": (BenchConfig, _bench, "vlaforge bench latency|server|stream --policy=DIR: act() p50/p99, server load tests; "
                                   "vlaforge bench libero: LIBERO's standard protocol"),
    "serve": (ServeConfig, _serve, "serve a policy's actions over HTTP or a WebSocket stream (token, 127.0.0.1)"),
    "traffic": (TrafficConfig, _traffic, "simulated robots for a served policy: episodes rolled here, actions from "
                                         "the server, outcomes reported to its A/B test"),
    "quickstart": (QuickstartConfig, _quickstart, "collect -> train -> eval on the built-in suite"),
    "runs": (RunsConfig, _runs, "list training runs: status, step, loss, dataset hash, commit"),
    "registry": (RegistryConfig, _registry, "vlaforge registry register|list|show|alias|promote|rollback: policies "
                                           "on MLflow's model registry, promotion through a non-inferiority gate"),
}


def _usage() -> str:
    lines = ["usage: vlaforge <verb> [--config FILE.yaml] [--key=value ...] [--help]", "", "verbs:"]
    lines += [f"  {name:11s} {doc}" for name, (_, _, doc) in VERBS.items()]
    lines.append("  list        registered suites, tasks, policies, heads, backbones, optimizers, domains")
    return "\n".join(lines)


def _help(verb: str, cls: type) -> str:
    lines = [f"usage: vlaforge {verb} [--config FILE.yaml] [--key=value ...]", "", "options:"]
    for key, typ, default, doc in describe_fields(cls):
        lines.append(f"  --{key}={json.dumps(default)}  ({typ}) {doc}")
    return "\n".join(lines)


# Verbs whose first bare argument picks another config: (verb, argument) -> (config, handler).
SUBVERBS: dict[tuple[str, str], tuple[type, Callable[[Any], Any]]] = {
    ("bench", "libero"): (LiberoBenchConfig, _bench_libero),
}


def parse(verb: str, argv: list[str], cls: type | None = None) -> Any:
    """Build the verb's config (or ``cls``) from ``--config`` and ``--key=value`` arguments."""
    cls = cls or VERBS[verb][0]
    cfg_path, overrides = None, []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--"):
            raise ConfigError(f"unexpected argument {arg!r}; options look like --key=value")
        body = arg[2:]
        if "=" not in body:
            if i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                body, i = f"{body}={argv[i + 1]}", i + 1
            else:
                body = f"{body}=true"  # a bare flag such as --resume
        key, value = body.split("=", 1)
        if key == "config":
            cfg_path = value
        else:
            overrides.append(f"{key}={value}")
        i += 1
    cfg = load_yaml(cls, cfg_path) if cfg_path else cls()
    return apply_overrides(cfg, overrides)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    verb, rest = argv[0], argv[1:]
    if verb == "list":
        import vlaforge.deploy.artifact  # noqa: F401  (registers the deploy backends and runtimes)
        import vlaforge.envs.randomization  # noqa: F401  (registers the named domains)
        import vlaforge.models.policy  # noqa: F401  (registers policies and their parts)
        import vlaforge.train.optim  # noqa: F401  (registers optimizers)
        from vlaforge.envs import get_suite
        from vlaforge.envs.randomization import PERTURBATIONS
        from vlaforge.models.transformer import ATTENTION_BACKENDS
        from vlaforge.registry import (
            BACKBONES,
            DEPLOY_BACKENDS,
            DEPLOY_RUNTIMES,
            DOMAINS,
            FFNS,
            HEADS,
            OPTIMIZERS,
            POLICIES,
            SUITES,
        )

        for name in SUITES.names():
            s = get_suite(name)
            print(f"suite {name}: tasks {', '.join(s.tasks)}; splits {', '.join(s.splits)}")
        for kind, names in (("policies", POLICIES.names()), ("heads (--policy.head)", HEADS.names()),
                            ("backbones (--policy.backbone)", BACKBONES.names()), ("ffn (--policy.ffn)", FFNS.names()),
                            ("attention (--policy.attention)", ATTENTION_BACKENDS),
                            ("optimizers (--optim.name)", OPTIMIZERS.names()),
                            ("domains (--domain.preset, transfer --targets)", DOMAINS.names()),
                            ("perturbations (eval --perturb)", ["all", *PERTURBATIONS]),
                            ("deploy runtimes (deploy.json)", DEPLOY_RUNTIMES.names())):
            print(f"{kind}: {', '.join(names)}")
        for name in DEPLOY_BACKENDS.names():
            b = DEPLOY_BACKENDS.get(name)
            print(f"deploy backend {name} (quantize --method, bench latency --runtimes): {b.summary}; "
                  f"parity limit {b.parity_limit:g}")
        return 0
    if verb not in VERBS:
        print(f"error: unknown verb {verb!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    positional = {"export": "format", "bench": "what", "human-eval": "action", "report": "path",
                  "registry": "action"}.get(verb)
    cls, handler, label = VERBS[verb][0], VERBS[verb][1], verb
    if rest and (verb, rest[0]) in SUBVERBS:
        (cls, handler), label, rest = SUBVERBS[verb, rest[0]], f"{verb} {rest[0]}", rest[1:]
    elif positional and rest and not rest[0].startswith("-"):
        rest = [f"--{positional}={rest[0]}", *rest[1:]]
    if verb == "data" and rest[:1] == ["merge"]:  # vlaforge data merge A B [C ...]
        bare = list(itertools.takewhile(lambda x: not x.startswith("-"), rest[1:]))
        rest = ["--action=merge", *([f"--datasets={json.dumps(bare)}"] if bare else []), *rest[1 + len(bare):]]
    elif verb == "data":  # vlaforge data ACTION [DATASET [OTHER]]
        bare = list(itertools.takewhile(lambda x: not x.startswith("-"), rest))[:3]
        keys = ("action", "dataset", "other")
        rest = [f"--{k}={v}" for k, v in zip(keys, bare)] + rest[len(bare):]
    if verb == "compare":  # the leading bare arguments are the evaluations (JSON is YAML: paths stay whole)
        bare = list(itertools.takewhile(lambda x: not x.startswith("-"), rest))
        if bare:
            rest = [f"--runs={json.dumps(bare)}", *rest[len(bare):]]
    if "-h" in rest or "--help" in rest:
        print(_help(label, cls))
        return 0
    try:
        cfg = parse(verb, rest, cls)
        handler(cfg)
    except (ConfigError, KeyError, ValueError, FileExistsError, FileNotFoundError, ImportError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"error: {msg}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
