"""A scripted Push-T expert: sampling-based model-predictive pushing on a copy of the physics.

Push-T ships no expert, and a fixed pushing rule does not reach the benchmark's 95% coverage:
the block must end within a few pixels and degrees of the target. The block in gym-pusht moves
only while it is pushed (every velocity is damped to zero each step), so the state is just the
poses, and one push can be tried on a second copy of the physics before it is made.

Every time its queue of waypoints is empty the expert plans one push: it samples ``candidates``
contact points on the T's outline, a push direction within 0.6 rad of the inward normal and a
push length, simulates each push from its pre-contact point on the copy, and keeps the one that
minimises

    cost(pose after the push) + lambda * (push steps + approach distance / approach step)

where cost is the mean distance (px) between the T's eight outline corners and the target's,
and lambda shrinks as the block nears the target (time matters far away, precision near it).
Near the target (cost < 12 px) it samples twice as many, shorter (<= 15 px) and slower (2.5 px
per step) pushes. The agent then travels to the pre-contact point (around the block, along a
circle about its centroid, when the straight line would touch it) and pushes; the next plan
starts from wherever the block ended. benchmarks/pusht.py measures its success on the
evaluation scenes; tests/test_pusht.py checks a handful of known ones.
"""

from __future__ import annotations

import numpy as np

from vlaforge.envs.pusht.env import ACTION_SCALE, ARENA, GOAL_POSE, PushTEnv, _pusht

AGENT_RADIUS = 15.0
APPROACH_STEP = 40.0  # px per control step while travelling (no contact)
LAMBDA = 0.3  # px of final error one control step is worth, far from the target
# The T's outline in the block's body frame (gym-pusht's add_tee with scale 30): bar, then stem.
OUTLINE = np.array([(-60, 0), (60, 0), (60, 30), (15, 30), (15, 120), (-15, 120), (-15, 30), (-60, 30)], float)


def rotation(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s], [s, c]])


def corners(pose: np.ndarray) -> np.ndarray:
    """(8, 2) world coordinates of the outline's corners for a block pose (x, y, angle)."""
    return OUTLINE @ rotation(pose[2]).T + pose[:2]


GOAL_CORNERS = corners(np.array(GOAL_POSE))


def pose_error(pose: np.ndarray) -> float:
    """Mean distance (px) between the block's outline corners and the target's."""
    return float(np.linalg.norm(corners(pose) - GOAL_CORNERS, axis=1).mean())


def _edges() -> list[tuple[np.ndarray, np.ndarray, float, np.ndarray]]:
    """(start, end, length, outward normal) of every outline edge, body frame."""
    n = len(OUTLINE)
    area = 0.5 * sum(OUTLINE[i, 0] * OUTLINE[(i + 1) % n, 1] - OUTLINE[(i + 1) % n, 0] * OUTLINE[i, 1] for i in range(n))
    out = []
    for i in range(n):
        a, b = OUTLINE[i], OUTLINE[(i + 1) % n]
        t = (b - a) / np.linalg.norm(b - a)
        normal = np.array([t[1], -t[0]]) if area > 0 else np.array([-t[1], t[0]])
        out.append((a, b, float(np.linalg.norm(b - a)), normal))
    return out


EDGES = _edges()
PERIMETER = sum(e[2] for e in EDGES)


