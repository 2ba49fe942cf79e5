"""Task families of the tabletop suite: language templates, splits, scene sampling, success.

Compositional generalization is measured with the ``unseen`` split: its target objects are
colour-shape pairs that never appear in ``train`` and its instructions use paraphrases that
never appear in ``train``. ``unseen_object`` and ``unseen_paraphrase`` isolate the two gaps.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

from vlaforge.envs.tabletop.scene import (
    BOWL_RADIUS,
    COLORS,
    COPIES_PER_SHAPE,
    OBJECT_HALF,
    SHAPES,
    ZONE_RADIUS,
)

SPLITS = ("train", "unseen", "unseen_object", "unseen_paraphrase")

# Colour-shape pairs held out of the training split.
HELD_OUT_PAIRS = frozenset({("purple", "ball"), ("orange", "cylinder"), ("green", "cube"), ("yellow", "ball")})

# Per family: training paraphrases, then held-out paraphrases (used only by unseen splits).
TEMPLATES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "reach": (
        ("reach the {obj}", "move the gripper to the {obj}", "go to the {obj}"),
        ("put your hand over the {obj}",),
    ),
    "push": (
        ("push the {obj} to the {zone} zone", "slide the {obj} onto the {zone} zone", "shove the {obj} into the {zone} area"),
        ("nudge the {obj} over to the {zone} region",),
    ),
    "pick_place": (
        ("pick up the {obj} and place it on the {zone} zone", "put the {obj} on the {zone} zone", "move the {obj} to the {zone} area"),
        ("carry the {obj} over to the {zone} region",),
    ),
    "stack": (
        ("stack the {obj} on the {base}", "put the {obj} on top of the {base}", "place the {obj} onto the {base}"),
        ("set the {obj} above the {base}",),
    ),
    "put_in_bowl": (
        ("put the {obj} in the bowl", "place the {obj} into the bowl", "drop the {obj} in the bowl"),
        ("move the {obj} inside the bowl",),
    ),
    "open_drawer": (
        ("open the drawer", "pull the drawer open", "slide the drawer out"),
        ("pull out the drawer",),
    ),
    "press_button": (
        ("press the button", "push the button down", "hit the button"),
        ("push down on the button",),
    ),
}
FAMILIES = tuple(TEMPLATES)
PICK_FAMILIES = ("pick_place", "stack", "put_in_bowl")

# Where things may be placed (m): the front of the table; the drawer cabinet fills the back.
AREA_X = (-0.23, 0.23)
AREA_Y = (-0.22, 0.06)
# Footprint radius of each kind of item for non-overlapping placement. An object's footprint
# leaves room for the open fingers around it, except against flat zones, which fingers pass over.
RADIUS = {"object": 0.045, "zone": ZONE_RADIUS, "bowl": BOWL_RADIUS + 0.01, "button": 0.04}
FLAT_OBJECT_RADIUS = 0.025


def _clearance(kind_a: str, kind_b: str) -> float:
    ra = FLAT_OBJECT_RADIUS if kind_a == "object" and kind_b == "zone" else RADIUS[kind_a]
    rb = FLAT_OBJECT_RADIUS if kind_b == "object" and kind_a == "zone" else RADIUS[kind_b]
    return ra + rb + 0.01


@dataclass
class Episode:
    """Everything a reset decides: the layout, the target and the instruction."""

    family: str
    instruction: str
    objects: list[tuple[str, str, str]]  # (body name, colour, shape)
    object_xy: list[tuple[float, float]]
    zones: list[str]  # zone colours, zone i -> zones[i]
    zone_xy: list[tuple[float, float]]
    bowl_xy: tuple[float, float]
    button_xy: tuple[float, float]
    drawer_x: float
    target: int = 0  # index into objects
    goal: int = -1  # zone index (push, pick_place) or object index (stack)
    meta: dict = field(default_factory=dict)

    @property
    def target_body(self) -> str:
        return self.objects[self.target][0]


def describe(color: str, shape: str) -> str:
    return f"{color} {shape}"


def _pairs(split: str) -> list[tuple[str, str]]:
    all_pairs = [(c, s) for c in COLORS for s in SHAPES]
    if split in ("unseen", "unseen_object"):
        return sorted(HELD_OUT_PAIRS)
    return [p for p in all_pairs if p not in HELD_OUT_PAIRS]


def _templates(family: str, split: str) -> tuple[str, ...]:
    train, held = TEMPLATES[family]
    return held if split in ("unseen", "unseen_paraphrase") else train


def _place(
    rng: np.random.Generator, kinds: list[str], fixed: list[tuple[float, float, str]]
) -> list[tuple[float, float]]:
    """Rejection-sample non-overlapping centres for items of ``kinds`` inside the area."""
    for _ in range(200):
        placed = list(fixed)
        out = []
        for kind in kinds:
            # The bowl's walls stay clear of the opening drawer; smaller items may overhang a little.
            margin = RADIUS[kind] if kind == "bowl" else min(RADIUS[kind], 0.03)
            for _ in range(100):
                x = rng.uniform(AREA_X[0] + margin, AREA_X[1] - margin)
                y = rng.uniform(AREA_Y[0] + margin, AREA_Y[1] - margin)
                if all(math.hypot(x - px, y - py) > _clearance(kind, pk) for px, py, pk in placed):
                    placed.append((x, y, kind))
                    out.append((x, y))
                    break
            else:
                break
        if len(out) == len(kinds):
            return out
    raise RuntimeError("could not place the scene items; the placement area is too crowded")


def _segment_clear(a: tuple[float, float], b: tuple[float, float], others: list[tuple[float, float, float]]) -> bool:
    """True when no item of ``others`` (x, y, r) lies within 0.035 m of the segment a-b."""
    ax, ay = a
    dx, dy = b[0] - ax, b[1] - ay
    length2 = dx * dx + dy * dy + 1e-12
    for x, y, r in others:
        t = min(1.0, max(0.0, ((x - ax) * dx + (y - ay) * dy) / length2))
        if math.hypot(ax + t * dx - x, ay + t * dy - y) < r + 0.035:
            return False
    return True


def sample_episode(family: str, split: str, rng: np.random.Generator, num_objects: int = 3) -> Episode:
    """Sample a scene and an instruction for ``family`` in ``split``."""
    if family not in TEMPLATES:
        raise KeyError(f"unknown tabletop task {family!r}; known tasks: {', '.join(FAMILIES)}")
    if split not in SPLITS:
        raise KeyError(f"unknown split {split!r}; known splits: {', '.join(SPLITS)}")
    for _ in range(100):
        episode = _try_sample(family, split, rng, num_objects)
        if episode is not None:
            return episode
    raise RuntimeError(f"could not sample a valid {family} scene")


def _try_sample(family: str, split: str, rng: np.random.Generator, num_objects: int) -> Episode | None:
    target_pairs = _pairs(split)
    train_pairs = _pairs("train")
    target_color, target_shape = target_pairs[rng.integers(len(target_pairs))]
    chosen = [(target_color, target_shape)]
    # Distractors and the stacking base come from training pairs with colours unlike the target's.
    while len(chosen) < num_objects:
        c, s = train_pairs[rng.integers(len(train_pairs))]
        if c not in {cc for cc, _ in chosen}:
            chosen.append((c, s))
    if family == "stack" and chosen[1][1] == "ball":  # nothing stays on a ball
        return None
    used: dict[str, int] = {}
    objects = []
    for c, s in chosen:
        k = used.get(s, 0)
        used[s] = k + 1
        if k >= COPIES_PER_SHAPE:
            return None
        objects.append((f"{s}{k}", c, s))
    free_colors = [c for c in COLORS if c not in {cc for cc, _ in chosen}]
    zone_colors = list(rng.choice(free_colors, size=2, replace=False))
    drawer_x = float(rng.uniform(-0.08, 0.08))
    # The button sits in the back corner the cabinet leaves free, behind the placement area.
    side = -1.0 if drawer_x > 0 else 1.0
    button_xy = (side * float(rng.uniform(0.19, 0.21)), float(rng.uniform(0.1, 0.15)))
    fixed = [(button_xy[0], button_xy[1], "button")]
    xy = _place(rng, ["object"] * num_objects + ["zone"] * 2 + ["bowl"], fixed)
    object_xy = xy[:num_objects]
    zone_xy = xy[num_objects : num_objects + 2]
    bowl_xy = xy[-1]
    goal = -1
    if family in ("push", "pick_place"):
        goal = int(rng.integers(2))
    elif family == "stack":
        goal = 1
    if family == "push":
        if target_shape == "ball":  # balls roll away from a pushing gripper; push blocks only
            return None
        others = [(x, y, RADIUS["object"]) for i, (x, y) in enumerate(object_xy) if i != 0]
        others.append((bowl_xy[0], bowl_xy[1], RADIUS["bowl"]))
        # Clear from where the gripper lowers behind the object all the way to the zone.
        (ox, oy), (zx, zy) = object_xy[0], zone_xy[goal]
        norm = math.hypot(zx - ox, zy - oy) + 1e-9
        start = (ox - (zx - ox) / norm * 0.05, oy - (zy - oy) / norm * 0.05)
        if not _segment_clear(start, zone_xy[goal], others):
            return None
    templates = _templates(family, split)
    template = templates[rng.integers(len(templates))]
    zone_name = zone_colors[goal] if family in ("push", "pick_place") else ""
    base = describe(*chosen[1]) if family == "stack" else ""
    instruction = template.format(obj=describe(target_color, target_shape), zone=zone_name, base=base)
    return Episode(
        family=family,
        instruction=instruction,
        objects=objects,
        object_xy=[(float(x), float(y)) for x, y in object_xy],
        zones=[str(c) for c in zone_colors],
        zone_xy=[(float(x), float(y)) for x, y in zone_xy],
        bowl_xy=(float(bowl_xy[0]), float(bowl_xy[1])),
        button_xy=button_xy,
        drawer_x=drawer_x,
        target=0,
        goal=goal,
    )


def target_and_goal(ep: Episode, s: dict) -> np.ndarray:
    """World positions (2, 3) of what the gripper must reach and where it must go, from a
    simulator's ``state()`` (the drawer handle and the button top stand for both)."""
    obj = s["objects"][ep.target_body]
    if ep.family in ("push", "pick_place"):
        goal = np.array([*ep.zone_xy[ep.goal], 0.0])
    elif ep.family == "stack":
        goal = s["objects"][ep.objects[ep.goal][0]]
    elif ep.family == "put_in_bowl":
        goal = np.array([*ep.bowl_xy, 0.0])
    elif ep.family == "open_drawer":
        obj = goal = s["handle"]
    elif ep.family == "press_button":
        obj = goal = s["button_top"]
    else:
        goal = obj
    return np.stack([obj, goal])


