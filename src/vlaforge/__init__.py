"""vlaforge: vision-language-action policies from simulated data to measured deployment."""

import os

# MuJoCo picks its GL backend at import; headless EGL is the default everywhere we run.
os.environ.setdefault("MUJOCO_GL", "egl")
