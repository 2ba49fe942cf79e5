"""Scripted LIBERO experts built from the task's BDDL goal and the simulator's object geometry.

Pick-and-place goals (``On(thing, dest)``, ``In(thing, region)``; about 80% of LIBERO's goal
predicates) run one waypoint machine: above the grasp point -> down -> close -> lift -> above
the destination -> down -> open -> up. The grasp point comes from the thing's collision
geometry: hollow things (bowls, mugs) are taken by the rim nearest the robot, with the
fingers straddling the wall; everything else by the middle of its box at the height where the
fingers meet it, the gripper turned so that it closes across the box's narrower side (plates,
lower than a fingertip and wider than the hand, are not held this way: a known failure). Knobs
(``Turnon`` / ``Turnoff``, a stove's) are grasped on their hinge axis and turned with the hand
into the on or off range. Motion is a proportional controller on the end-effector position
(OSC_POSE: an action of 1 asks for 5 cm) and on the gripper's yaw about the world z axis (1 =
0.5 rad). Conjunctions run their parts in order; things bound for the same destination (two
cans into one basket) get equal shares of its longer side. Goals without a script (``Open``,
``Close``, and placing into a drawer or microwave, which needs opening first) raise a ValueError
naming what is missing.
"""

from __future__ import annotations

import numpy as np

from vlaforge.envs.libero.env import LiberoEnv

HOLLOW = ("bowl", "mug", "cup", "ramekin")
SCRIPTED = ("on", "in", "turnon", "turnoff")
TURN_MARGIN = 0.3  # how far past the edge of an on/off range a knob is turned (rad)
POSITION_SCALE, YAW_SCALE = 0.05, 0.5  # metres / radians asked for by an action of 1
GAIN = 1.5
CLEARANCE = 0.10  # above the tallest thing on the way (m)
GRIP_SITE = "gripper0_grip_site"  # the point between the fingertips that OSC_POSE moves


def body_geoms(model, root: int) -> list[int]:
    """Collision geoms of body ``root`` and every body below it (visual meshes' bounding boxes
    can be centimetres looser than the thing)."""
    bodies = {root}
    for b in range(root + 1, model.nbody):
        if model.body_parentid[b] in bodies:
            bodies.add(b)
    return [g for g in range(model.ngeom) if model.geom_bodyid[g] in bodies
            and (model.geom_contype[g] or model.geom_conaffinity[g])]


def world_box(model, data, geoms: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned world bounds (lo, hi), each (3,), of the given geoms' bounding boxes."""
    corners = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], float)
    points = []
    for g in geoms:
        centre, half = model.geom_aabb[g, :3], model.geom_aabb[g, 3:]
        local = centre + corners * half
        points.append(data.geom_xpos[g] + local @ data.geom_xmat[g].reshape(3, 3).T)
    points = np.concatenate(points)
    return points.min(0), points.max(0)


def wrap(angle: float) -> float:
    return (angle + np.pi) % (2 * np.pi) - np.pi


