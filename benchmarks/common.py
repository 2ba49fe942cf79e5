"""Shared by the benchmark scripts: provenance, cache directories keyed on what made them, and
JSON + markdown output.

Every results file is written by ``write`` alone, from this invocation: the git commit (and
whether the tree had uncommitted changes), date, machine, exact command, seeds and the wall
time of every stage timed with ``stage``. A stage whose output came from a cache is recorded as
reused, with the commit and arguments of the run that made it; caches live in ``cache_root``,
a directory keyed on a hash of the script's arguments and of the source code, so a re-run with
other arguments or other code can never pick up another run's artefacts.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from vlaforge.train.config import TrainConfig

RESULTS = Path(__file__).parent / "results"
ROOT_DIR = Path(__file__).resolve().parent.parent
_STARTED = time.perf_counter()
_STARTED_AT = datetime.datetime.now(datetime.timezone.utc)
_STAGES: dict[str, dict] = {}
_CACHE: dict = {}
_GIT: dict = {}

# benchmarks/metaworld.py would shadow the metaworld package for every script run from here, and
# spawned workers inherit sys.path: keep this directory last on it.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE] + [str(_HERE)]


def source_hash() -> str:
    """sha256 over the library and benchmark sources (path + bytes of every .py file, sorted)."""
    h = hashlib.sha256()
    files = sorted([*(ROOT_DIR / "src" / "vlaforge").rglob("*.py"), *_HERE.glob("*.py")])
    for f in files:
        h.update(str(f.relative_to(ROOT_DIR)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def git_state() -> dict:
    """The commit and dirty flag of the tree as this invocation started (edits made while a long
    benchmark runs do not change what it ran)."""
    if not _GIT:
        from vlaforge.train.tracking import git_commit

        _GIT.update(git_commit())
    return dict(_GIT)


def cache_root(base: str | Path, args: list[str] | None = None) -> Path:
    """``base/<key>``: the directory for this invocation's reusable artefacts.

    The key hashes the arguments (``sys.argv[1:]`` by default, order-insensitive) and the source
    code, so artefacts are reused only by a run of the same code with the same arguments;
    ``stamp.json`` inside records the commit, arguments and date of the run that created it.
    """
    args = sorted(sys.argv[1:] if args is None else args)
    src = source_hash()
    key = hashlib.sha256(json.dumps({"args": args, "source": src}).encode()).hexdigest()[:12]
    root = Path(base) / key
    stamp = root / "stamp.json"
    if stamp.is_file():
        made = json.loads(stamp.read_text())
        _CACHE.update({"root": str(root), "fresh": False, "made_by": made})
    else:
        root.mkdir(parents=True, exist_ok=True)
        made = {**git_state(), "args": args, "source_hash": src, "date": _STARTED_AT.isoformat(timespec="seconds")}
        _atomic_write(stamp, json.dumps(made, indent=2))
        _CACHE.update({"root": str(root), "fresh": True, "made_by": made})
    return root


@contextmanager
def stage(name: str, reused: bool = False):
    """Time one stage of the benchmark. ``reused=True`` marks a stage whose output came from the
    cache root (recorded with the run that made it) instead of being computed now."""
    t = time.perf_counter()
    yield
    record_stage(name, time.perf_counter() - t, reused)


def record_stage(name: str, seconds: float, reused: bool = False) -> None:
    """Record a stage timed elsewhere in this invocation (e.g. by the library's own timers)."""
    entry = {"seconds": round(seconds, 2), "reused": reused}
    if reused:
        entry["made_by"] = {k: _CACHE.get("made_by", {}).get(k) for k in ("commit", "dirty", "args", "date")}
    _STAGES[name] = entry


def cached_json(path: Path, make: Callable[[], dict | None], name: str | None = None) -> dict:
    """``path``'s JSON when the cache root already holds it (a reused stage), else ``make()``,
    timed as a stage; ``make`` returns the dict or writes it to ``path``."""
    done = path.is_file()
    with stage(name or _label(path.parent), reused=done):
        result = None if done else make()
    return result if isinstance(result, dict) else json.loads(path.read_text())


def provenance(seeds: dict) -> dict:
    """Everything needed to tell where this invocation's figures came from."""
    return {**git_state(), "date": _STARTED_AT.isoformat(timespec="seconds"), "machine": machine(),
            "command": " ".join(["python", *sys.argv]), "argv": sys.argv[1:], "seeds": seeds,
            "stages": dict(_STAGES), "total_seconds": round(time.perf_counter() - _STARTED, 2),
            "cache": dict(_CACHE) or None}


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu, "cores": os.cpu_count(), "gpu": gpu, "torch": torch.__version__, "python": sys.version.split()[0]}


