"""Trained policies with their evidence, on MLflow's model registry.

A registered version is an MLflow model version whose source is a copy of the policy directory,
logged as the artifacts of a registry run, so later changes to the training directory cannot
alter it. The version's tags link it to its training run's ``run_info.json`` (dataset content
hash, git commit and dirty flag), to the policy's fingerprint (sha256 of its config.json, which
records the weights' sha256) and, when an evaluation is given, to that ``results.json`` (logged
beside the policy; success rate, interval and episodes as tags). A deployed policy directory
(``deploy.json``: ONNX, OpenVINO, quantized) is registered the same way, with its runtime tagged.

Aliases name roles (``champion``, ``challenger``). Every promotion appends the new champion to
the registered model's tag ``vlaforge.champions``, so ``rollback`` can restore the one before.

Where: ``--registry=URI`` or ``VLAFORGE_REGISTRY`` or ``MLFLOW_TRACKING_URI`` (any MLflow tracking
URI: a server, Databricks, a database); otherwise SQLite under ``./registry`` (no server; the
artifacts beside it). ``vlaforge.load_policy("models:/NAME@ALIAS")`` (or ``models:/NAME/VERSION``)
loads a registered version, checked against its recorded sha256.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from urllib.parse import unquote, urlparse

from vlaforge.files import sha256_file

EXPERIMENT = "vlaforge-registry"
DEFAULT_DIR = Path("registry")
_REF = re.compile(r"^(?:models:/)?(?P<name>[^@/]+)(?:@(?P<alias>[\w-]+)|/(?P<version>\d+))$")


def registry_uri(uri: str = "") -> str:
    """The MLflow URI to use: the one given, the environment's, or SQLite under ./registry."""
    uri = uri or os.environ.get("VLAFORGE_REGISTRY") or os.environ.get("MLFLOW_TRACKING_URI", "")
    if uri:
        return uri
    DEFAULT_DIR.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(DEFAULT_DIR / 'mlflow.db').resolve()}"


def parse_ref(ref: str) -> tuple[str, str | None, int | None]:
    """``models:/NAME@ALIAS``, ``NAME@ALIAS``, ``models:/NAME/3`` or ``NAME/3`` -> (name, alias, version)."""
    m = _REF.match(ref)
    if not m:
        raise ValueError(f"model reference {ref!r} must look like NAME@ALIAS or NAME/VERSION (optionally models:/...)")
    return m["name"], m["alias"], int(m["version"]) if m["version"] else None