class LiberoExpert:
    """The scripted expert of one LIBERO env (suite expert interface: ``reset()``, ``act()``)."""

    def __init__(self, env: LiberoEnv) -> None:
        self.env = env
        self.goals = [tuple(g) for g in env.domain.parsed_problem["goal_state"]]
        for g in self.goals:
            if g[0] not in SCRIPTED:
                raise ValueError(f"no scripted LIBERO expert for the goal predicate {g[0]!r} yet ({env.task}); "
                                 f"experts exist for {', '.join(SCRIPTED)}")
            if g[0] == "in" and env.domain.object_sites_dict.get(g[2]) is not None \
                    and getattr(env.domain.object_sites_dict[g[2]], "joints", None):
                raise ValueError(f"no scripted LIBERO expert for placing into the articulated region {g[2]!r} yet "
                                 f"({env.task}): it needs opening first, and Open has no script")
        # (kind "move" | "wait", where to (a function: the point is re-read every step), gripper,
        # yaw, a function to call when the waypoint is reached)
        self.plan: list[tuple] = []
        self._geom_cache: dict[int, list[int]] = {}
        self.reset()

    def reset(self) -> None:
        self.plan, self.goal_index, self.hold = [], 0, 0

    def _geoms(self, body: int) -> list[int]:
        """``body_geoms`` of a body, found once: the model's structure never changes, and the
        boxes are read several times per step."""
        if body not in self._geom_cache:
            self._geom_cache[body] = body_geoms(self.env.model, body)
        return self._geom_cache[body]

    def _box(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        env = self.env
        return world_box(env.model, env.data, self._geoms(env.model.body(env.thing(name).root_body).id))

    def _closing_yaw(self) -> float:
        """Yaw of the line between the fingers (the direction the gripper closes along)."""
        d = self.env.data
        axis = d.body("gripper0_leftfinger").xpos - d.body("gripper0_rightfinger").xpos
        return float(np.arctan2(axis[1], axis[0]))

    def _grasp(self, thing: str) -> tuple[np.ndarray, float, np.ndarray]:
        """Where the fingers meet ``thing`` now, the yaw of their closing line, and the thing's
        bounding-box centre."""
        lo, hi = self._box(thing)
        centre, size = (lo + hi) / 2, hi - lo
        if any(h in thing for h in HOLLOW):
            # Rim grasp: the closing line runs radially (along world x), the grasp point sits on
            # the wall nearest the robot's base, which is at -x.
            return np.array([lo[0] + 0.01, centre[1], hi[2] - 0.02]), 0.0, centre
        # Close across the narrower horizontal side of the box, fingers 3 cm below the top (half
        # the height for short things).
        yaw = 0.0 if size[0] <= size[1] else np.pi / 2
        return np.array([centre[0], centre[1], hi[2] - min(0.03, size[2] / 2)]), yaw, centre

    def _destination(self, dest: str) -> tuple[np.ndarray, float]:
        """The destination's centre (xy) and the height its top surface is at."""
        if dest in self.env.domain.object_sites_dict:
            target = self.env.position(dest)
            return target, target[2]
        lo, hi = self._box(dest)
        return (lo + hi) / 2, hi[2]

    def _long_side(self, dest: str) -> np.ndarray:
        """Half the destination's longer horizontal side, as a world vector (3,)."""
        env = self.env
        if dest in env.domain.object_sites_dict:
            site = env.model.site(dest).id
            half, axes = env.model.site_size[site], env.data.site_xmat[site].reshape(3, 3)
            return axes[:, 0] * half[0] if half[0] >= half[1] else axes[:, 1] * half[1]
        lo, hi = self._box(dest)
        half = (hi - lo) / 2
        return np.array([half[0], 0, 0]) if half[0] >= half[1] else np.array([0, half[1], 0])

    def _slot(self, thing: str, dest: str) -> np.ndarray:
        """Where along the destination ``thing`` goes when the goal puts several things there:
        the k-th of n at the centre of the k-th of n equal parts of its longer side (0 for one)."""
        sharing = [g[1] for g in self.goals if g[0] in ("on", "in") and g[2] == dest]
        k, n = sharing.index(thing), len(sharing)
        return self._long_side(dest) * ((2 * k + 1) / n - 1)

    def _make_plan(self, thing: str, dest: str) -> None:
        """Waypoints for one pick-and-place. Until the fingers close they follow the thing (it may
        still be settling); after, the carried offsets are fixed at the moment of the grasp."""
        _, yaw, _ = self._grasp(thing)
        grip: dict = {}

        def take() -> None:
            # Measured in the hand: where the fingers hold the thing relative to its box.
            lo, hi = self._box(thing)
            at = hand()
            grip.update(below=at[2] - lo[2], offset=at[:2] - (lo[:2] + hi[:2]) / 2)
            grip["carry"] = max(place()[2], at[2]) + CLEARANCE

        def place() -> np.ndarray:
            target, top = self._destination(dest)
            target = target + self._slot(thing, dest)
            # The thing's centre goes over the destination: the grasp point keeps its offset.
            return np.array([*(target[:2] + grip["offset"]), top + grip["below"] + 0.02])

        def above(point: np.ndarray, height: float) -> np.ndarray:
            return np.array([point[0], point[1], height])

        def hand() -> np.ndarray:
            return self.env.data.site(GRIP_SITE).xpos

        def over_grasp() -> np.ndarray:
            grasp = self._grasp(thing)[0]
            return above(grasp, grasp[2] + CLEARANCE)

        self.plan = [("move", over_grasp, -1.0, yaw, None),
                     ("move", lambda: self._grasp(thing)[0], -1.0, yaw, None),
                     ("wait", None, 1.0, yaw, take),
                     ("move", lambda: above(hand(), grip["carry"]), 1.0, yaw, None),
                     ("move", lambda: above(place(), grip["carry"]), 1.0, yaw, None),
                     ("move", place, 1.0, yaw, None),
                     ("wait", None, -1.0, yaw, None),
                     ("move", lambda: place() + [0, 0, CLEARANCE], -1.0, yaw, None)]
        self.hold = 0

    def _turn_plan(self, name: str, on: bool) -> None:
        """Turn a knob on a vertical hinge (a stove's) into its on or off range: grasp it on its
        axis across its narrower side, turn the hand about the axis, let go."""
        env = self.env
        thing = env.thing(name)
        joint = env.model.joint(thing.joints[0]).id
        ranges = thing.object_properties["articulation"]["default_turnon_ranges" if on else "default_turnoff_ranges"]
        target = min(ranges) + TURN_MARGIN if on else max(ranges) - TURN_MARGIN
        lo, hi = world_box(env.model, env.data, self._geoms(env.model.jnt_bodyid[joint]))
        size = hi - lo
        yaw = 0.0 if size[0] <= size[1] else np.pi / 2
        anchor = env.data.xanchor[joint]
        grasp = np.array([anchor[0], anchor[1], hi[2] - 0.015])
        # A turn of the hand by delta about world z turns the knob by delta * (axis . z).
        turn = (target - env.data.qpos[env.model.jnt_qposadr[joint]]) * np.sign(env.data.xaxis[joint][2])
        self.plan = [("move", lambda: grasp + [0, 0, CLEARANCE], -1.0, yaw, None),
                     ("move", lambda: grasp, -1.0, yaw, None),
                     ("wait", None, 1.0, yaw, None),
                     ("move", lambda: grasp, 1.0, yaw + turn, None),
                     ("wait", None, -1.0, yaw + turn, None),
                     ("move", lambda: grasp + [0, 0, CLEARANCE], -1.0, yaw + turn, None)]
        self.hold = 0

    def act(self) -> np.ndarray:
        env = self.env
        if not self.plan:
            if self.goal_index >= len(self.goals):
                return np.array([0, 0, 0, 0, 0, 0, -1], np.float32)
            goal = self.goals[self.goal_index]
            self.goal_index += 1
            if goal[0] in ("on", "in"):
                self._make_plan(goal[1], goal[2])
            else:
                self._turn_plan(goal[1], on=goal[0] == "turnon")
        kind, point, gripper, yaw, on_done = self.plan[0]
        action = np.zeros(7)
        action[6] = gripper
        # The closing line is symmetric under a half turn: take the nearer of yaw, yaw + pi.
        yaw_error = wrap(yaw - self._closing_yaw())
        yaw_error = wrap(yaw_error + np.pi) if abs(yaw_error) > np.pi / 2 else yaw_error
        action[5] = np.clip(GAIN * yaw_error / YAW_SCALE, -1, 1)
        self.hold += 1
        if kind == "wait":
            done = self.hold >= 15
        else:
            error = point() - env.data.site(GRIP_SITE).xpos
            action[:3] = np.clip(GAIN * error / POSITION_SCALE, -1, 1)
            done = (np.linalg.norm(error) < 0.01 and abs(yaw_error) < 0.05) or self.hold >= 80
        if done:
            if on_done is not None:
                on_done()
            self.plan.pop(0)
            self.hold = 0
        return action.astype(np.float32)
