"""Reliability campaign: real kill -9s of collect / train / eval followed by a resume, random byte
flips in a dataset and a policy directory, fuzzed observations in process and over HTTP, and
crafted policy directories that try to run code or reach outside themselves.

    python benchmarks/reliability.py                       # the recorded campaign
    python benchmarks/reliability.py --kills=3 --flips=20 --requests=100

Every run is compared with an uninterrupted reference made in the same invocation:
- kill -9 (parent only) at a uniformly random time of the reference's wall time, workers must be
  gone 5 s later; then ``--resume`` and compare: collect byte for byte (meta/, data/,
  manifest.json), train tensor for tensor (model.safetensors), eval episode for episode;
- a byte flip is *detected* when the load refuses naming the file, *silent* when it loads and a
  value differs; loading the same flips with verification off counts what the check prevents;
- a fuzzed request must give a finite action or a refusal (ValueError in process, 4xx over HTTP);
  a non-finite action or a 5xx is counted against it.
Writes benchmarks/results/reliability.{json,md}. Targets: 0 silent differences, 0 code
execution, 0 non-finite actions.
"""

from __future__ import annotations

import base64
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
from common import arg, cache_root, stage, write
from safetensors.numpy import load_file

from vlaforge.data.dataset import DatasetError, LeRobotDataset  # noqa: E402
from vlaforge.runtime.policy import load_policy  # noqa: E402

TINY = ["--policy.d_model=32", "--policy.n_layers=1", "--policy.n_heads=2", "--policy.vision_channels=[8,8]"]


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "vlaforge", *args]


def collect_args(out: Path) -> list[str]:
    return ["collect", "--env.tasks=[reach,press_button]", "--episodes_per_task=4", "--workers=2", f"--output={out}"]


def train_args(data: Path, out: Path) -> list[str]:
    return ["train", f"--dataset={data}", f"--output_dir={out}", "--steps=60", "--batch_size=8", "--ckpt_every=7",
            "--log_every=5", "--tracking=none", *TINY]


def eval_args(policy: Path, out: Path) -> list[str]:
    return ["eval", f"--policy={policy}", "--split=train", "--episodes=4", "--workers=2", "--max_steps=40",
            "--videos_per_task=1", f"--output_dir={out}"]


