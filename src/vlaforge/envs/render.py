"""Offscreen MuJoCo rendering shared by the suites: shadows, reflections and skybox off.

Renderers are closed at interpreter exit before mujoco terminates the EGL display; otherwise
mujoco 3.3 prints an EGL error per renderer when they are garbage-collected afterwards.
"""

from __future__ import annotations

import atexit
import os
import weakref

os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco  # noqa: E402

_OPEN: weakref.WeakSet = weakref.WeakSet()


def make_renderer(model: mujoco.MjModel, size: int) -> mujoco.Renderer:
    """A square offscreen renderer with the effects that cost time and carry no task signal off."""
    renderer = mujoco.Renderer(model, size, size)
    flags = renderer.scene.flags
    flags[mujoco.mjtRndFlag.mjRND_SHADOW] = False
    flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = False
    flags[mujoco.mjtRndFlag.mjRND_SKYBOX] = False
    if not _OPEN:
        # Registered after mujoco's own EGL atexit hook (set up by the first renderer), so it
        # runs before the display is terminated.
        atexit.unregister(_close_all)
        atexit.register(_close_all)
    _OPEN.add(renderer)
    return renderer


def _close_all() -> None:
    for renderer in list(_OPEN):
        renderer.close()
    _OPEN.clear()
