"""The promotion gate: a challenger replaces the champion only if it is not worse by more than a
stated margin, by an anytime-valid paired test on the same scenes (`vlaforge registry promote`).

Both policies are evaluated round by round on the same scenes (each round: ``episodes`` new
scene seeds per task). Each round's pairs are fed to one ``stats.NonInferiority`` test, read
after every round; the gate stops at the first round where the test decides (clear
cases stop early) and refuses a challenger still undecided after ``rounds`` rounds. The
decision, its statistics and every paired episode are stored with the challenger's version
(a tag and artifacts of its registry run), and a promotion is appended to the champion history
that `vlaforge registry rollback` walks back.
"""

from __future__ import annotations

from pathlib import Path

from vlaforge.eval.config import EvalConfig, RegistryConfig
from vlaforge.eval.rollout import evaluate
from vlaforge.eval.stats import NonInferiority
from vlaforge.files import atomic_write_json
from vlaforge.runtime.registry import PolicyRegistry

ACTIONS = ("register", "list", "show", "alias", "promote", "rollback")


def paired_rounds(champion: str, challenger: str, cfg: RegistryConfig, out: Path) -> dict:
    """Evaluate both policies round by round on the same scenes until the test decides; the
    test's result with the rounds run and the paired outcomes (task, seed, champion, challenger)."""
    pairs: list[tuple[str, int, bool, bool]] = []
    test = NonInferiority(cfg.margin, cfg.alpha)
    for r in range(cfg.rounds):
        seed = cfg.seed + r * cfg.episodes
        runs = {}
        for role, policy in (("champion", champion), ("challenger", challenger)):
            run = EvalConfig(policy=policy, split=cfg.split, episodes=cfg.episodes, seed=seed,
                             output_dir=str(out / role / f"round_{r}"), **cfg.pool())
            runs[role] = {(e["task"], e["seed"]): bool(e["success"]) for e in evaluate(run, False)["episodes_detail"]}
        if runs["champion"].keys() != runs["challenger"].keys():
            raise ValueError("the two policies were evaluated on different scenes (trained on other suites or tasks?)")
        new = [(t, s, runs["champion"][t, s], runs["challenger"][t, s]) for t, s in sorted(runs["champion"])]
        for _, _, champ, chal in new:
            test.add(chal, champ)
        pairs += new
        now = test.result()
        print(f"gate round {r + 1}: {len(pairs)} pairs, champion {sum(p[2] for p in pairs)}, challenger "
              f"{sum(p[3] for p in pairs)} successes; e(non-inferior) {now['e_noninferior']:.3g}, "
              f"e(inferior) {now['e_inferior']:.3g}", flush=True)
        if test.decision != "undecided":
            break
    return test.result() | {"rounds": r + 1, "episodes_per_round": cfg.episodes,
                   "pairs_detail": [{"task": t, "seed": s, "champion": a, "challenger": b} for t, s, a, b in pairs]}


def promote(cfg: RegistryConfig, gate=paired_rounds) -> dict:
    """Run the gate for ``cfg.version`` (0: the version aliased ``challenger``) of ``cfg.name``
    against its champion, and promote or refuse it. A model without a champion takes the
    challenger as its first one. ``gate`` is the evaluation (tests plant outcomes through it)."""
    reg = PolicyRegistry(cfg.uri)
    if not cfg.name:
        raise ValueError("registry promote needs --name=MODEL")
    challenger = reg.show(f"{cfg.name}/{cfg.version}" if cfg.version else f"{cfg.name}@challenger")
    aliases = reg.aliases(cfg.name)
    out = Path(cfg.output_dir or "registry/gates") / f"{cfg.name}-v{challenger['version']}"
    if "champion" not in aliases:
        decision = {"decision": "promoted", "reason": "no champion yet: the first version promoted becomes it"}
    elif aliases["champion"] == challenger["version"]:
        raise ValueError(f"version {challenger['version']} of {cfg.name} is already the champion")
    else:
        champion = aliases["champion"]
        test = gate(str(reg.local_path(f"{cfg.name}/{champion}")), str(reg.local_path(f"{cfg.name}/{challenger['version']}")),
                    cfg, out)
        decision = {"decision": "promoted" if test["decision"] == "non-inferior" else "refused", "champion": champion,
                    "reason": {"non-inferior": f"not worse than v{champion} by more than {cfg.margin:.0%}",
                               "inferior": f"worse than v{champion} by more than {cfg.margin:.0%}",
                               "undecided": f"not shown non-inferior to v{champion} within {cfg.rounds} rounds"}[
                                   test["decision"]], "test": test}
    decision |= {"name": cfg.name, "version": challenger["version"], "margin": cfg.margin, "alpha": cfg.alpha,
                 "split": cfg.split, "seed": cfg.seed}
    atomic_write_json(out / "decision.json", decision)
    brief = {k: v for k, v in decision.items() if k != "test"} | (
        {"test": {k: v for k, v in decision["test"].items() if k != "pairs_detail"}} if "test" in decision else {})
    reg.client.log_artifacts(challenger["run_id"], str(out), "gate")
    if decision["decision"] == "promoted":
        reg.make_champion(cfg.name, challenger["version"], brief)
    else:
        reg.record_refusal(cfg.name, challenger["version"], brief)
    return decision


def registry(cfg: RegistryConfig) -> dict | list:
    """The `vlaforge registry` actions."""
    if cfg.action not in ACTIONS:
        raise ValueError(f"unknown registry action {cfg.action!r}; known: {', '.join(ACTIONS)}")
    if cfg.action == "promote":
        return promote(cfg)
    reg = PolicyRegistry(cfg.uri)
    if cfg.action == "register":
        if not cfg.policy or not cfg.name:
            raise ValueError("registry register needs --policy=DIR and --name=MODEL")
        return reg.register(cfg.policy, cfg.name, cfg.evaluation, cfg.alias)
    if cfg.action == "list":
        if cfg.name:
            return reg.versions(cfg.name)
        return [{"name": n, "aliases": reg.aliases(n), "champions": reg.champions(n)} for n in reg.names()]
    if cfg.action == "show":
        return reg.show(cfg.model or f"{cfg.name}@champion")
    if cfg.action == "alias":
        if not cfg.name or not cfg.alias or not cfg.version:
            raise ValueError("registry alias needs --name=MODEL --alias=NAME --version=N")
        reg.set_alias(cfg.name, cfg.alias, cfg.version)
        return reg.show(f"{cfg.name}@{cfg.alias}")
    if not cfg.name:
        raise ValueError("registry rollback needs --name=MODEL")
    return reg.show(f"{cfg.name}/{reg.rollback(cfg.name)}")