class PushTExpert:
    """The suite expert interface: ``reset()`` after the env's reset, ``act()`` -> action (2,)."""

    def __init__(self, env: PushTEnv, candidates: int = 48) -> None:
        self.env, self.candidates = env, candidates
        self.copy = _pusht()(obs_type="state")  # the planning copy of the physics
        self.copy.reset(seed=0)
        self.queue: list[np.ndarray] = []
        self.rng = np.random.default_rng(0)

    def reset(self) -> None:
        self.queue = []
        self.rng = np.random.default_rng(self.env.seed_used)  # the same scene gets the same demonstration

    def act(self) -> np.ndarray:
        agent = self.env.agent_position()
        if not self.queue:
            self.queue = self.plan(agent, self.env.block_pose())
        if not self.queue:  # no push improves on standing still
            return np.zeros(2, np.float32)
        waypoint = self.queue.pop(0)
        return np.clip((waypoint - agent) / ACTION_SCALE, -1.0, 1.0).astype(np.float32)

    def plan(self, agent: np.ndarray, pose: np.ndarray) -> list[np.ndarray]:
        """Waypoints of the best sampled push (approach, then push), or [] if none improves."""
        error = pose_error(pose)
        fine = error < 12.0
        lam = LAMBDA * min(1.0, error / 30.0)
        count, longest, increment = (2 * self.candidates, 15.0, 2.5) if fine else (self.candidates, 120.0, 10.0)
        best, best_score = None, error
        turn = rotation(pose[2])
        for _ in range(count):
            contact, normal = self._contact()
            contact, normal = turn @ contact + pose[:2], turn @ normal
            direction = -(rotation(self.rng.uniform(-0.6, 0.6)) @ normal)
            length = self.rng.uniform(1.0 if fine else 5.0, longest) + 4.0
            start = contact + normal * (AGENT_RADIUS + 4.0)
            if np.any(start < 20.0) or np.any(start > ARENA - 20.0):
                continue
            steps = int(np.ceil(length / increment))
            push = [start + direction * length * (i / steps) for i in range(1, steps + 1)]
            score = self._simulate(start, pose, push) + lam * (steps + np.linalg.norm(start - agent) / APPROACH_STEP)
            if score < best_score:
                best, best_score = (start, push), score
        if best is None:
            return []
        return self._approach(agent, best[0], pose) + best[1]

    def _contact(self) -> tuple[np.ndarray, np.ndarray]:
        """A point drawn uniformly along the outline and its outward normal (body frame)."""
        s = self.rng.uniform(0.0, PERIMETER)
        for a, b, length, normal in EDGES:
            if s <= length:
                return a + (b - a) * (s / length), normal
            s -= length
        return EDGES[-1][1], EDGES[-1][3]

    def _simulate(self, start: np.ndarray, pose: np.ndarray, push: list[np.ndarray]) -> float:
        """The pose error after ``push`` on the copy, from the agent at ``start`` and the block at ``pose``."""
        sim = self.copy
        sim.agent.position, sim.agent.velocity = tuple(start), (0.0, 0.0)
        sim.block.angle = float(pose[2])  # the angle first: pymunk turns a body about its centre of gravity
        sim.block.position = tuple(pose[:2])
        sim.block.velocity, sim.block.angular_velocity = (0.0, 0.0), 0.0
        sim.space.reindex_shapes_for_body(sim.block)
        for waypoint in push:
            for _ in range(int(1 / (sim.dt * sim.control_hz))):  # gym-pusht's PD control step
                position, velocity = np.asarray(sim.agent.position), np.asarray(sim.agent.velocity)
                sim.agent.velocity = tuple(velocity + (sim.k_p * (waypoint - position) - sim.k_v * velocity) * sim.dt)
                sim.space.step(sim.dt)
        b = sim.block
        return pose_error(np.array([b.position[0], b.position[1], b.angle]))

    def _approach(self, agent: np.ndarray, start: np.ndarray, pose: np.ndarray) -> list[np.ndarray]:
        """Waypoints at most APPROACH_STEP apart from the agent to ``start``, around the block
        (on a circle of radius 105 px about its centroid) when the straight line would touch it."""
        from shapely.geometry import LineString, Polygon

        block = Polygon(corners(pose))
        if LineString([agent, start]).distance(block) > AGENT_RADIUS + 2.0:
            via = [start]
        else:
            centre = np.array(block.centroid.coords[0])
            a0, a1 = (np.arctan2(*(p - centre)[::-1]) for p in (agent, start))
            sweep = (a1 - a0 + np.pi) % (2 * np.pi) - np.pi
            radius = 105.0
            k = max(2, int(abs(sweep) * radius / APPROACH_STEP))
            ring = [centre + radius * np.array([np.cos(a0 + sweep * i / k), np.sin(a0 + sweep * i / k)])
                    for i in range(k + 1)]
            via = [centre + max(radius, float(np.linalg.norm(agent - centre))) * (ring[0] - centre) / radius,
                   *ring, start]
        out, current = [], np.asarray(agent, float)
        for point in via:
            n = max(1, int(np.ceil(np.linalg.norm(point - current) / APPROACH_STEP)))
            out += [current + (point - current) * (i / n) for i in range(1, n + 1)]
            current = np.asarray(point, float)
        return out
