"""Online A/B test of a challenger against the champion, served as one policy, stopping itself.

``ABTest`` has a policy's interface, so the policy server serves it unchanged. Each episode
(named by the seed its first request resets with) is routed to the challenger with probability
``share`` (a draw seeded by (seed, episode): reproducible, and the same for every request of the
episode), else to the champion. The robot reports the episode's outcome (``POST /outcome``).
As outcomes arrive, the k-th outcome of each arm is paired with the k-th of the other (episodes
of one arm are independent draws, so arrival order pairs them fairly), and the anytime-valid
paired test ``stats.NonInferiority`` with margin 0 runs in both directions at alpha/2
each: "the challenger is better" or "the challenger is worse". With equal policies, the test
makes either claim with probability at most alpha, however long the traffic runs. At the first
decision the experiment stops: all traffic goes to the winner (a rollback when the champion
wins), and the decision is logged with its evidence.

The log is the experiment's record and its state: a server restarted with the same ``log``
replays it (assignments, outcomes, the decision) and carries on, and refuses a log whose settings
or policy weights differ from its own.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path

import numpy as np

from vlaforge.eval.stats import NonInferiority

ARMS = ("champion", "challenger")


class ABTest:
    def __init__(self, champion, challenger, share: float = 0.5, alpha: float = 0.05, seed: int = 0,
                 log: str | Path | None = None) -> None:
        if not 0 < share < 1 or not 0 < alpha < 1:
            raise ValueError(f"need 0 < share < 1 and 0 < alpha < 1, got share {share} and alpha {alpha}")
        for attr in ("image_shape", "state_dim", "action_dim"):
            if getattr(champion, attr) != getattr(challenger, attr):
                raise ValueError(f"champion and challenger differ in {attr}: {getattr(champion, attr)} vs "
                                 f"{getattr(challenger, attr)}")
        self.policies = {"champion": champion, "challenger": challenger}
        self.share, self.alpha, self.seed = share, alpha, seed
        self.log_path = Path(log) if log else None
        self.assigned: dict[int, str] = {}
        self.outcomes: dict[str, list[bool]] = {a: [] for a in ARMS}
        self.reported: set[int] = set()
        self.decision: dict | None = None
        self.test = NonInferiority(margin=0.0, alpha=alpha / 2)  # both directions at alpha/2
        self.events: list[dict] = []
        self.current = champion
        self._lock = threading.Lock()
        settings = {"share": share, "alpha": alpha, "seed": seed,
                    **{f"{arm}_weights": _identity(p) for arm, p in self.policies.items()}}
        if self.log_path is not None and self.log_path.is_file() and self.log_path.stat().st_size:
            self._resume(settings)
        else:
            self._log({"event": "start", **settings})

    # --- the policy interface the server uses (the champion's description)

    def __getattr__(self, name: str):
        if name in ("image_shape", "state_dim", "action_dim", "cfg", "meta"):
            return getattr(self.policies["champion"], name)
        raise AttributeError(name)

    def reset(self, seed: int = 0) -> None:
        """An episode starts: route it (once; a repeated reset keeps its arm) and reset that policy."""
        self.current = self.policies[self.arm_for(seed)]
        self.current.reset(seed)

    def act(self, obs: dict) -> np.ndarray:
        return self.current.act(obs)

    # --- routing and outcomes

    def arm_for(self, episode: int) -> str:
        with self._lock:
            if episode not in self.assigned:
                if self.decision is not None:
                    arm = self.decision["winner"]
                else:
                    draw = np.random.default_rng([self.seed, abs(int(episode))]).random()
                    arm = "challenger" if draw < self.share else "champion"
                self.assigned[episode] = arm
                self._log({"event": "assigned", "episode": episode, "arm": arm})
            return self.assigned[episode]

    def record(self, episode: int, success: bool) -> dict:
        """The outcome of an episode served here; the state after it (and the decision, if this
        outcome made one). An episode never routed, or reported twice, is refused."""
        with self._lock:
            if episode not in self.assigned:
                raise ValueError(f"episode {episode} was never served (start it with reset=true and seed={episode})")
            if episode in self.reported:
                raise ValueError(f"episode {episode}'s outcome was already reported")
            self._log({"event": "outcome", "episode": episode, "arm": self.assigned[episode], "success": bool(success)})
            if self._outcome(episode, bool(success)):
                self._log({"event": "decision", **self.decision})
            return self.state()

    def _outcome(self, episode: int, success: bool) -> bool:
        """Count one outcome and test the new pair it completes, if any; True when this outcome
        made the decision."""
        self.reported.add(episode)
        self.outcomes[self.assigned[episode]].append(success)
        k = self.test.pairs
        if self.decision is None and min(len(v) for v in self.outcomes.values()) > k:  # a new pair
            if self.test.add(self.outcomes["challenger"][k], self.outcomes["champion"][k]) != "undecided":
                r = self.test.result()
                better = r["decision"] == "non-inferior"
                self.decision = {"winner": "challenger" if better else "champion",
                                 "action": "promote" if better else "rollback", "pairs": r["pairs"],
                                 "episodes": {a: len(v) for a, v in self.outcomes.items()},
                                 "successes": {a: sum(v) for a, v in self.outcomes.items()},
                                 "e_challenger_better": r["e_noninferior"], "e_challenger_worse": r["e_inferior"],
                                 "alpha": self.alpha}
                return True
        return False

    def _resume(self, settings: dict) -> None:
        """Rebuild the experiment from its log (a restarted server carries on where it stopped):
        assignments and outcomes are replayed through the same test, which must reach the logged
        decision. A log of another experiment (settings or weights differ) is refused; a last line
        cut short by a crash is dropped."""
        raw = self.log_path.read_bytes()
        if not raw.endswith(b"\n"):  # a crash mid-write: drop the partial line before appending after it
            raw = raw[:raw.rfind(b"\n") + 1]
            with self.log_path.open("r+b") as f:
                f.truncate(len(raw))
        events = []
        for i, line in enumerate(raw.decode().splitlines()):
            try:
                events.append(json.loads(line))
            except ValueError:
                raise ValueError(f"{self.log_path}: line {i + 1} is not JSON; not an A/B log to resume") from None
        if not events or events[0].get("event") != "start":
            raise ValueError(f"{self.log_path} does not begin with a start record: not an A/B log to resume "
                             "(choose another --ab_log)")
        for key, value in settings.items():
            if events[0].get(key) != value:
                raise ValueError(f"{self.log_path} belongs to another experiment: {key} was {events[0].get(key)!r}, "
                                 f"now {value!r} (choose another --ab_log to start a new one)")
        for e in events[1:]:
            if e["event"] == "assigned":
                self.assigned[e["episode"]] = e["arm"]
            elif e["event"] == "outcome":
                self._outcome(e["episode"], e["success"])
            elif e["event"] == "decision" and (self.decision is None or self.decision["pairs"] != e["pairs"]):
                raise ValueError(f"{self.log_path}: replaying the outcomes does not reach the logged decision")
        self.events = events
        self._log({"event": "resumed", "episodes": {a: len(v) for a, v in self.outcomes.items()}})

    def state(self) -> dict:
        """The experiment now: outcomes per arm, the pairs tested, the running e-values of both
        claims, the e-value at which a claim is made (``threshold``: 2 / alpha, each direction
        testing at alpha / 2) and the decision, if any."""
        r = self.test.result()
        return {"share": self.share, "alpha": self.alpha, "decision": self.decision,
                "episodes": {a: len(v) for a, v in self.outcomes.items()},
                "successes": {a: sum(v) for a, v in self.outcomes.items()}, "pairs": r["pairs"],
                "e_challenger_better": r["e_noninferior"], "e_challenger_worse": r["e_inferior"],
                "threshold": 1 / self.test.alpha}

    def _log(self, entry: dict) -> None:
        entry = {"time": time.time(), **entry}
        self.events.append(entry)
        if self.log_path is not None:  # one JSON line per event, appended and flushed: the experiment's record
            with self.log_path.open("a") as f:
                f.write(json.dumps(entry) + "\n")


def _identity(policy) -> str | None:
    """The sha256 of the policy's files as recorded when it was written (None when it records none)."""
    digests = (getattr(policy, "meta", None) or {}).get("sha256")
    return hashlib.sha256(json.dumps(digests, sort_keys=True).encode()).hexdigest()[:16] if digests else None
