"""Domain randomization (visual, physics, sensor), named target domains and perturbations."""

from vlaforge.envs.randomization import presets  # noqa: F401  (registers the named domains)
from vlaforge.envs.randomization.presets import PERTURBATIONS, TARGETS, parse_perturb, perturbation
from vlaforge.envs.randomization.wrapper import is_source, job_domain, randomize, resolve

__all__ = ["PERTURBATIONS", "TARGETS", "is_source", "job_domain", "parse_perturb", "perturbation", "randomize",
           "resolve"]
