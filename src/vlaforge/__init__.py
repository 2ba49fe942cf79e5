"""vlaforge: vision-language-action policies from simulated data to measured deployment."""

import os

# MuJoCo picks its GL backend at import; headless EGL is the default everywhere we run.
os.environ.setdefault("MUJOCO_GL", "egl")


def load_policy(directory, device: str = "cpu", verify: bool = True):
    """Load a saved policy directory or a registered version (``"models:/NAME@champion"``);
    ``policy.act(obs)`` returns an action chunk. ``verify`` checks its files against the sha256
    recorded when they were written."""
    from vlaforge.runtime.policy import load_policy as _load

    return _load(directory, device, verify)


__all__ = ["load_policy"]
