"""Environments; importing this registers every built-in suite."""

from vlaforge.envs import bullet, metaworld, tabletop  # noqa: F401  (register the suites and gym ids)
from vlaforge.registry import SUITES


def get_suite(name: str):
    """The registered suite called ``name``."""
    return SUITES.get(name)