def success(episode: Episode, s: dict) -> bool:
    """Whether the task is done, from the simulator state summary ``s`` (see TabletopEnv.state)."""
    f = episode.family
    obj = s["objects"][episode.target_body]
    if f == "reach":
        ee = s["ee"]
        return math.hypot(ee[0] - obj[0], ee[1] - obj[1]) < 0.02 and ee[2] < obj[2] + OBJECT_HALF + 0.04
    if f in ("push", "pick_place"):
        zx, zy = episode.zone_xy[episode.goal]
        on_table = obj[2] < OBJECT_HALF + 0.01
        return math.hypot(obj[0] - zx, obj[1] - zy) < ZONE_RADIUS - 0.01 and on_table
    if f == "stack":
        base = s["objects"][episode.objects[episode.goal][0]]
        return (
            math.hypot(obj[0] - base[0], obj[1] - base[1]) < 0.02
            and abs(obj[2] - base[2] - 2 * OBJECT_HALF) < 0.012
            and s["gripper"] > 0.6
        )
    if f == "put_in_bowl":
        bx, by = episode.bowl_xy
        return math.hypot(obj[0] - bx, obj[1] - by) < BOWL_RADIUS - 0.01 and obj[2] < OBJECT_HALF + 0.02
    if f == "open_drawer":
        return s["drawer"] > 0.07
    if f == "press_button":
        return s["button"] > 0.007
    raise KeyError(f)


