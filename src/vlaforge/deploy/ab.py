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
"""

from __future__ import annotations

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
            self.reported.add(episode)
            arm = self.assigned[episode]
            self.outcomes[arm].append(bool(success))
            self._log({"event": "outcome", "episode": episode, "arm": arm, "success": bool(success)})
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
                    self._log({"event": "decision", **self.decision})
            return self.state()

    def state(self) -> dict:
        """The experiment now: outcomes per arm, the pairs tested, the running e-values of both
        claims (a claim is made when its e-value reaches 2 / alpha) and the decision, if any."""
        r = self.test.result()
        return {"share": self.share, "alpha": self.alpha, "decision": self.decision,
                "episodes": {a: len(v) for a, v in self.outcomes.items()},
                "successes": {a: sum(v) for a, v in self.outcomes.items()}, "pairs": r["pairs"],
                "e_challenger_better": r["e_noninferior"], "e_challenger_worse": r["e_inferior"]}

    def _log(self, entry: dict) -> None:
        entry = {"time": time.time(), **entry}
        self.events.append(entry)
        if self.log_path is not None:  # one JSON line per event, appended and flushed: the experiment's record
            with self.log_path.open("a") as f:
                f.write(json.dumps(entry) + "\n")
