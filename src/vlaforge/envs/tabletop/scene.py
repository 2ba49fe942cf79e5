"""MJCF for the tabletop scene, generated in code.

One model serves every task: a pool of free objects (each shape several times), two
coloured zones, a bowl, a drawer and a button. A reset recolours the pool, moves what the
episode uses onto the table and parks the rest out of view, so no model is recompiled and
the renderer is created once per environment.

Frame: the table top is the plane z = 0, x to the right of the camera, y away from it.

Domain randomization (``vlaforge.envs.randomization``) uses parts that are invisible and
inert in the nominal scene: a backdrop geom in geom group 3 (not rendered unless moved to a
visible group; no contacts), a directional key light that starts switched off, and textured
materials that no geom uses until one is assigned.
"""

from __future__ import annotations

import math

SHAPES = ("cube", "cylinder", "ball")
COPIES_PER_SHAPE = 3
OBJECT_HALF = 0.02  # half extent of every object (m)
ZONE_RADIUS = 0.05
BOWL_RADIUS = 0.055  # inner radius
BOWL_WALL_HEIGHT = 0.03
BUTTON_RADIUS = 0.025
BUTTON_TRAVEL = 0.012
DRAWER_TRAVEL = 0.12
FINGER_OPEN = 0.04  # opening of one finger from the centre line (m)
EE_RANGE = ((-0.26, 0.26), (-0.26, 0.26), (0.005, 0.3))
NUM_ZONES = 2
TABLE_RGBA = (0.55, 0.42, 0.3, 1.0)
# name -> (position, MuJoCo xyaxes: the camera's x and y axes in the world, vertical fov in degrees)
CAMERA_POSES: dict[str, tuple[tuple[float, ...], tuple[float, ...], float]] = {
    "front": ((0, -0.5, 0.5), (1, 0, 0, 0, 0.69, 0.72), 48),
    "top": ((0, 0, 0.75), (1, 0, 0, 0, 1, 0), 42),
}

COLORS: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.12, 0.12),
    "green": (0.15, 0.7, 0.2),
    "blue": (0.15, 0.3, 0.9),
    "yellow": (0.95, 0.85, 0.1),
    "purple": (0.6, 0.2, 0.75),
    "orange": (1.0, 0.5, 0.05),
}


def object_names() -> list[str]:
    """Names of the pooled object bodies, e.g. ``cube0``."""
    return [f"{s}{i}" for s in SHAPES for i in range(COPIES_PER_SHAPE)]


def _object_xml(name: str, shape: str, park: tuple[float, float]) -> str:
    h = OBJECT_HALF
    if shape == "cube":
        geom = f'type="box" size="{h} {h} {h}"'
    elif shape == "cylinder":
        geom = f'type="cylinder" size="{h} {h}"'
    else:
        geom = f'type="sphere" size="{h}" condim="6" friction="1.5 0.02 0.002"'
    return (
        f'<body name="{name}" pos="{park[0]} {park[1]} {h}">'
        f'<freejoint name="{name}_joint"/>'
        f'<geom name="{name}" {geom} mass="0.05" rgba="1 1 1 1"/></body>'
    )


def _bowl_xml() -> str:
    walls = []
    n = 10
    for k in range(n):
        a = 2 * math.pi * k / n
        r = BOWL_RADIUS + 0.004
        walls.append(
            f'<geom type="box" size="0.004 {r * math.tan(math.pi / n) + 0.002:.4f} {BOWL_WALL_HEIGHT / 2}" '
            f'pos="{r * math.cos(a):.4f} {r * math.sin(a):.4f} {BOWL_WALL_HEIGHT / 2}" '
            f'euler="0 0 {a:.4f}" rgba="0.9 0.9 0.92 1"/>'
        )
    base = f'<geom type="cylinder" size="{BOWL_RADIUS + 0.008} 0.002" pos="0 0 0.002" rgba="0.8 0.8 0.85 1"/>'
    return f'<body name="bowl" pos="0 0 0">{base}{"".join(walls)}</body>'