# Families a long-horizon chain may use: each is defined on any scene layout. Push needs a clear
# path that a layout drawn for another task may not give, stack a non-ball base: neither chains.
CHAIN_FAMILIES = ("reach", "pick_place", "put_in_bowl", "open_drawer", "press_button")


def chain_subtask(base: Episode, family: str, split: str, rng: np.random.Generator) -> Episode:
    """The next instruction of a long-horizon chain (CALVIN-style) on ``base``'s scene: the same
    layout, a new family, target object, zone and wording. Scenes keep their held-out
    colour-shape pair at object 0 (unseen splits), so every object may be a target."""
    if family not in CHAIN_FAMILIES:
        raise KeyError(f"task {family!r} cannot be chained; chainable: {', '.join(CHAIN_FAMILIES)}")
    target = int(rng.integers(len(base.objects)))
    goal = int(rng.integers(len(base.zones))) if family == "pick_place" else -1
    _, color, shape = base.objects[target]
    templates = _templates(family, split)
    instruction = templates[rng.integers(len(templates))].format(
        obj=describe(color, shape), zone=base.zones[goal] if goal >= 0 else "", base="")
    return dataclasses.replace(base, family=family, instruction=instruction, target=target, goal=goal, meta={})


def achieved(episode: Episode, s: dict) -> list[str]:
    """Instructions (first training wording) of every task that holds in state ``s`` of this
    scene, manipulation before reaching: what an episode actually did, for hindsight relabelling."""
    found = []
    for family in ("open_drawer", "press_button", "put_in_bowl", "pick_place", "stack", "reach"):
        for target, (_, color, shape) in enumerate(episode.objects):
            goals = {"pick_place": range(len(episode.zones)), "stack": [g for g in range(len(episode.objects)) if g != target]}
            for goal in goals.get(family, [-1]):
                if family == "stack" and episode.objects[goal][2] == "ball":
                    continue
                base = describe(*episode.objects[goal][1:]) if family == "stack" else ""
                zone = episode.zones[goal] if family == "pick_place" else ""
                text = TEMPLATES[family][0][0].format(obj=describe(color, shape), zone=zone, base=base)
                candidate = dataclasses.replace(episode, family=family, target=target, goal=goal, instruction=text)
                if text not in found and success(candidate, s):
                    found.append(text)
            if family in ("open_drawer", "press_button"):
                break  # one drawer, one button: the target object does not matter
    return found
