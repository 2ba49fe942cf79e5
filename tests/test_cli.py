"""End-to-end smoke test of the CLI on a tiny config: collect -> train -> eval."""

import json

from helpers import TINY_POLICY

from vlaforge.cli import main
from vlaforge.data.dataset import LeRobotDataset
from vlaforge.seeds import EVAL_SEEDS


def test_cli_end_to_end(tmp_path, capsys):
    data, run = tmp_path / "data", tmp_path / "run"
    assert main(["collect", "--env.tasks=[reach,press_button]", "--episodes_per_task=2", "--workers=1",
                 f"--output={data}"]) == 0
    assert main(["train", f"--dataset={data}", f"--output_dir={run}", "--steps=4", "--batch_size=4",
                 "--tracking=none", *TINY_POLICY]) == 0
    assert main(["eval", f"--policy={run}/policy", "--split=unseen", "--episodes=2", "--workers=2",
                 "--max_steps=12", "--videos_per_task=1"]) == 0
    out = run / "eval/unseen"
    results = json.loads((out / "results.json").read_text())
    for key in ("suite", "split", "episodes", "successes", "success_rate", "ci95", "per_task", "mean_episode_length",
                "wall_seconds", "policy", "seed", "efficiency"):
        assert key in results
    detail = results["episodes_detail"][0]
    assert detail["path_length"] > 0 and detail["energy"] > 0 and detail["sim_seconds"] == detail["length"] / 20
    assert results["episodes"] == 4 and set(results["per_task"]) == {"reach", "press_button"}
    assert all(d["length"] <= 12 for d in results["episodes_detail"])
    assert "<img" in (out / "report.html").read_text()
    assert len(list((out / "videos").glob("*.gif"))) == 2
    assert (data / "collect_config.yaml").is_file() and (run / "config.yaml").is_file()
    trained = {e["vlaforge/seed"] for e in LeRobotDataset(data).episodes}
    assert len(trained) == 4 and max(trained) < EVAL_SEEDS <= min(d["seed"] for d in results["episodes_detail"])


def test_cli_errors_are_clear(tmp_path, capsys):
    assert main(["train", "--policy.widht=3"]) == 2
    assert "unknown config key 'policy.widht'" in capsys.readouterr().err
    assert main(["collect", "--env.tasks=[juggle]", f"--output={tmp_path / 'd'}"]) == 2
    assert "unknown task 'juggle'" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()
    assert main(["collect", f"--seed={EVAL_SEEDS - 10}", f"--output={tmp_path / 'd'}"]) == 2
    assert "below the evaluation seeds" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()
    for bad, message in [("--workers=-1", "workers must be >= 0"), ("--noise=-0.1", "noise must be a finite number"),
                         ("--noise=nan", "noise must be a finite number")]:
        assert main(["collect", bad, f"--output={tmp_path / 'd'}"]) == 2
        assert message in capsys.readouterr().err
        assert not (tmp_path / "d").exists()
    assert main(["frobnicate"]) == 2
    assert main(["eval", f"--policy={tmp_path}"]) == 2
    assert "lacks config.json" in capsys.readouterr().err


def test_list_names_every_registered_part(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "heads (--policy.head): dit, flow, regression, tokenized" in out
    assert "backbones (--policy.backbone): mamba, transformer" in out
    assert "ffn (--policy.ffn): mlp, moe" in out
    assert "attention (--policy.attention): auto, flash, mem_efficient, math, composed" in out
    assert "adamw" in out and "kfac" in out


def test_policy_help_names_every_choice():
    """`--help` is where a user reads the choices: a registered head, backbone, feed-forward,
    attention kernel or text encoder missing from its option's help is a choice nobody finds."""
    import dataclasses

    import vlaforge.models.policy  # noqa: F401  (registers the parts)
    from vlaforge.models.config import PolicyConfig
    from vlaforge.models.transformer import ATTENTION_BACKENDS
    from vlaforge.registry import BACKBONES, FFNS, HEADS, TEXT_ENCODERS

    helps = {f.name: f.metadata["help"] for f in dataclasses.fields(PolicyConfig)}
    for name, choices in (("head", HEADS.names()), ("backbone", BACKBONES.names()), ("ffn", FFNS.names()),
                          ("attention", ATTENTION_BACKENDS), ("text_encoder", TEXT_ENCODERS.names())):
        listed = {c.strip() for c in helps[name].split(":", 1)[1].split("|")}
        assert listed == set(choices), (name, listed, choices)