def write(name: str, figures: dict, rows: list[dict], title: str, *, seeds: dict) -> Path:
    """Write results/<name>.json (provenance, figures, rows) and a markdown table of rows.

    ``seeds`` names every seed the figures depend on (training, scenes, bootstrap...)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    prov = provenance(seeds)
    payload = {"title": title, "provenance": prov, "figures": figures, "rows": rows}
    _atomic_write(RESULTS / f"{name}.json", json.dumps(payload, indent=2))
    cols = list(rows[0]) if rows else []
    commit = (prov["commit"] or "unknown")[:10] + ("+dirty" if prov["dirty"] else "")
    md = [f"# {title}", "", f"Commit {commit}, {prov['date']}, {prov['total_seconds'] / 60:.1f} min", "",
          f"Machine: {prov['machine']}", "", f"Command: `{prov['command']}`", ""]
    md += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    md += ["| " + " | ".join(_fmt(r[c]) for c in cols) + " |" for r in rows]
    _atomic_write(RESULTS / f"{name}.md", "\n".join(md) + "\n")
    print("\n".join(md))
    return RESULTS / f"{name}.json"


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def arg(name: str, default: str, argv: list[str] | None = None) -> str:
    """The value of ``--name=value`` among ``argv`` (the command line by default), else ``default``."""
    return next((a.split("=", 1)[1] for a in (sys.argv[1:] if argv is None else argv) if a.startswith(f"--{name}=")),
                default)


def seeded_text(c: dict) -> str:
    """A recipe's success over training seeds (``eval.stats.seed_summary``) for a results table:
    the mean, and the sd over seeds in parentheses, in percent."""
    return f"{100 * c['mean']:.1f}% ({100 * c['sd']:.1f})"


def paired_text(c: dict) -> str:
    """A paired comparison (``eval.stats.paired``) for a results table, in points: the difference,
    the t interval over per-seed differences (the pooled paired bootstrap when there is one
    seed) and McNemar's p."""
    kind, (lo, hi) = ("seed-t", c["seed_t_ci95"]) if c["seed_t_ci95"] else ("bootstrap", c["paired_bootstrap_ci95"])
    return f"{100 * c['difference']:+.1f} {kind} [{100 * lo:+.1f}, {100 * hi:+.1f}] McNemar p={c['mcnemar_p']:.2g}"


def small_cell():
    """The small experiment cell's collection: 4 tabletop tasks (push and pick_place, the hard
    ones, among them) x 25 scripted demos; the budget a recipe or architecture comparison can
    afford over several seeds on 2 cores (benchmarks/small_cell.py, architectures.py)."""
    from vlaforge.data.config import CollectConfig
    from vlaforge.envs.config import EnvConfig

    return CollectConfig(env=EnvConfig(tasks=["reach", "push", "pick_place", "press_button"]), episodes_per_task=25)


def train_once(run: Path, make: Callable[[bool], object], name: str) -> float:
    """Train into ``run`` once, as the stage ``name``; -> the training's wall seconds. A finished
    run is reused and its seconds read back from ``run/train_seconds.json``, so a resumed
    benchmark reports what the training took rather than the time to find it. ``make(resume)``
    trains, from the last checkpoint when ``resume``; such a training is timed from the resume
    on, and its record says so."""
    from vlaforge.train.checkpoint import latest_checkpoint

    record = run / "train_seconds.json"
    done = (run / "policy").exists() and record.is_file()
    with stage(name, reused=done):
        if done:
            return json.loads(record.read_text())["seconds"]
        resume = latest_checkpoint(run / "checkpoints") is not None
        t = time.perf_counter()
        make(resume)
        seconds = time.perf_counter() - t
    _atomic_write(record, json.dumps({"seconds": seconds, "resumed_from_checkpoint": resume}))
    return seconds


def collect_once(collect_cfg, data: Path, name: str = "collect") -> Path:
    """Collect ``collect_cfg`` into ``data`` once, as the stage ``name``: a finished collection
    (its ``done`` marker) is reused, an interrupted one resumed."""
    import dataclasses

    from vlaforge.data.collect import collect

    done = (data / "done").is_file()
    with stage(name, reused=done):
        if not done:
            collect(dataclasses.replace(collect_cfg, output=str(data), resume=(data / "meta").exists()), False)
            (data / "done").write_text("")
    return data


def train_and_eval(data: Path, run: Path, steps: int, episodes: int, base: TrainConfig | None = None,
                   **train: object) -> dict:
    """Train on ``data`` into ``run`` (32-sample batches, no tracking; other TrainConfig fields
    from ``train``, on top of ``base``, the trainer's defaults when None) and evaluate on the
    train split; finished stages are reused (and recorded as such), so a re-run in the same cache
    root resumes."""
    import dataclasses

    from vlaforge.eval.config import EvalConfig
    from vlaforge.eval.rollout import evaluate
    from vlaforge.train.config import TrainConfig
    from vlaforge.train.trainer import train as train_policy

    label = _label(run)
    train_once(run, lambda resume: train_policy(dataclasses.replace(
        base or TrainConfig(), dataset=str(data), output_dir=str(run), steps=steps, batch_size=32, tracking="none",
        ckpt_every=500, resume=resume, **train)), f"train {label}")
    out = run / "eval" / "train"
    done = (out / "results.json").is_file()
    with stage(f"eval {label}", reused=done):
        if done:
            return json.loads((out / "results.json").read_text())
        return evaluate(EvalConfig(policy=str(run / "policy"), split="train", episodes=episodes, videos_per_task=0,
                                   output_dir=str(out)))


def _label(path: Path) -> str:
    """``path`` relative to the cache root, for stage names."""
    root = _CACHE.get("root")
    try:
        return str(Path(path).relative_to(root)) if root else str(path)
    except ValueError:
        return str(path)


def _fmt(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


git_state()  # recorded as the invocation starts
