"""Domain randomization: each randomizer changes what it claims and nothing else, is reproducible
from the reset seed, stays in its ranges; latency is exact; bad ranges fail clearly."""

import dataclasses
import importlib.util
import json

import numpy as np
import pytest
from helpers import TINY_POLICY

from vlaforge.cli import main
from vlaforge.config import ConfigError
from vlaforge.data.dataset import LeRobotDataset
from vlaforge.envs.config import DomainConfig, PhysicsRandomization, SensorRandomization, VisualRandomization
from vlaforge.envs.randomization import is_source, parse_perturb, perturbation, randomize
from vlaforge.envs.randomization.presets import TRAIN_PHYSICS, TRAIN_VISUAL
from vlaforge.envs.randomization.sensor import gaussian_blur, shift_image
from vlaforge.envs.tabletop.env import TabletopEnv


def rollout(env, seed, steps=15):
    """Images, proprio and true simulator state along a fixed random action sequence."""
    obs, info = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    images, states, qpos = [obs["image"]], [obs["state"]], [env.unwrapped.data.qpos.copy()]
    for _ in range(steps):
        obs, *_ = env.step(rng.uniform(-1, 1, 4).astype(np.float32))
        images.append(obs["image"])
        states.append(obs["state"])
        qpos.append(env.unwrapped.data.qpos.copy())
    return np.stack(images), np.stack(states), np.stack(qpos), info


def test_nominal_domain_is_the_plain_env():
    env = TabletopEnv("reach")
    assert randomize(env, DomainConfig()) is env
    assert is_source(DomainConfig()) and not is_source(DomainConfig(preset="dr-visual"))
    assert is_source(perturbation("lighting", 0.0)) and not is_source(perturbation("lighting", 0.5))


def test_visual_randomization_changes_images_not_physics():
    nominal = rollout(TabletopEnv("pick_place"), seed=3)
    visual = rollout(randomize(TabletopEnv("pick_place"), DomainConfig(preset="dr-visual")), seed=3)
    assert not np.array_equal(nominal[0][0], visual[0][0])
    np.testing.assert_array_equal(nominal[1], visual[1])
    np.testing.assert_array_equal(nominal[2], visual[2])
    assert set(visual[3]["domain"]) == {"visual"}


def test_physics_randomization_changes_dynamics_not_rendering():
    cfg = DomainConfig(physics=PhysicsRandomization(friction=[0.5, 0.6], mass=[1.5, 2.0], damping=[1.4, 1.5],
                                                    actuator_gain=[0.5, 0.6]))
    nominal = rollout(TabletopEnv("pick_place"), seed=4)
    env = randomize(TabletopEnv("pick_place"), cfg)
    physics = rollout(env, seed=4)
    np.testing.assert_array_equal(nominal[0][0], physics[0][0])  # same scene, same picture
    np.testing.assert_array_equal(nominal[2][0], physics[2][0])
    assert np.abs(nominal[2][-1] - physics[2][-1]).max() > 1e-3  # a weaker servo moves differently
    m, p = env.unwrapped.model, physics[3]["domain"]["physics"]
    assert 0.5 <= p["friction"] <= 0.6 and 1.5 <= p["mass"] <= 2.0 and 0.5 <= p["actuator_gain"] <= 0.6
    nominal_model = TabletopEnv("pick_place").model
    np.testing.assert_allclose(m.geom_friction, nominal_model.geom_friction * p["friction"])
    np.testing.assert_allclose(m.body_mass, np.r_[0.0, nominal_model.body_mass[1:] * p["mass"]])
    np.testing.assert_allclose(m.dof_damping, nominal_model.dof_damping * p["damping"])
    reference = TabletopEnv("pick_place")
    reference.reset(seed=4)
    np.testing.assert_array_equal(m.geom_rgba, reference.model.geom_rgba)
    np.testing.assert_array_equal(m.cam_pos, nominal_model.cam_pos)
    np.testing.assert_array_equal(m.light_active, nominal_model.light_active)