class PolicyRegistry:
    """Register, find, alias and load policies in an MLflow model registry."""

    def __init__(self, uri: str = "") -> None:
        try:
            from mlflow import MlflowClient
        except ImportError:
            raise ImportError("the policy registry needs MLflow: pip install 'vlaforge[mlops]'") from None
        logging.getLogger("mlflow").setLevel(logging.ERROR)
        logging.getLogger("alembic").setLevel(logging.ERROR)
        self.uri = registry_uri(uri)
        if self.uri.startswith(("file:", "/", ".")) or "://" not in self.uri:
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # a plain directory store, asked for
        self.client = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)

    # --- registering

    def _experiment(self) -> str:
        exp = self.client.get_experiment_by_name(EXPERIMENT)
        if exp is not None:
            return exp.experiment_id
        where = None
        if self.uri.startswith("sqlite:///"):  # artifacts beside the database, not in the working directory
            where = (Path(self.uri[len("sqlite:///"):]).parent / "artifacts").resolve().as_uri()
        return self.client.create_experiment(EXPERIMENT, artifact_location=where)

    def register(self, policy: str | os.PathLike, name: str, evaluation: str = "", alias: str = "",
                 description: str = "") -> dict:
        """A new version of ``name`` holding a copy of ``policy`` (checked first: every file
        against its recorded sha256) and, if given, the evaluation ``results.json``."""
        from vlaforge.runtime.policy import load_policy

        src = Path(policy)
        meta = load_policy(src).meta  # refuses a corrupt or incomplete directory before anything is written
        tags = {"vlaforge.source": str(src.resolve()), "vlaforge.fingerprint": sha256_file(src / "config.json")}
        tags |= {"vlaforge.suite": str(meta.get("suite", "")), "vlaforge.tasks": ",".join(meta.get("tasks", []))}
        if (src / "deploy.json").is_file():
            tags["vlaforge.runtime"] = str(json.loads((src / "deploy.json").read_text()).get("runtime", ""))
        info_file = next((p / "run_info.json" for p in (src.parent, src.parent.parent) if (p / "run_info.json").is_file()),
                         None)
        if info_file is not None:
            info = json.loads(info_file.read_text())
            tags |= {"vlaforge.training_run": str(info_file.parent.resolve()),
                     "vlaforge.dataset_hash": str(info.get("dataset_hash")), "vlaforge.commit": str(info.get("commit")),
                     "vlaforge.dirty": str(info.get("dirty"))}
        if evaluation:
            results = json.loads(Path(evaluation).read_text())
            if "success_rate" not in results or "episodes" not in results:
                raise ValueError(f"{evaluation} is not an evaluation results.json (no success_rate/episodes)")
            tags |= {"vlaforge.success_rate": f"{results['success_rate']:.6f}", "vlaforge.episodes": str(results["episodes"]),
                     "vlaforge.ci95": json.dumps(results.get("ci95")), "vlaforge.split": str(results.get("split", ""))}
        run = self.client.create_run(self._experiment(), tags=tags, run_name=f"{name}-register")
        self.client.log_artifacts(run.info.run_id, str(src), "policy")
        if evaluation:
            self.client.log_artifact(run.info.run_id, str(evaluation), "evaluation")
        self.client.set_terminated(run.info.run_id)
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_registered_model(name)
        except MlflowException:
            self.client.create_registered_model(name)
        mv = self.client.create_model_version(name, f"{run.info.artifact_uri}/policy", run_id=run.info.run_id,
                                              tags=tags, description=description)
        if alias:
            self.client.set_registered_model_alias(name, alias, mv.version)
        return self.show(f"{name}/{mv.version}")

    # --- reading

    def version(self, ref: str):
        """The MLflow ModelVersion ``ref`` names."""
        from mlflow.exceptions import MlflowException

        name, alias, version = parse_ref(ref)
        try:
            if alias:
                return self.client.get_model_version_by_alias(name, alias)
            return self.client.get_model_version(name, str(version))
        except MlflowException:
            known = self.names()
            raise KeyError(f"no registered version {ref!r} in {self.uri}; registered models: "
                           f"{', '.join(known) or 'none'}") from None

    def names(self) -> list[str]:
        return sorted(m.name for m in self.client.search_registered_models())

    def aliases(self, name: str) -> dict[str, int]:
        return {a: int(v) for a, v in self.client.get_registered_model(name).aliases.items()}

    def show(self, ref: str) -> dict:
        mv = self.version(ref)
        return _describe(mv, self.aliases(mv.name))

    def versions(self, name: str) -> list[dict]:
        known = self.names()
        if name not in known:
            raise KeyError(f"no registered model {name!r} in {self.uri}; registered: {', '.join(known) or 'none'}")
        aliases = self.aliases(name)
        found = self.client.search_model_versions(f"name='{name}'")
        return [_describe(mv, aliases) for mv in sorted(found, key=lambda mv: int(mv.version))]

    def local_path(self, ref: str) -> Path:
        """The registered policy directory on this machine (downloaded from a remote store once)."""
        mv = self.version(ref)
        parsed = urlparse(mv.source)
        if parsed.scheme in ("", "file"):
            return Path(unquote(parsed.path))
        import mlflow.artifacts

        cache = DEFAULT_DIR / "cache" / mv.name / str(mv.version)
        if not (cache / "policy" / "config.json").is_file():
            mlflow.artifacts.download_artifacts(artifact_uri=mv.source, dst_path=str(cache), tracking_uri=self.uri)
        return cache / "policy"

    # --- roles

    def set_alias(self, name: str, alias: str, version: int) -> None:
        self.version(f"{name}/{version}")
        self.client.set_registered_model_alias(name, alias, str(version))

    def champions(self, name: str) -> list[int]:
        """Every version promoted to champion, oldest first (rollbacks remove the last)."""
        tags = self.client.get_registered_model(name).tags
        return json.loads(tags.get("vlaforge.champions", "[]"))

    def make_champion(self, name: str, version: int, decision: dict) -> None:
        """Alias ``version`` as champion, store the gate's ``decision`` on it and append it to
        the champion history."""
        self.client.set_model_version_tag(name, str(version), "vlaforge.gate", json.dumps(decision))
        self.client.set_registered_model_tag(name, "vlaforge.champions", json.dumps([*self.champions(name), version]))
        self.client.set_registered_model_alias(name, "champion", str(version))

    def record_refusal(self, name: str, version: int, decision: dict) -> None:
        self.client.set_model_version_tag(name, str(version), "vlaforge.gate", json.dumps(decision))

    def rollback(self, name: str) -> int:
        """Make the previous champion the champion again; the version rolled back from keeps its
        history in its tags. Returns the champion now."""
        history = self.champions(name)
        if len(history) < 2:
            raise ValueError(f"{name} has no earlier champion to roll back to (champions so far: {history})")
        self.client.set_registered_model_tag(name, "vlaforge.champions", json.dumps(history[:-1]))
        self.client.set_model_version_tag(name, str(history[-1]), "vlaforge.rolled_back", "true")
        self.client.set_registered_model_alias(name, "champion", str(history[-2]))
        return history[-2]


def _describe(mv, aliases: dict[str, int]) -> dict:
    """An MLflow ModelVersion as `registry show` prints it; ``aliases``: its model's alias -> version."""
    return {"name": mv.name, "version": int(mv.version), "aliases": [a for a, v in aliases.items() if v == int(mv.version)],
            "source": mv.source, "run_id": mv.run_id, "tags": dict(mv.tags), "created": mv.creation_timestamp}


def resolve_policy(ref: str, uri: str = "") -> Path:
    """The local directory of the registered version ``models:/NAME@ALIAS`` or ``models:/NAME/N``."""
    return PolicyRegistry(uri).local_path(ref)
