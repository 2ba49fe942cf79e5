"""Environments; importing this registers every built-in suite."""

from vlaforge.envs import bullet, libero, metaworld, pusht, tabletop  # noqa: F401  (register the suites and gym ids)
from vlaforge.registry import SUITES


def get_suite(name: str):
    """The registered suite called ``name``."""
    return SUITES.get(name)


def policy_env(meta: dict, task: str, split: str):
    """``task``'s env in the suite and with the settings a policy was trained with (its
    ``meta``: the suite name and env config it records)."""
    from vlaforge.config import from_dict
    from vlaforge.envs.config import EnvConfig

    return get_suite(meta["suite"]).make_env(task, split, from_dict(EnvConfig, meta["env"]))