def test_draws_are_reproducible_from_the_seed_in_range_and_never_accumulate():
    domain = DomainConfig(preset="dr-all")
    a, b = randomize(TabletopEnv("stack"), domain), randomize(TabletopEnv("stack"), domain)
    ra, rb = rollout(a, seed=11, steps=5), rollout(b, seed=11, steps=5)
    for x, y in zip(ra[:3], rb[:3]):
        np.testing.assert_array_equal(x, y)
    assert json.dumps(ra[3]["domain"]) == json.dumps(rb[3]["domain"])
    model = a.unwrapped.model
    first = model.geom_friction.copy(), model.cam_pos.copy()
    draws = []
    for seed in range(12):
        _, info = a.reset(seed=seed)
        draws.append(info["domain"])
    a.reset(seed=11)
    np.testing.assert_array_equal(model.geom_friction, first[0])  # restored, then re-drawn: no drift
    np.testing.assert_array_equal(model.cam_pos, first[1])
    assert len({json.dumps(d) for d in draws}) == 12
    for d in draws:
        for key in ("friction", "mass", "damping", "actuator_gain"):
            lo, hi = getattr(TRAIN_PHYSICS, key)
            assert lo <= d["physics"][key] <= hi
        v = d["visual"]
        assert TRAIN_VISUAL.light_intensity[0] <= v["light_intensity"] <= TRAIN_VISUAL.light_intensity[1]
        assert np.abs(v["camera_position"]).max() <= TRAIN_VISUAL.camera_position[1]
        assert np.abs(v["object_color"]).max() <= TRAIN_VISUAL.object_color[1]
        assert d["sensor"]["latency"] in (0, 1)
    nominal_cam = TabletopEnv("stack").model.cam_pos
    assert np.abs(model.cam_pos - nominal_cam).max() <= TRAIN_VISUAL.camera_position[1] + 1e-12


def test_visual_factors_each_touch_their_own_fields():
    nominal = TabletopEnv("reach")
    nominal.reset(seed=0)
    n = nominal.model
    env = randomize(TabletopEnv("reach"), DomainConfig(visual=VisualRandomization(camera_fov=[5.0, 5.0])))
    env.reset(seed=0)
    m = env.unwrapped.model
    np.testing.assert_allclose(m.cam_fovy, n.cam_fovy + 5.0)
    np.testing.assert_array_equal(m.geom_rgba, n.geom_rgba)
    np.testing.assert_array_equal(m.cam_pos, n.cam_pos)
    env = randomize(TabletopEnv("reach"), DomainConfig(visual=VisualRandomization(surface_color=[0.2, 0.2], texture=1.0)))
    env.reset(seed=0)
    m, targets = env.unwrapped.model, env.unwrapped.randomization_targets()
    assert m.geom_group[targets["backdrop"]] == 0 and n.geom_group[targets["backdrop"]] == 3
    table = m.geom("table").id
    np.testing.assert_allclose(m.geom_rgba[table][:3], np.clip(n.geom_rgba[table][:3] + 0.2, 0, 1), atol=1e-6)
    assert m.geom_matid[table] in targets["textures"]
    objects = targets["objects"]
    np.testing.assert_array_equal(m.geom_rgba[objects], n.geom_rgba[objects])
    np.testing.assert_array_equal(m.cam_fovy, n.cam_fovy)


def test_action_latency_delays_by_exactly_k_steps():
    k = 2
    env = randomize(TabletopEnv("reach"), DomainConfig(sensor=SensorRandomization(latency=[k, k])))
    plain = TabletopEnv("reach")
    env.reset(seed=5)
    plain.reset(seed=5)
    rng = np.random.default_rng(0)
    commanded = rng.uniform(-1, 1, (10, 4)).astype(np.float32)
    noop = np.array([0, 0, 0, -1], np.float32)
    for t, a in enumerate(commanded):
        obs, *_, info = env.step(a)
        expected = commanded[t - k] if t >= k else noop
        np.testing.assert_array_equal(info["executed_action"], expected)
        ref, *_ = plain.step(expected)
        np.testing.assert_array_equal(obs["state"], ref["state"])


