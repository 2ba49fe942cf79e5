"""Environments; importing this registers every built-in suite."""

from vlaforge.envs import tabletop  # noqa: F401  (registers the suite and its gym ids)
from vlaforge.registry import SUITES


def get_suite(name: str):
    """The registered suite called ``name``."""
    return SUITES.get(name)