def build_mjcf(offscreen_size: int = 128) -> str:
    """Return the scene's MJCF; ``offscreen_size`` bounds the offscreen framebuffer."""
    parks = [(1.0 + 0.1 * i, 1.0) for i in range(len(SHAPES) * COPIES_PER_SHAPE)]
    objects = "".join(
        _object_xml(name, name.rstrip("0123456789"), park) for name, park in zip(object_names(), parks)
    )
    zones = "".join(
        f'<body name="zone{i}" pos="{1.0 + 0.2 * i} -1 0"><geom name="zone{i}" type="cylinder" '
        f'size="{ZONE_RADIUS} 0.0008" pos="0 0 0.0008" contype="0" conaffinity="0" rgba="1 1 1 1"/></body>'
        for i in range(NUM_ZONES)
    )
    lo, hi = EE_RANGE[0], EE_RANGE[2]
    cameras = "".join(
        f'<camera name="{name}" pos="{" ".join(map(str, pos))}" xyaxes="{" ".join(map(str, axes))}" fovy="{fovy}"/>'
        for name, (pos, axes, fovy) in CAMERA_POSES.items()
    )
    return f"""
<mujoco model="vlaforge_tabletop">
  <compiler angle="radian" autolimits="true"/>
  <option timestep="0.002" integrator="implicitfast"/>
  <visual>
    <quality shadowsize="0" offsamples="0"/>
    <global offwidth="{offscreen_size}" offheight="{offscreen_size}"/>
    <headlight ambient="0.45 0.45 0.45" diffuse="0.55 0.55 0.55" specular="0 0 0"/>
  </visual>
  <asset>
    <texture name="dr_checker" type="2d" builtin="checker" rgb1="1 1 1" rgb2="0.55 0.55 0.55" width="64" height="64"/>
    <texture name="dr_noise" type="2d" builtin="flat" mark="random" random="0.35" rgb1="1 1 1" markrgb="0.35 0.35 0.35" width="64" height="64"/>
    <texture name="dr_gradient" type="2d" builtin="gradient" rgb1="1 1 1" rgb2="0.35 0.35 0.35" width="64" height="64"/>
    <material name="dr_checker" texture="dr_checker" texrepeat="6 6"/>
    <material name="dr_noise" texture="dr_noise" texrepeat="2 2"/>
    <material name="dr_gradient" texture="dr_gradient" texrepeat="1 1"/>
  </asset>
  <default>
    <geom friction="1.5 0.01 0.001" solref="0.01 1"/>
  </default>
  <worldbody>
    <geom name="table" type="plane" size="0.5 0.5 0.02" rgba="{' '.join(map(str, TABLE_RGBA))}"/>
    <geom name="backdrop" type="box" size="1.5 0.01 0.8" pos="0 0.75 0.3" group="3" contype="0" conaffinity="0" rgba="0.6 0.6 0.6 1"/>
    <light name="key" directional="true" active="false" pos="0 0 1" dir="0 0 -1" diffuse="0.45 0.45 0.45" specular="0 0 0" castshadow="false"/>
    {cameras}
    <body name="ee" pos="0 0 0.15" gravcomp="1">
      <joint name="ee_x" type="slide" axis="1 0 0" range="{lo[0]} {lo[1]}" damping="115"/>
      <joint name="ee_y" type="slide" axis="0 1 0" range="{EE_RANGE[1][0]} {EE_RANGE[1][1]}" damping="115"/>
      <joint name="ee_z" type="slide" axis="0 0 1" range="{hi[0] - 0.15} {hi[1] - 0.15}" damping="115"/>
      <geom name="palm" type="box" size="0.055 0.018 0.01" pos="0 0 0.06" mass="0.5" rgba="0.2 0.2 0.22 1"/>
      <geom name="wrist" type="cylinder" size="0.012 0.05" pos="0 0 0.12" mass="0.05" rgba="0.3 0.3 0.32 1" contype="0" conaffinity="0"/>
      <body name="finger_l" pos="0 0 0" gravcomp="1">
        <joint name="finger_l" type="slide" axis="-1 0 0" range="0 {FINGER_OPEN}" damping="3"/>
        <geom name="finger_l" type="box" size="0.005 0.014 0.028" pos="-0.005 0 0.028" mass="0.05" friction="2 0.02 0.002" condim="4" rgba="0.85 0.85 0.88 1"/>
      </body>
      <body name="finger_r" pos="0 0 0" gravcomp="1">
        <joint name="finger_r" type="slide" axis="1 0 0" range="0 {FINGER_OPEN}" damping="3"/>
        <geom name="finger_r" type="box" size="0.005 0.014 0.028" pos="0.005 0 0.028" mass="0.05" friction="2 0.02 0.002" condim="4" rgba="0.85 0.85 0.88 1"/>
      </body>
    </body>
    {objects}
    {zones}
    {_bowl_xml()}
    <body name="cabinet" pos="0 0.22 0">
      <geom type="box" size="0.09 0.06 0.003" pos="0 0 0.003" rgba="0.35 0.25 0.2 1"/>
      <geom type="box" size="0.09 0.06 0.003" pos="0 0 0.077" rgba="0.35 0.25 0.2 1"/>
      <geom type="box" size="0.003 0.06 0.04" pos="-0.087 0 0.04" rgba="0.35 0.25 0.2 1"/>
      <geom type="box" size="0.003 0.06 0.04" pos="0.087 0 0.04" rgba="0.35 0.25 0.2 1"/>
      <geom type="box" size="0.09 0.003 0.04" pos="0 0.057 0.04" rgba="0.35 0.25 0.2 1"/>
      <body name="drawer" pos="0 0 0">
        <joint name="drawer" type="slide" axis="0 -1 0" range="0 {DRAWER_TRAVEL}" damping="4"/>
        <geom type="box" size="0.08 0.003 0.033" pos="0 -0.057 0.04" rgba="0.75 0.6 0.4 1"/>
        <geom type="box" size="0.08 0.05 0.002" pos="0 -0.005 0.01" mass="0.1" rgba="0.6 0.45 0.3 1"/>
        <geom type="box" size="0.002 0.05 0.02" pos="-0.078 -0.005 0.03" rgba="0.6 0.45 0.3 1"/>
        <geom type="box" size="0.002 0.05 0.02" pos="0.078 -0.005 0.03" rgba="0.6 0.45 0.3 1"/>
        <geom type="box" size="0.004 0.012 0.004" pos="0 -0.072 0.05" rgba="0.2 0.2 0.2 1"/>
        <geom name="handle" type="box" size="0.007 0.007 0.025" pos="0 -0.087 0.05" rgba="0.1 0.1 0.1 1"/>
      </body>
    </body>
    <body name="button_base" pos="0.18 0.1 0">
      <geom type="box" size="0.035 0.035 0.006" pos="0 0 0.006" rgba="0.25 0.25 0.28 1"/>
      <body name="button" pos="0 0 0.012">
        <joint name="button" type="slide" axis="0 0 -1" range="0 {BUTTON_TRAVEL}" stiffness="300" damping="3"/>
        <geom name="button" type="cylinder" size="{BUTTON_RADIUS} 0.008" pos="0 0 0.008" mass="0.02" rgba="0.9 0.1 0.1 1"/>
      </body>
    </body>
  </worldbody>
  <contact>
    <exclude body1="button_base" body2="button"/>
  </contact>
  <actuator>
    <position name="ee_x" joint="ee_x" kp="5000" forcerange="-40 40" ctrlrange="{lo[0]} {lo[1]}"/>
    <position name="ee_y" joint="ee_y" kp="5000" forcerange="-40 40" ctrlrange="{EE_RANGE[1][0]} {EE_RANGE[1][1]}"/>
    <position name="ee_z" joint="ee_z" kp="5000" forcerange="-40 40" ctrlrange="{hi[0] - 0.15} {hi[1] - 0.15}"/>
    <position name="finger_l" joint="finger_l" kp="300" forcerange="-20 20" ctrlrange="0 {FINGER_OPEN}"/>
    <position name="finger_r" joint="finger_r" kp="300" forcerange="-20 20" ctrlrange="0 {FINGER_OPEN}"/>
  </actuator>
</mujoco>
"""