def run(args: list[str]) -> float:
    """Run a vlaforge command to completion; -> wall seconds (RuntimeError with its last error line)."""
    t = time.perf_counter()
    done = subprocess.run(cli(*args), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode:
        raise RuntimeError((done.stderr.strip().splitlines() or ["exit code %d" % done.returncode])[-1])
    return time.perf_counter() - t


def children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(") ", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def kill_at(args: list[str], seconds: float) -> dict:
    """Start ``args``, SIGKILL the parent after ``seconds``; -> whether it finished first and
    how many of its workers outlived it by 5 s."""
    proc = subprocess.Popen(cli(*args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, kids = time.perf_counter() + seconds, set()
    while time.perf_counter() < deadline and proc.poll() is None:
        kids |= set(children(proc.pid))
        time.sleep(0.05)
    finished = proc.poll() is not None
    if not finished:
        kids |= set(children(proc.pid))
        proc.kill()
    proc.wait()
    time.sleep(5)
    orphans = [k for k in kids if alive(k)]
    for k in orphans:
        os.kill(k, signal.SIGKILL)
    return {"finished_before_kill": finished, "orphaned_workers": len(orphans)}


def tree(root: Path, parts=("meta", "data", "manifest.json")) -> dict[str, bytes]:
    files = {}
    for part in parts:
        p = root / part
        for f in sorted([p] if p.is_file() else p.rglob("*") if p.exists() else []):
            if f.is_file():
                files[f.relative_to(root).as_posix()] = f.read_bytes()
    return files


def weights(policy: Path) -> dict[str, np.ndarray]:
    return load_file(str(policy / "model.safetensors"))


def outcomes(out: Path) -> list:
    detail = json.loads((out / "results.json").read_text())["episodes_detail"]
    return [(e["task"], e["seed"], e["success"], e["length"]) for e in detail]


def kill_campaign(root: Path, kills: int, rng: np.random.Generator) -> tuple[list[dict], dict]:
    """Reference runs, then ``kills`` killed-and-resumed runs of each verb."""
    ref = {}
    with stage("reference collect"):
        wall_collect = run(collect_args(root / "ref_data"))
        ref["collect"] = tree(root / "ref_data")
    with stage("reference train"):
        wall_train = run(train_args(root / "ref_data", root / "ref_run"))
        ref["train"] = weights(root / "ref_run/policy")
    with stage("reference eval"):
        wall_eval = run(eval_args(root / "ref_run/policy", root / "ref_eval"))
        ref["eval"] = outcomes(root / "ref_eval")
    walls = {"collect": wall_collect, "train": wall_train, "eval": wall_eval}
    rows = []
    for verb in ("collect", "train", "eval"):
        with stage(f"kill {verb} x{kills}"):
            for i in range(kills):
                out = root / f"{verb}_{i}"
                shutil.rmtree(out, ignore_errors=True)
                args = {"collect": lambda o: collect_args(o), "train": lambda o: train_args(root / "ref_data", o),
                        "eval": lambda o: eval_args(root / "ref_run/policy", o)}[verb]
                at = float(rng.uniform(0.5, walls[verb]))
                row = {"verb": verb, "kill_at_s": round(at, 2), **kill_at(args(out), at)}
                resume = ["--resume=true"]
                if verb == "train" and not (out / "checkpoints").exists():
                    resume = []  # killed before its first checkpoint: a plain re-run starts over
                try:
                    run(args(out) + resume)
                    same = {"collect": lambda: tree(out) == ref["collect"],
                            "train": lambda: _same_tensors(weights(out / "policy"), ref["train"]),
                            "eval": lambda: outcomes(out) == ref["eval"]}[verb]()
                    row |= {"resumed": True, "identical": same}
                except (RuntimeError, OSError, KeyError, json.JSONDecodeError) as e:
                    row |= {"resumed": False, "identical": False, "error": str(e)}
                print(row, flush=True)
                rows.append(row)
    return rows, walls


def _same_tensors(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def flip_campaign(root: Path, flips: int, rng: np.random.Generator) -> list[dict]:
    """Random 1-2 byte flips in the dataset's data files and the policy's checked files."""
    from vlaforge.data.manifest import write_manifest

    data, policy = root / "flip_data", root / "flip_policy"
    shutil.copytree(root / "ref_data", data)
    shutil.copytree(root / "ref_run/policy", policy)
    write_manifest(data)
    clean = LeRobotDataset(data).load()
    clean_policy = load_policy(policy)
    targets = [*sorted((data / "data").rglob("*.parquet")), data / "meta/stats.json", policy / "model.safetensors",
               policy / "normalization.json"]
    rows = []
    for i in range(flips):
        target = targets[int(rng.integers(len(targets)))]
        original = target.read_bytes()
        buf = bytearray(original)
        start = int(rng.integers(len(buf) - 1))
        for j in range(start, start + int(rng.integers(1, 3))):
            buf[j] ^= int(rng.integers(1, 256))
        target.write_bytes(bytes(buf))
        row = {"file": target.relative_to(root).as_posix(), "offset": start}
        for verify in (True, False):
            key = "verified" if verify else "unverified"
            try:
                if target.parent == policy:
                    loaded = load_policy(policy, verify=verify)
                    changed = not _same_tensors({k: v.numpy() for k, v in loaded.model.state_dict().items()},
                                                {k: v.numpy() for k, v in clean_policy.model.state_dict().items()}) \
                        or loaded.normalizer.to_dict() != clean_policy.normalizer.to_dict()
                else:
                    got = LeRobotDataset(data).load(verify=verify)
                    changed = not all(np.array_equal(getattr(got, k), getattr(clean, k))
                                      for k in ("images", "state", "action", "task_index"))
                row[key] = "silent" if changed else "harmless"
            except (DatasetError, ValueError, FileNotFoundError) as e:
                row[key] = "detected"
                row[f"{key}_message"] = str(e).splitlines()[0][:160]
            except Exception as e:  # an unclear crash: neither silent nor a named refusal
                row[key] = "crash"
                row[f"{key}_message"] = f"{type(e).__name__}: {e}"[:160]
        target.write_bytes(original)
        rows.append(row)
    return rows


class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def code_campaign(root: Path) -> list[dict]:
    """Crafted policy directories: a torch.export archive carrying a pickle, and deploy.json
    paths leading outside the directory; each is loaded through load_policy and `vlaforge eval`."""
    marker = root / "code-ran"
    crafted = root / "crafted"
    shutil.rmtree(crafted, ignore_errors=True)
    shutil.copytree(root / "ref_run/policy", crafted)
    with zipfile.ZipFile(crafted / "model.pt2", "w") as z:
        z.writestr("model/archive_format", "pt2")
        z.writestr("model/data/constants/model.pkl", pickle.dumps(_Payload(str(marker))))
    (root / "outside.onnx").write_bytes(b"not a model")
    cases = [{"runtime": "torch-export", "model": "model.pt2"}, {"runtime": "onnxruntime", "model": "../outside.onnx"},
             {"runtime": "onnxruntime", "model": str(root / "outside.onnx")}]
    rows = []
    for case in cases:
        (crafted / "deploy.json").write_text(json.dumps(case))
        try:
            load_policy(crafted)
            refused = False
        except (ValueError, FileNotFoundError):
            refused = True
        cli_rc = subprocess.run(cli("eval", f"--policy={crafted}", "--episodes=1", "--workers=1"),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
        rows.append({"deploy_json": case, "refused": refused, "eval_exit_code": cli_rc, "code_ran": marker.exists()})
    return rows


def random_text(rng: np.random.Generator) -> str:
    kind = int(rng.integers(4))
    n = int(rng.integers(0, 40))
    if kind == 0:
        return "".join(chr(int(c)) for c in rng.integers(0, 0x110000, n) if not 0xD800 <= c < 0xE000)
    if kind == 1:
        return "".join(chr(int(c)) for c in rng.integers(0, 32, n))
    if kind == 2:
        return "".join(rng.choice(list("reach the red cube press button ?!.…🙂\x00"), n))
    return "reach the red cube" * int(rng.integers(1, 200))


def random_state(rng: np.random.Generator, dim: int):
    kind = int(rng.integers(5))
    if kind == 0:
        return (rng.choice([-1, 1], dim) * 10.0 ** rng.uniform(0, 38, dim)).astype(np.float32)
    if kind == 1:
        s = rng.normal(size=dim).astype(np.float32)
        s[int(rng.integers(dim))] = rng.choice([np.nan, np.inf, -np.inf])
        return s
    if kind == 2:
        return rng.normal(size=int(rng.integers(0, 2 * dim + 1))).astype(np.float32)
    if kind == 3:
        return rng.normal(size=(dim, 2)).astype(np.float32)
    return rng.normal(size=dim).astype(np.float32)


def random_image(rng: np.random.Generator, shape: tuple):
    kind = int(rng.integers(4))
    if kind == 0:
        return rng.integers(0, 256, shape, dtype=np.uint8)
    if kind == 1:
        return rng.normal(size=shape).astype(np.float32)
    if kind == 2:
        return rng.integers(0, 256, (shape[0], shape[1] // 2, shape[2], shape[3]), dtype=np.uint8)
    return np.zeros(shape, np.uint8)


def fuzz_campaign(root: Path, requests: int, rng: np.random.Generator) -> dict:
    """Fuzzed observations in process (Policy.act) and over HTTP (PolicyServer)."""
    from vlaforge.deploy.server import PolicyServer

    policy = load_policy(root / "ref_run/policy")
    shape, dim = tuple(policy.image_shape), policy.state_dim
    local = {"finite": 0, "refused": 0, "non_finite": 0, "crash": 0, "crash_examples": []}
    for _ in range(requests):
        obs = {"image": random_image(rng, shape), "state": random_state(rng, dim), "instruction": random_text(rng)}
        try:
            policy.reset()
            a = policy.act(obs)
            local["finite" if np.isfinite(a).all() else "non_finite"] += 1
        except (ValueError, TypeError):
            local["refused"] += 1
        except Exception as e:
            local["crash"] += 1
            local["crash_examples"] = (local["crash_examples"] + [f"{type(e).__name__}: {e}"[:120]])[:5]
    http = {"ok_finite": 0, "client_error": 0, "ok_non_finite": 0, "server_error": 0}
    server = PolicyServer(policy, port=0).start()
    try:
        for i in range(requests):
            img, state = random_image(rng, shape), random_state(rng, dim)
            body = {"image": base64.b64encode(np.ascontiguousarray(img).tobytes()).decode(), "image_shape": list(img.shape),
                    "state": [float(x) for x in np.ravel(state)] if i % 3 else state.tolist(),
                    "instruction": random_text(rng)}
            payload = json.dumps(body).encode() if i % 7 else rng.bytes(int(rng.integers(0, 300)))
            req = urllib.request.Request(server.url + "/act", data=payload, method="POST",
                                         headers={"Authorization": f"Bearer {server.token}"})
            try:
                with urllib.request.urlopen(req, timeout=30) as r:
                    actions = np.asarray(json.loads(r.read())["actions"], dtype=np.float64)
                    http["ok_finite" if np.isfinite(actions).all() else "ok_non_finite"] += 1
            except urllib.error.HTTPError as e:
                http["client_error" if 400 <= e.code < 500 else "server_error"] += 1
    finally:
        server.stop()
    return {"in_process": local, "http": http}


def main() -> None:
    kills, flips, requests = int(arg("kills", "6")), int(arg("flips", "100")), int(arg("requests", "400"))
    seed = int(arg("seed", "0"))
    rng = np.random.default_rng(seed)
    root = cache_root("runs/bench_reliability")
    shutil.rmtree(root, ignore_errors=True)  # every figure from this invocation
    root.mkdir(parents=True)
    kill_rows, walls = kill_campaign(root, kills, rng)
    with stage(f"byte flips x{flips}"):
        flip_rows = flip_campaign(root, flips, rng)
    with stage("crafted policy directories"):
        code_rows = code_campaign(root)
    with stage(f"fuzzed requests x{requests} x2"):
        fuzz = fuzz_campaign(root, requests, rng)
    count = lambda rows, key, value: sum(r.get(key) == value for r in rows)  # noqa: E731
    figures = {
        "kills": {verb: {"runs": sum(r["verb"] == verb for r in kill_rows),
                         "killed": sum(r["verb"] == verb and not r["finished_before_kill"] for r in kill_rows),
                         "resumed_identical": sum(r["verb"] == verb and r["identical"] for r in kill_rows),
                         "orphaned_workers": sum(r["orphaned_workers"] for r in kill_rows if r["verb"] == verb)}
                  for verb in ("collect", "train", "eval")},
        "reference_wall_s": {k: round(v, 1) for k, v in walls.items()},
        "flips": {"runs": flips, **{f"verified_{o}": count(flip_rows, "verified", o) for o in ("detected", "silent",
                                                                                             "harmless", "crash")},
                  **{f"unverified_{o}": count(flip_rows, "unverified", o) for o in ("detected", "silent", "harmless",
                                                                                   "crash")}},
        "code_execution": {"crafted": len(code_rows), "refused": sum(r["refused"] for r in code_rows),
                           "code_ran": sum(r["code_ran"] for r in code_rows)},
        "fuzz": fuzz,
    }
    figures["silent_differences"] = (figures["flips"]["verified_silent"]
                                     + sum(r["resumed"] and not r["identical"] for r in kill_rows))
    figures["non_finite_actions"] = fuzz["in_process"]["non_finite"] + fuzz["http"]["ok_non_finite"]
    rows = [{"verb": r["verb"], "kill_at_s": r["kill_at_s"], "finished_before_kill": r["finished_before_kill"],
             "orphaned_workers": r["orphaned_workers"], "resumed": r["resumed"], "identical": r["identical"]}
            for r in kill_rows]
    write("reliability", figures | {"flip_runs": flip_rows, "code_runs": code_rows}, rows,
          "Reliability: kill -9 and resume, byte flips, crafted policy directories, fuzzed requests",
          seeds={"campaign": seed, "collection": 0, "training": 0, "evaluation": "1e9 + episode"})


if __name__ == "__main__":
    main()
