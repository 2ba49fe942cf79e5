"""Quality control: every rule passes clean expert data and catches its planted defect; clean
writes a new dataset without them and leaves the input alone; relabel and paraphrase."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import TINY_POLICY

from vlaforge.cli import main
from vlaforge.data.annotate import paraphrases
from vlaforge.data.collect import EPISODE_COLUMNS
from vlaforge.data.config import DataConfig
from vlaforge.data.dataset import DATA_PATH, DatasetWriter, EpisodeFrames, LeRobotDataset
from vlaforge.data.episodes import load_episodes
from vlaforge.data.manifest import dataset_hash
from vlaforge.data.quality import check_dataset


@pytest.fixture(scope="module")
def expert(tmp_path_factory):
    root = tmp_path_factory.mktemp("qc") / "clean"
    assert main(["collect", "--env.tasks=[reach,press_button,open_drawer]", "--episodes_per_task=3", "--workers=1",
                 f"--output={root}"]) == 0
    return root


def plant(src, dst, defects):
    """Copy ``src`` episode by episode, applying ``defects[i](frames) -> frames`` to episode i,
    and appending the episodes ``defects['extra']`` returns."""
    ds = LeRobotDataset(src)
    eps = load_episodes(ds)
    w = DatasetWriter(dst, ds.features, ds.fps, extra_info={"vlaforge": ds.info["vlaforge"]}, extra_columns=EPISODE_COLUMNS)
    frames = [EpisodeFrames(e.images, e.state, e.action, e.task, e.env_state) for e in eps]
    rows = [{k: v for k, v in e.row.items() if k.startswith("vlaforge/")} for e in eps]
    for i, f in enumerate(frames):
        w.add_episode(defects.get(i, lambda x: x)(f), extra=rows[i])
    for f in defects.get("extra", lambda fr: [])(frames):
        w.add_episode(f, extra={"vlaforge/task": "reach", "vlaforge/seed": -1})
    return dst


def flagged(root, **kw):
    report, _, _ = check_dataset(DataConfig(dataset=str(root), **kw))
    return {name: sorted({f["episode"] for f in r["findings"]}) for name, r in report["rules"].items()}


def test_clean_expert_data_passes_every_rule(expert):
    assert all(v == [] for v in flagged(expert).values())


def _idle(f):  # the arm stands still for 15 frames in the middle
    k = len(f.action) // 2
    rep = lambda a: np.concatenate([a[:k], np.repeat(a[k:k + 1], 15, 0), a[k:]])  # noqa: E731
    return EpisodeFrames(rep(f.images), rep(f.state), rep(f.action), f.task, None if f.env_state is None else rep(f.env_state))


def _jerky(f):  # the translation command chatters between +1 and -1 for 12 frames
    a = f.action.copy()
    a[2:14, 0] = np.where(np.arange(12) % 2, 1.0, -1.0)
    return EpisodeFrames(f.images, f.state, a, f.task, f.env_state)


def _outlier(f):
    a = f.action.copy()
    a[3, 1] = 25.0
    return EpisodeFrames(f.images, f.state, a, f.task, f.env_state)


def _short(f):
    cut = slice(0, 3)
    return EpisodeFrames(f.images[cut], f.state[cut], f.action[cut], f.task, None if f.env_state is None else f.env_state[cut])


def _copies(frames):
    exact = frames[1]
    rng = np.random.default_rng(0)
    f = frames[2]
    noisy = EpisodeFrames(np.clip(f.images.astype(int) + rng.integers(-2, 3, f.images.shape), 0, 255).astype(np.uint8),
                          f.state, f.action + rng.normal(0, 0.002, f.action.shape).astype(np.float32), f.task, f.env_state)
    return [exact, noisy]


@pytest.fixture(scope="module")
def planted(expert, tmp_path_factory):
    root = plant(expert, tmp_path_factory.mktemp("qc") / "planted",
                 {0: _idle, 3: _jerky, 4: _outlier, 6: _short, "extra": _copies})
    # NaN cannot be written through DatasetWriter (it refuses): corrupt episode 7's file as a bug would.
    path = root / DATA_PATH.format(chunk_index=0, file_index=7)
    table = pq.read_table(path)
    action = np.asarray(table["action"].to_pylist(), dtype=np.float32)
    action[5, 2] = np.nan
    table = table.set_column(table.column_names.index("action"), "action",
                             pa.FixedSizeListArray.from_arrays(pa.array(action.ravel()), action.shape[1]))
    pq.write_table(table, path)
    # Episode 8 is recorded as a failed attempt that opened the drawer.
    meta = root / "meta/episodes/chunk-000/file-008.parquet"
    rows = pq.read_table(meta).to_pylist()
    rows[0] |= {"vlaforge/success": False, "vlaforge/achieved": json.dumps(["open the drawer"])}
    pq.write_table(pa.Table.from_pylist(rows), meta)
    return root


def test_each_rule_catches_its_planted_defect(planted):
    found = flagged(planted)
    assert found["idle"] == [0]
    assert found["jerky"] == [3]
    assert found["outlier"] == [4]
    assert found["truncated"] == [6]
    assert found["nan"] == [7]
    assert found["failed"] == [8]
    assert found["duplicate"] == [9, 10]  # the exact copy of 1 and the near copy of 2
    report, _, _ = check_dataset(DataConfig(dataset=str(planted)))
    dup = {f["episode"]: f["detail"] for f in report["rules"]["duplicate"]["findings"]}
    assert "same content as episode 1" in dup[9] and "near-duplicate of episode 2" in dup[10]


def test_check_writes_a_report_and_clean_writes_a_new_dataset(planted, tmp_path, capsys):
    before = dataset_hash(planted)
    assert main(["data", "check", str(planted), f"--output={tmp_path / 'qc'}"]) == 0
    assert "8 of 11 episodes flagged" in capsys.readouterr().out
    report = json.loads((tmp_path / "qc" / "qc.json").read_text())
    assert report["flagged_episodes"] == [0, 3, 4, 6, 7, 8, 9, 10]
    assert (tmp_path / "qc" / "qc.html").read_text().count("<img") == 8
    out = tmp_path / "cleaned"
    assert main(["data", "clean", str(planted), f"--output={out}"]) == 0
    s = json.loads((out / "clean.json").read_text())
    assert s["kept"] == 4 and s["dropped"] == 7 and s["frames_trimmed"] == 15  # 16 identical frames -> 1
    assert all(v == [] for v in flagged(out).values())
    cleaned = LeRobotDataset(out)
    original = LeRobotDataset(planted)
    assert cleaned.episodes[0]["length"] == original.episodes[0]["length"] - 15
    assert dataset_hash(planted) == before  # the input is untouched
    assert (out / "manifest.json").is_file()
    assert main(["data", "clean", str(planted), f"--output={out}"]) == 2  # never overwrites
    assert main(["data", "clean", str(planted), f"--output={planted}"]) == 2
    assert main(["data", "check", str(planted), "--rules=[sparkle]"]) == 2
    assert "unknown quality rule 'sparkle'" in capsys.readouterr().err


def test_relabel_uses_what_the_episode_achieved(planted, tmp_path, capsys):
    out = tmp_path / "relabelled"
    assert main(["data", "relabel", str(planted), f"--output={out}"]) == 2  # the NaN episode cannot be written
    assert "NaN" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "relabelled.tmp").exists()
    finite = tmp_path / "finite"
    assert main(["data", "clean", str(planted), "--drop=[nan]", f"--output={finite}"]) == 0
    assert main(["data", "relabel", str(finite), f"--output={out}"]) == 0
    ds = LeRobotDataset(out)
    assert ds.num_episodes == 10
    e = ds.episodes[7]  # planted episode 8, after the NaN episode 7 was dropped
    assert e["tasks"] == ["open the drawer"] and e["vlaforge/success"] is True
    assert e["vlaforge/relabelled_from"] == LeRobotDataset(planted).episodes[8]["tasks"][0]
    assert "open the drawer" in ds.tasks
    assert flagged(out, rules=["failed"])["failed"] == []
    # One schema in every episode file, the new column null where an episode was not relabelled
    # (lerobot refuses a dataset whose episode files differ in their columns).
    assert len({pq.read_schema(f).remove_metadata() for f in (out / "meta/episodes").rglob("*.parquet")}) == 1
    assert ds.episodes[0]["vlaforge/relabelled_from"] is None


def test_achieved_reads_the_final_state():
    from vlaforge.envs import get_suite
    from vlaforge.envs.tabletop.env import TabletopEnv
    from vlaforge.envs.tabletop.tasks import achieved

    env = TabletopEnv(task="open_drawer")
    env.reset(seed=3)
    assert achieved(env.episode, env.state()) == []
    expert = get_suite("tabletop").make_expert(env)
    for _ in range(env.max_steps):
        *_, info = env.step(expert.act())
        if info["success"]:
            break
    assert info["success"] and "open the drawer" in achieved(env.episode, env.state())


def test_paraphrases_and_training_reads_them(expert, tmp_path):
    p = paraphrases("put the red cube on the blue zone", 5)
    assert len(p) == 5 and len(set(p)) == 5 and all(x != "put the red cube on the blue zone" for x in p)
    assert "place the red cube on the blue zone" in paraphrases("put the red cube on the blue zone", 100)
    assert paraphrases("pick up the ball", 100) and all("pick up" not in x or "the ball" in x for x in paraphrases("pick up the ball", 100))
    assert paraphrases("hello", 3) == []
    import shutil

    data = tmp_path / "data"
    shutil.copytree(expert, data)
    before = dataset_hash(data)
    assert main(["data", "paraphrase", str(data), "--per_instruction=2"]) == 0
    assert dataset_hash(data) != before  # a new version
    table = json.loads((data / "meta/paraphrases.json").read_text())
    tasks = LeRobotDataset(data).tasks
    assert set(table) == {t for t in tasks if paraphrases(t, 2)} and len(table) >= len(tasks) - 1
    assert all(1 <= len(v) <= 2 for v in table.values())
    assert main(["train", f"--dataset={data}", f"--output_dir={tmp_path / 'run'}", "--steps=2", "--batch_size=4",
                 "--tracking=none", *TINY_POLICY]) == 0
    vocab = set(json.loads((tmp_path / "run" / "policy" / "config.json").read_text())["vocab"])
    words = {w for v in table.values() for x in v for w in x.split()}
    assert words <= vocab
