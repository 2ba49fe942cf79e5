import numpy as np
import pytest

from vlaforge.envs.tabletop import Expert, TabletopEnv
from vlaforge.envs.tabletop.tasks import FAMILIES


def expert_wins(family: str, seeds: range) -> int:
    env = TabletopEnv(family)
    expert = Expert(env)
    wins = 0
    for seed in seeds:
        env.reset(seed=seed)
        expert.reset()
        for _ in range(env.max_steps):
            _, _, term, trunc, info = env.step(expert.act())
            if term or trunc:
                break
        wins += info["success"]
    return wins


@pytest.mark.parametrize("family", FAMILIES)
def test_expert_success_rate(family):
    wins = expert_wins(family, range(20))
    assert wins >= 19, f"{family}: expert succeeded {wins}/20"


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_expert_success_rate_100_seeds(family):
    wins = expert_wins(family, range(1000, 1100))
    assert wins >= 95, f"{family}: expert succeeded {wins}/100"


def test_random_policy_rarely_succeeds():
    """The success checks are not trivially true."""
    rng = np.random.default_rng(0)
    wins = 0
    for family in ("pick_place", "stack", "open_drawer"):
        env = TabletopEnv(family, max_steps=40)
        for seed in range(3):
            env.reset(seed=seed)
            for _ in range(40):
                _, _, term, trunc, info = env.step(rng.uniform(-1, 1, 4))
                if term or trunc:
                    break
            wins += info["success"]
    assert wins == 0