def test_sensor_noise_corrupts_observations_not_the_simulation():
    cfg = DomainConfig(sensor=SensorRandomization(proprio_noise=[0.01, 0.01], image_noise=[8.0, 8.0]))
    env = randomize(TabletopEnv("reach"), cfg)
    obs, _ = env.reset(seed=2)
    plain = TabletopEnv("reach")
    ref, _ = plain.reset(seed=2)
    noise = obs["state"] - ref["state"]
    assert 0.001 < np.abs(noise).max() < 0.06
    diff = obs["image"].astype(float) - ref["image"]
    assert 5.0 < diff.std() < 11.0
    np.testing.assert_array_equal(env.unwrapped.render_views(), ref["image"])
    dropped = randomize(TabletopEnv("reach"), DomainConfig(sensor=SensorRandomization(drop_frames=[0.99, 0.99])))
    first, _ = dropped.reset(seed=0)
    stale = [np.array_equal(dropped.step(np.array([1, 0, 0, -1], np.float32))[0]["image"], first["image"]) for _ in range(5)]
    assert sum(stale) >= 3


def test_image_shift_and_blur():
    img = np.zeros((1, 8, 8, 3), np.uint8)
    img[0, 2, 3] = 200
    shifted = shift_image(img, 2, 1)
    assert shifted[0, 3, 5, 0] == 200 and shifted.shape == img.shape and shifted.sum() == img.sum()
    flat = np.full((1, 8, 8, 3), 77, np.uint8)
    np.testing.assert_array_equal(gaussian_blur(flat, 1.5), flat)
    blurred = gaussian_blur(img, 1.0)
    assert blurred[0, 2, 3, 0] < 200 and blurred[0, 2, 4, 0] > 0


@pytest.mark.parametrize(
    "domain, message",
    [
        (DomainConfig(physics=PhysicsRandomization(friction=[1.3, 0.7])), "domain.physics.friction: lo > hi"),
        (DomainConfig(physics=PhysicsRandomization(mass=[-1.0, 1.0])), "domain.physics.mass"),
        (DomainConfig(visual=VisualRandomization(texture=1.5)), "domain.visual.texture must be a probability"),
        (DomainConfig(visual=VisualRandomization(camera_fov=[1.0])), "domain.visual.camera_fov must be a range"),
        (DomainConfig(sensor=SensorRandomization(drop_frames=[0.0, 1.0])), "domain.sensor.drop_frames"),
        (DomainConfig(sensor=SensorRandomization(image_noise=[0.0, float("nan")])), "must be finite"),
        (DomainConfig(preset="dr-all", sensor=SensorRandomization(latency=[1, 1])), "cannot be combined"),
        (DomainConfig(preset="real-proxy-Z"), "unknown domain 'real-proxy-Z'"),
    ],
)
def test_invalid_domains_fail_clearly(domain, message):
    with pytest.raises((ConfigError, KeyError), match=message.replace("[", r"\[")):
        randomize(TabletopEnv("reach"), domain)


def test_perturbation_specs():
    assert parse_perturb("lighting=0..1") == ("lighting", [0.0, 0.25, 0.5, 0.75, 1.0])
    assert parse_perturb("latency=0.5") == ("latency", [0.5])
    assert perturbation("latency", 1.0).sensor.latency == [4, 4]
    combined = perturbation("all", 1.0)
    assert combined.physics.friction == pytest.approx([0.3, 0.3]) and combined.visual.camera_fov == [10.0, 10.0]
    for bad, message in (("gravity=0..1", "unknown perturbation 'gravity'"), ("blur=2", "severity must be in"),
                         ("blur", "factor=severity"), ("blur=a..b", "must be numbers")):
        with pytest.raises(ConfigError, match=message):
            parse_perturb(bad)


