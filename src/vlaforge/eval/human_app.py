"""The human-evaluation web app (Flask): ``vlaforge human-eval serve --study=DIR --runs=[...]``.

Raters enter a name, pick a kind of judgement and are shown one unjudged item at a time; the page
posts each judgement as JSON to ``/api/ratings`` (malformed ones are refused with 400 and the
reason). ``/api/summary`` aggregates, ``/video/<item>/<a|b>`` serves only the study's own GIFs.
"""

from __future__ import annotations

import html
import json
import sqlite3
import threading

from flask import Flask, abort, jsonify, request, send_file

from vlaforge.eval.human_study import KINDS, RATER, RatingError, add_rating, next_item, summarize_study

STYLE = ("body{font-family:sans-serif;margin:2em;max-width:900px}button{margin:4px;padding:8px 14px;font-size:15px}"
         "img{width:320px;image-rendering:pixelated;border:1px solid #ccc;margin:4px}")
PROMPTS = {"rate": "Did the robot do what it was told? How well (1 = poor, 5 = excellent)?",
           "pair": "Which robot did the task better?",
           "turing": "Was this robot driven by a human operator or by the policy?"}


def _page(title: str, body: str) -> str:
    return f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{STYLE}</style></head><body>{body}</body></html>"


def create_app(db: sqlite3.Connection) -> Flask:
    app = Flask("vlaforge-human-eval")
    lock = threading.Lock()  # one sqlite connection shared by the server's threads

    @app.get("/")
    def home():
        links = " ".join(f"<button type='submit' name='kind' value='{k}' id='start-{k}'>{k}</button>" for k in KINDS)
        return _page("human evaluation", "<h1>Robot rollout study</h1><form action='/judge' method='get'>"
                     f"<label>Your name <input name='rater' id='rater' required maxlength='64'></label><p>{links}</p></form>")

    @app.get("/judge")
    def judge():
        rater, kind = request.args.get("rater", ""), request.args.get("kind", "")
        if not RATER.match(rater) or kind not in KINDS:
            abort(400, "need a rater name (letters, digits, spaces, . _ -) and a kind: " + ", ".join(KINDS))
        with lock:
            item = next_item(db, rater, kind)
        if item is None:
            return _page("done", f"<p id='done'>Thank you, {html.escape(rater)}: no {kind} items left.</p><a href='/'>back</a>")
        with lock:
            instruction = db.execute("SELECT task FROM items WHERE id = ?", (item["id"],)).fetchone()["task"]
        vids = f"<img id='video-a' src='/video/{item['id']}/a'>" + (f"<img id='video-b' src='/video/{item['id']}/b'>" if kind == "pair" else "")
        if kind == "rate":
            controls = ("<p>Succeeded? <label><input type='radio' name='success' value='1' id='success-yes'>yes</label>"
                        "<label><input type='radio' name='success' value='0' id='success-no'>no</label></p><p>Quality "
                        + "".join(f"<label><input type='radio' name='quality' value='{q}' id='quality-{q}'>{q}</label>" for q in range(1, 6))
                        + "</p><button id='submit' onclick='send()'>submit</button>")
            payload = ("{success: document.querySelector('[name=success]:checked')?.value === '1' ? true : "
                       "(document.querySelector('[name=success]:checked') ? false : null), "
                       "quality: Number(document.querySelector('[name=quality]:checked')?.value)}")
        elif kind == "pair":
            controls = "".join(f"<button id='choice-{c}' onclick=\"send({{choice: '{c}'}})\">{label}</button>"
                               for c, label in (("a", "left better"), ("tie", "same"), ("b", "right better")))
            payload = "{}"
        else:
            controls = "".join(f"<button id='guess-{g}' onclick=\"send({{guess: '{g}'}})\">{g}</button>" for g in ("human", "policy"))
            payload = "{}"
        script = (f"<script>async function send(extra) {{ const body = Object.assign({{rater: {json.dumps(rater)}, "
                  f"item: {item['id']}}}, extra || {payload}); const r = await fetch('/api/ratings', {{method: 'POST', "
                  "headers: {'Content-Type': 'application/json'}, body: JSON.stringify(body)}); if (r.ok) location.reload(); "
                  "else document.getElementById('error').textContent = (await r.json()).error; }</script>")
        return _page("judge", f"<h2>{html.escape(PROMPTS[kind])}</h2><p>Task: <b>{html.escape(instruction)}</b></p>{vids}"
                     f"{controls}<p id='error' style='color:#c00'></p>{script}")

    @app.get("/video/<int:item>/<side>")
    def video(item: int, side: str):
        with lock:
            row = db.execute("SELECT video, video_b FROM items WHERE id = ?", (item,)).fetchone()
        path = None if row is None else {"a": row["video"], "b": row["video_b"]}.get(side)
        if not path:
            abort(404)
        return send_file(path, mimetype="image/gif")

    @app.post("/api/ratings")
    def ratings():
        sub = request.get_json(silent=True)
        try:
            with lock:
                rid = add_rating(db, sub)
        except RatingError as e:
            return jsonify(error=str(e)), 400
        return jsonify(id=rid), 201

    @app.get("/api/summary")
    def summary():
        with lock:
            return jsonify(summarize_study(db))

    return app
