"""The human-evaluation app: items from evaluations, ratings stored per rater, aggregation,
malformed submissions refused; and the whole flow in a real headless browser."""

import json
import shutil
import threading

import imageio.v2 as imageio
import numpy as np
import pytest

from vlaforge.eval.human_app import create_app
from vlaforge.eval.human_study import RatingError, add_rating, build_items, connect, next_item, summarize_study


def fake_eval_with_videos(root, outcomes, seed=1_000_000_000):
    (root / "videos").mkdir(parents=True)
    detail = []
    for i, ok in enumerate(outcomes):
        frames = np.full((3, 16, 16, 3), 40 * i % 255, np.uint8)
        imageio.mimsave(root / "videos" / f"reach_{seed + i}.gif", list(frames), duration=0.05)
        detail.append({"task": "reach", "seed": seed + i, "instruction": "reach the red cube", "success": ok, "length": 10})
    (root / "results.json").write_text(json.dumps({"episodes_detail": detail}))
    return str(root)


@pytest.fixture
def study(tmp_path):
    a = fake_eval_with_videos(tmp_path / "a", [True, True, False])
    b = fake_eval_with_videos(tmp_path / "b", [False, True, False])
    human = fake_eval_with_videos(tmp_path / "human", [True, True], seed=5)
    db = connect(tmp_path / "study")
    assert build_items(db, [a, b], human) == 3 + 3 + 3 + 3 + 3 + 2  # rate a, b; turing a, b; pairs; turing human
    assert build_items(db, [a, b], human) == 17  # an existing study keeps its items
    return db, a, b


def items(db, kind):
    return [dict(r) for r in db.execute("SELECT * FROM items WHERE kind = ? ORDER BY id", (kind,))]


def test_ratings_are_stored_per_rater_and_aggregated(study):
    db, a, b = study
    rate = items(db, "rate")
    truth = [json.loads(i["truth"]) for i in rate]
    for rater, flip in (("ann", set()), ("bob", {0})):
        for k, it in enumerate(rate):
            add_rating(db, {"rater": rater, "item": it["id"], "success": truth[k] != (k in flip), "quality": 4})
    for it in items(db, "pair"):
        add_rating(db, {"rater": "ann", "item": it["id"], "choice": "a"})
    for it in items(db, "turing"):
        add_rating(db, {"rater": "ann", "item": it["id"], "guess": "policy"})
    s = summarize_study(db)
    assert s["raters"] == ["ann", "bob"] and s["ratings"] == 12 + 3 + 8
    assert s["runs"][a]["judged_success"]["successes"] == 2 + 1  # ann 2/3, bob flips item 0 (a success) to failure
    assert s["runs"][a]["agreement_with_recorded"] == pytest.approx(5 / 6) and s["runs"][b]["mean_quality"] == 4
    assert s["pairs"][f"{a} vs {b}"]["prefer_a"]["rate"] == 1.0
    assert s["turing"]["successes"] == 6 and s["turing"]["n"] == 8  # every policy video guessed right, humans wrong
    assert s["agreement"]["fleiss"]["items"] == 6 and s["agreement"]["fleiss"]["raters_per_item"] == 2
    assert -1 <= s["agreement"]["cohen"]["ann / bob"]["kappa"] < 1
    assert next_item(db, "ann", "rate") is None and next_item(db, "carl", "rate")["kind"] == "rate"


@pytest.mark.parametrize("sub, message", [
    ({"rater": "", "item": 1, "success": True, "quality": 3}, "rater"),
    ({"rater": "x<script>", "item": 1, "success": True, "quality": 3}, "rater"),
    ({"rater": "ann", "item": "1", "success": True, "quality": 3}, "integer item"),
    ({"rater": "ann", "item": 999, "success": True, "quality": 3}, "unknown item"),
    ({"rater": "ann", "item": 1, "success": "yes", "quality": 3}, "success"),
    ({"rater": "ann", "item": 1, "success": True, "quality": 6}, "quality"),
    ({"rater": "ann", "item": 1, "success": True, "quality": 3, "choice": "a"}, "not choice"),
    ([1, 2], "JSON object"),
])
def test_malformed_submissions_are_refused_and_nothing_stored(study, sub, message):
    db, _, _ = study
    with pytest.raises(RatingError, match=message):
        add_rating(db, sub)
    assert db.execute("SELECT COUNT(*) FROM ratings").fetchone()[0] == 0


def test_http_api(study):
    db, _, _ = study
    client = create_app(db).test_client()
    pair = items(db, "pair")[0]["id"]
    assert client.post("/api/ratings", json={"rater": "ann", "item": pair, "choice": "b"}).status_code == 201
    dup = client.post("/api/ratings", json={"rater": "ann", "item": pair, "choice": "a"})
    assert dup.status_code == 400 and "already rated" in dup.get_json()["error"]
    assert client.post("/api/ratings", data="not json", content_type="application/json").status_code == 400
    assert client.get(f"/video/{pair}/b").data[:3] == b"GIF" and client.get("/video/999/a").status_code == 404
    assert client.get("/judge?rater=ann&kind=nope").status_code == 400
    assert client.get("/api/summary").get_json()["ratings"] == 1


def test_browser_end_to_end(study, tmp_path):
    """Rate, compare and guess in Debian's chromium through Playwright (make test-browser)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian chromium is not installed (make test-browser installs it)")
    from werkzeug.serving import make_server

    db, a, _ = study
    server = make_server("127.0.0.1", 0, create_app(db), threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}"
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            page = browser.new_page()
            page.goto(url)
            page.fill("#rater", "ann")
            page.click("#start-rate")
            page.click("#submit")  # nothing chosen: refused, the reason shown
            page.wait_for_selector("#error:has-text('success')")
            for _ in range(6):
                page.check("#success-yes")
                page.check("#quality-5")
                with page.expect_navigation():  # the page posts the rating, then loads the next item
                    page.click("#submit")
            page.wait_for_selector("#done")
            page.goto(f"{url}/judge?rater=ann&kind=pair")
            with page.expect_navigation():
                page.click("#choice-a")
            page.goto(f"{url}/judge?rater=ann&kind=turing")
            assert page.eval_on_selector("#video-a", "img => img.naturalWidth") == 16  # the GIF really loaded
            with page.expect_navigation():
                page.click("#guess-human")
            browser.close()
    finally:
        server.shutdown()
    s = summarize_study(db)
    assert s["ratings"] == 8 and s["runs"][a]["mean_quality"] == 5 and s["runs"][a]["judged_success"]["rate"] == 1.0
    assert sum(p["a"] for p in s["pairs"].values()) == 1 and s["turing"]["n"] == 1


def test_cli_export_and_bad_study(study, tmp_path, capsys):
    from vlaforge.cli import main

    db, _, _ = study
    add_rating(db, {"rater": "ann", "item": 1, "success": True, "quality": 2})
    assert main(["human-eval", "export", f"--study={tmp_path / 'study'}"]) == 0
    assert json.loads((tmp_path / "study" / "human_eval.json").read_text())["ratings"] == 1
    assert main(["human-eval", "serve", f"--study={tmp_path / 'new'}", f"--runs=[{tmp_path / 'nowhere'}]"]) == 2
    assert "no evaluation results" in capsys.readouterr().err
    assert main(["human-eval", "dance", f"--study={tmp_path / 'new'}"]) == 2
    assert main(["human-eval", "export", f"--study={tmp_path / 'none'}"]) == 2 and not (tmp_path / "none").exists()