def test_metaworld_randomization():
    pytest.importorskip("metaworld")
    from vlaforge.envs.metaworld.env import MetaWorldEnv

    nominal = rollout(MetaWorldEnv("reach", max_steps=20), seed=1, steps=5)
    visual = rollout(randomize(MetaWorldEnv("reach", max_steps=20), DomainConfig(preset="dr-visual")), seed=1, steps=5)
    assert not np.array_equal(nominal[0][0], visual[0][0])
    np.testing.assert_array_equal(nominal[2], visual[2])
    every = rollout(randomize(MetaWorldEnv("reach", max_steps=20), DomainConfig(preset="real-proxy-A")), seed=1, steps=5)
    assert every[0].shape == nominal[0].shape and every[3]["domain"]["sensor"]["latency"] == 2


def test_collect_and_transfer_end_to_end(tmp_path, capsys):
    data, run = tmp_path / "data", tmp_path / "run"
    assert main(["collect", "--env.tasks=[reach]", "--episodes_per_task=2", "--workers=1", f"--output={data}",
                 "--domain.preset=dr-all"]) == 0
    episodes = LeRobotDataset(data).episodes
    draws = [json.loads(e["vlaforge/domain"]) for e in episodes]
    assert len(draws) == 2 and draws[0] != draws[1] and set(draws[0]) == {"visual", "physics", "sensor"}
    assert main(["train", f"--dataset={data}", f"--output_dir={run}", "--steps=2", "--batch_size=4", "--tracking=none",
                 *TINY_POLICY]) == 0
    bullet = ["tabletop-bullet"] if importlib.util.find_spec("pybullet") else []
    assert main(["transfer", f"--policy={run}/policy", f"--targets=[{','.join(['real-proxy-A', 'real-proxy-C', *bullet])}]",
                 "--episodes=2", "--workers=1"]) == 0
    summary = json.loads((run / "transfer/transfer.json").read_text())
    assert list(summary["domains"]) == ["source", "real-proxy-A", "real-proxy-C", *bullet]
    if bullet:
        other = json.loads((run / "transfer/tabletop-bullet/results.json").read_text())
        assert other["suite"] == "tabletop-bullet" and other["trained_in"] == "tabletop" and other["episodes"] == 2
    target = summary["domains"]["real-proxy-A"]
    assert target["gap"] == pytest.approx(summary["domains"]["source"]["success_rate"] - target["success_rate"])
    assert target["gap_ci95"][0] <= target["gap"] <= target["gap_ci95"][1]
    detail = json.loads((run / "transfer/real-proxy-A/results.json").read_text())
    assert detail["domain"]["name"] == "real-proxy-A" and detail["episodes_detail"][0]["domain"]["sensor"]["latency"] == 2
    source = json.loads((run / "transfer/source/results.json").read_text())
    assert [d["seed"] for d in source["episodes_detail"]] == [d["seed"] for d in detail["episodes_detail"]]
    assert "gap" in (run / "transfer/report.html").read_text()
    assert main(["transfer", f"--policy={run}/policy", "--targets=[mars]"]) == 2
    assert "unknown target 'mars'" in capsys.readouterr().err


def test_robustness_sweep(tmp_path):
    data, run = tmp_path / "data", tmp_path / "run"
    assert main(["collect", "--env.tasks=[reach]", "--episodes_per_task=1", "--workers=1", f"--output={data}"]) == 0
    assert main(["train", f"--dataset={data}", f"--output_dir={run}", "--steps=2", "--batch_size=4", "--tracking=none",
                 *TINY_POLICY]) == 0
    assert main(["eval", f"--policy={run}/policy", "--split=train", "--episodes=1", "--workers=1", "--max_steps=10",
                 "--perturb=[lighting=0..1,latency=0..1]", "--videos_per_task=0"]) == 0
    out = run / "eval/train/robustness"
    res = json.loads((out / "robustness.json").read_text())
    assert [p["severity"] for p in res["curves"]["lighting"]] == [0.0, 0.25, 0.5, 0.75, 1.0]
    nominal_runs = [p for p in out.iterdir() if p.is_dir()]
    assert len(nominal_runs) == 1 + 4 + 4  # severity 0 is evaluated once for both factors
    assert (out / "robustness.png").is_file() and "severity" in (out / "report.html").read_text()
    assert set(res["summary"]) == {"lighting", "latency"} and "worst drop" in (out / "report.html").read_text()
    assert dataclasses.asdict(perturbation("latency", 0.5))["sensor"]["latency"] == [2, 2]


