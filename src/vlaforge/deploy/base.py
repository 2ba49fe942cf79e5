"""The deploy-backend contract. A backend turns a trained policy into a deployed directory that a
runtime of the ``DEPLOY_RUNTIMES`` registry loads; it is one ``DeployBackend`` registered in
``DEPLOY_BACKENDS`` under the method name users type (``vlaforge quantize --method=NAME``,
``vlaforge bench latency --runtimes=[NAME]``). ``deploy/artifact.py:deploy`` is the one path that
writes every backend's directory and enforces its parity limit.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from vlaforge.runtime.policy import Policy


@dataclass(frozen=True)
class DeployOptions:
    """What some backends need besides the policy.

    ``dataset``: frames that calibrate static quantization; ``random_calibration`` lets a backend
    that calibrates use random inputs instead (timing runs only: latency does not depend on the
    calibrated ranges, success does)."""

    dataset: str = ""
    calibration_samples: int = 64
    random_calibration: bool = False


@dataclass(frozen=True)
class DeployBackend:
    """``write(base, tmp, options)`` adds the backend's files to ``tmp`` (which already holds the
    policy's config, normaliser and fp32 weights) and returns deploy.json's fields: at least
    ``runtime`` (a ``DEPLOY_RUNTIMES`` name), the file it reads under ``model`` or
    ``calibration_file``, and ``size_bytes``. ``parity_limit`` bounds max |deployed - fp32| over
    the normalised action chunk of example inputs; a directory beyond it is never written."""

    write: Callable[[Policy, Path, DeployOptions], dict]
    parity_limit: float
    summary: str