class _ProprioSensitivePolicy:
    """The scripted expert while the proprioception it is given equals the simulator's true state;
    zero actions otherwise. Its success against severity is known: 1 at severity 0 and under
    any factor that leaves proprioception alone, 0 wherever proprio noise is added."""

    def __init__(self, envs: list) -> None:
        from vlaforge.envs.tabletop.experts import Expert

        self.envs, self.make, self.expert = envs, Expert, None

    def reset(self, seed=None) -> None:
        self.expert = None

    def act(self, obs):
        sim = self.envs[-1].unwrapped
        self.expert = self.expert or self.make(sim)
        true = np.array([*sim.ee_pos(), sim.gripper_opening()], np.float32)
        exact = np.array_equal(np.asarray(obs["state"], np.float32), true)
        return np.array([self.expert.act() if exact else np.zeros(4)], np.float32)


def test_robustness_sweep_lowers_success_only_for_the_factor_a_planted_policy_is_sensitive_to(tmp_path, monkeypatch):
    from helpers import train_tiny_policy

    import vlaforge.envs.randomization.wrapper as wrapper
    import vlaforge.eval.rollout as rollout
    from vlaforge.eval.config import EvalConfig
    from vlaforge.eval.robustness import sweep

    policy_dir = train_tiny_policy(tmp_path, episodes_per_task=1, steps=1)  # only its meta is used
    envs, make = [], wrapper.worker_domain_env
    monkeypatch.setattr(wrapper, "worker_domain_env", lambda *a: envs.append(make(*a)) or envs[-1])
    monkeypatch.setattr(rollout, "load_worker_policy", lambda *a: None)
    monkeypatch.setattr(rollout, "worker_policy", lambda: _ProprioSensitivePolicy(envs))
    cfg = EvalConfig(policy=str(policy_dir), tasks=["reach"], episodes=3, workers=1, max_steps=150, videos_per_task=0,
                     perturb=["proprio_noise=0..1", "lighting=0..1"], output_dir=str(tmp_path / "sweep"))
    res = sweep(cfg, show_progress=False)
    assert [p["success_rate"] for p in res["curves"]["proprio_noise"]] == [1.0, 0.0, 0.0, 0.0, 0.0]
    assert [p["success_rate"] for p in res["curves"]["lighting"]] == [1.0] * 5
    sensitive, ignored = res["summary"]["proprio_noise"], res["summary"]["lighting"]
    assert sensitive["worst_drop"] == 1.0 and sensitive["severity_at_half"] == pytest.approx(0.125)
    assert sensitive["mean_success"] == pytest.approx(0.125)  # one trapezoid of 0.25 x (1 + 0) / 2
    assert ignored == {"mean_success": 1.0, "worst_drop": 0.0, "severity_at_half": None}


def test_robustness_summary_of_a_known_curve():
    from vlaforge.eval.robustness import summarize_curve

    pts = [{"severity": s, "success_rate": r} for s, r in ((0.0, 0.8), (0.5, 0.6), (1.0, 0.2))]
    s = summarize_curve(pts)
    assert s["mean_success"] == pytest.approx((0.5 * 0.7 + 0.5 * 0.4) / 1.0)
    assert s["worst_drop"] == pytest.approx(0.6)
    assert s["severity_at_half"] == pytest.approx(0.5 + (0.6 - 0.4) / 0.4 * 0.5)  # 0.4 reached at 0.75
    flat = summarize_curve([{"severity": 0.0, "success_rate": 0.5}, {"severity": 1.0, "success_rate": 0.5}])
    assert flat["severity_at_half"] is None and flat["worst_drop"] == 0
