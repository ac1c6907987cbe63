"""`masn serve` over HTTP: every view against the mini demo, the numbers against the Python API
and `masn answer`, and every bad input a message on the page while the server goes on."""

from __future__ import annotations

import asyncio
import html
import json
import re
import threading
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from starlette.testclient import TestClient

import masn
from masn.extract.store.reader import FeatureStore
from masn.pipeline.cli import main
from masn.pipeline.examples.demo_sample import questions_dir
from masn.pipeline.serve.app import MAX_QUESTION, create_app
from masn.pipeline.serve.catalogue import frame_boxes
from masn.pipeline.serve.uploads import MB
from tests.builders import damage_store
from tests.pipeline.serve.conftest import MiniDemo, copy_demo

QUESTION = "what colour are the shapes?"


def answer_json(page: str) -> dict:
    """The answer the Ask page carries as `masn answer`'s JSON."""
    found = re.search(r'<script type="application/json" id="answer-json">(.*?)</script>', page)
    assert found, "the page shows no answer"
    return json.loads(found.group(1))


def message(page: str) -> str:
    """The text of the page's message box."""
    found = re.search(r'id="message" role="alert">(.*?)</div>', page, re.S)
    assert found, "the page shows no message"
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", found.group(1))).split())


def alphas(page: str) -> dict[str, float]:
    pairs = re.findall(r'<tr class="alpha" data-name="(\w+)" data-value="([^"]+)"', page)
    return {name: float(value) for name, value in pairs}


def predictions(run: Path) -> list[dict]:
    lines = (run / "evaluate-test" / "predictions.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


# --------------------------------------------------------------------------- store view


def test_the_store_page_lists_a_page_of_videos_and_the_store_settings(client, demo: MiniDemo):
    page = client.get("/store")
    assert page.status_code == 200
    keys = re.findall(r'class="video-link" href="[^"]*">([^<]+)</a>', page.text)
    with FeatureStore(demo.store) as store:
        assert keys == sorted(store.keys()) and len(keys) == 5
        assert html.escape(store.provenance.created) in page.text
    assert "RANDOM WEIGHTS" in page.text  # the store's features come from random networks
    assert '"frame_size": 64' in html.unescape(page.text)  # the settings record
    found = client.get("/store", params={"q": demo.keys["test"][0][7:12]}).text
    assert re.findall(r'class="video-link" href="[^"]*">([^<]+)</a>', found) == [
        demo.keys["test"][0]
    ]


def test_a_video_page_draws_every_box_with_its_label_at_its_frame_time(client, demo: MiniDemo):
    key = demo.keys["test"][0]
    page = client.get("/store/video", params={"key": key}).text
    with FeatureStore(demo.store) as store:
        record = store.read(key)
    frames = re.findall(r'<figure class="frame" data-index="(\d+)" data-boxes="(\d+)"', page)
    assert len(frames) == len(record.frame_times) >= 2
    rects = re.findall(r'<rect class="box" x="([^"]+)" y="([^"]+)" width="([^"]+)"', page)
    expected = [frame_boxes(record, i) for i in range(len(record.frame_times))]
    assert [int(n) for _, n in frames] == [len(boxes) for boxes in expected]
    drawn = np.array(rects, dtype=float)
    boxes = np.array([[b.x1, b.y1, b.x2 - b.x1] for frame in expected for b in frame])
    np.testing.assert_allclose(drawn, boxes)
    for time in record.frame_times:
        assert f"t = {time:.2f} s" in page
    for name, shape in (("appearance", record.appearance.shape), ("boxes", record.boxes.shape)):
        assert f'<th>{name}</th><td class="shape">({", ".join(map(str, shape))})' in page
    assert '<video id="source"' in page


def test_frames_and_the_video_come_from_the_path_the_store_records(client, demo: MiniDemo):
    key = demo.keys["test"][0]
    image = client.get("/media/frame", params={"key": key, "index": 1})
    assert image.status_code == 200 and image.content[:2] == b"\xff\xd8"  # a JPEG
    video = client.get("/media/video", params={"key": key}, headers={"Range": "bytes=0-99"})
    assert video.status_code == 206
    assert video.content == (demo.root / "videos" / key).read_bytes()[:100]


@pytest.mark.parametrize(
    "path",
    [
        "/store/video?key=../../../../etc/passwd",
        "/media/video?key=%2Fetc%2Fpasswd",
        "/media/video?key=shapes/../../features.h5",
        "/media/frame?key=..&index=0",
        "/static/../../../pyproject.toml",
        "/static/%2e%2e/%2e%2e/pyproject.toml",
        "/results?run=../runs/full",
    ],
)
def test_client_names_are_never_filesystem_paths(client, path: str):
    response = client.get(path)
    assert response.status_code in (400, 404)
    assert b"root:" not in response.content and b"[project]" not in response.content
    assert b"HDF" not in response.content


def test_pages_load_nothing_from_another_host(client, demo: MiniDemo):
    key = demo.keys["test"][0]
    paths = ["/store", f"/store/video?key={key}", f"/ask?run=0&key={key}&question=what", "/ask"]
    paths += ["/results?run=0", "/compare?runs=0&runs=1", "/static/serve.css", "/static/serve.js"]
    for path in paths:
        text = client.get(path).text
        links = re.findall(r'(?:src|href|action)="([^"]*)"', text)
        links += re.findall(r"url\(([^)]*)\)|@import\s+(\S+)", text)
        for link in links:
            link = "".join(link) if isinstance(link, tuple) else link
            assert link.startswith(("/", "#", "data:")), (path, link)
        assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/", text, re.I), path


def test_client_text_is_shown_escaped(client):
    key = "<script>alert(1)</script>"
    for path in ("/store/video", "/store"):
        page = client.get(path, params={"key": key, "q": key})
        assert "<script>alert" not in page.text and "&lt;script&gt;alert(1)" in page.text


def test_an_unknown_key_is_a_message_and_the_server_goes_on(client, demo: MiniDemo):
    page = client.get("/store/video", params={"key": "no/such.mp4"})
    assert page.status_code == 404
    assert "no video 'no/such.mp4'" in message(page.text)
    asked = client.get("/ask", params={"run": 0, "key": "no/such.mp4", "question": QUESTION})
    assert asked.status_code == 404 and "no video 'no/such.mp4'" in message(asked.text)
    assert client.get("/store").status_code == 200


# --------------------------------------------------------------------------- ask view


def test_asking_about_a_stored_video_gives_the_python_apis_numbers(client, demo: MiniDemo):
    key = demo.keys["test"][1]
    page = client.get("/ask", params={"run": 0, "key": key, "question": QUESTION})
    assert page.status_code == 200
    model = masn.load(demo.runs["full"], device="cpu")
    with FeatureStore(demo.store) as store:
        record = store.read(key)
    expected = model.answer(record, QUESTION)
    shown = answer_json(page.text)
    assert shown["answer"] == expected.answer
    assert shown["top"] == [[text, score] for text, score in expected.top]
    assert alphas(page.text) == expected.alpha  # the exact floats
    assert shown["alpha"] == {name: round(value, 6) for name, value in expected.alpha.items()}
    assert shown["frames_used"] == len(expected.chosen)
    assert f'<output id="answer" data-value="{expected.answer}">' in page.text
    # The three attention maps over the 2n question words, with the frames the model read.
    assert len(re.findall(r'<figure class="map" data-name="(\w+)"', page.text)) == 3
    assert page.text.count('<figure class="frame"') == len(expected.chosen)


def test_a_multiple_choice_question_opens_from_results_with_its_candidates(client, demo: MiniDemo):
    results = client.get("/results", params={"run": 2}).text
    link = html.unescape(re.search(r'<a class="open" href="([^"]+)"', results).group(1))
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(link).query)
    first = predictions(demo.runs["choice"])[0]
    rows = [json.loads(line) for line in (questions_dir("multiple_choice") / "test.jsonl").open()]
    expected = next(r for r in rows if r["video"] == first["video"])
    assert query["candidates"] == expected["candidates"] and query["key"] == [first["video"]]
    page = client.get(link)
    shown = answer_json(page.text)
    assert shown["candidates"] == expected["candidates"]
    assert shown["top"][0][0] == expected["candidates"][first["prediction"]]


@pytest.mark.parametrize(
    ("question", "said"),
    [
        ("", "the question is empty"),
        ("   ", "the question is empty"),
        ("why " * 2500, f"the question is 9,999 characters long; ask in at most {MAX_QUESTION}"),
    ],
)
def test_a_bad_question_is_a_message_on_the_ask_page(client, demo: MiniDemo, question, said):
    key = demo.keys["test"][0]
    page = client.post("/ask", data={"run": "0", "key": key, "question": question})
    assert page.status_code == 400
    assert said in message(page.text)
    assert 'id="ask-form"' in page.text  # the form stays, filled in


def test_a_multiple_choice_model_without_candidates_says_what_to_give(client, demo: MiniDemo):
    page = client.post("/ask", data={"run": "2", "key": demo.keys["test"][0], "question": "x y"})
    assert page.status_code == 400 and "pass at least two" in message(page.text)


def test_an_unknown_run_is_a_message(client):
    for path in ("/ask?run=7", "/results?run=x", "/compare?runs=0&runs=9"):
        page = client.get(path)
        assert page.status_code == 404 and "no run" in message(page.text), path


def test_an_upload_is_extracted_and_answered_as_masn_answer_does(
    client, app, demo: MiniDemo, capsys: pytest.CaptureFixture, tmp_path: Path
):
    video = demo.root / "videos" / demo.keys["test"][0]
    with video.open("rb") as file:
        page = client.post(
            "/ask",
            data={"run": "0", "question": QUESTION},
            files={"video": ("../../clip.mp4", file, "video/mp4")},
        )
    assert page.status_code == 200, page.text[-2000:]
    shown = answer_json(page.text)
    assert "RANDOM WEIGHTS" in page.text.split('id="upload-banner"')[1][:200]
    assert page.text.count('src="data:image/jpeg;base64,') == shown["frames_used"]
    capsys.readouterr()
    command = ["answer", str(video), QUESTION, "--checkpoint", str(demo.runs["full"] / "best.pt")]
    command += ["--random-weights", "--device", "cpu", "--out", str(tmp_path / "a.png")]
    command += ["--frame-size", "64", "--sample-every", "12", "--min-size", "48"]
    command += ["--max-size", "80", "--proposals", "1", "--pool-size", "7", "--boxes", "1"]
    assert main(command) == 0
    printed = json.loads(capsys.readouterr().out)
    for name in ("answer", "top", "alpha", "sampled_frames", "frames_used"):
        assert shown[name] == printed[name], name
    assert shown["video"] == "clip.mp4"
    assert list(app.state.served.uploads.iterdir()) == []  # the upload is gone
    assert not (demo.root.parent / "clip.mp4").exists()


def test_an_upload_that_is_not_a_video_is_a_message(client, app):
    page = client.post(
        "/ask",
        data={"run": "0", "question": QUESTION},
        files={"video": ("notes.mp4", b"these are notes, not a video\n" * 10, "video/mp4")},
    )
    assert page.status_code == 400
    assert "'notes.mp4' is not a video the decoder can read" in message(page.text)
    assert list(app.state.served.uploads.iterdir()) == []


def _post(app, headers: list[tuple[bytes, bytes]], chunks: list[bytes]) -> tuple[int, str, int]:
    """Posts ``chunks`` to /ask through the ASGI interface; (status, body, chunks read)."""
    read = 0
    sent: list[dict] = []

    async def receive() -> dict:
        nonlocal read
        if read < len(chunks):
            read += 1
            return {"type": "http.request", "body": chunks[read - 1], "more_body": True}
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/ask",
        "raw_path": b"/ask",
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    asyncio.run(app(scope, receive, send))
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], body.decode(), read


def _multipart_head(boundary: str) -> bytes:
    return (
        f'--{boundary}\r\nContent-Disposition: form-data; name="run"\r\n\r\n0\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="question"\r\n\r\n{QUESTION}\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="video"; filename="big.mp4"\r\n'
        "Content-Type: video/mp4\r\n\r\n"
    ).encode()


def test_a_2_gb_upload_is_refused_before_anything_is_read_or_written(app):
    boundary = "b0undary"
    headers = [
        (b"content-type", f"multipart/form-data; boundary={boundary}".encode()),
        (b"content-length", str(2 * 1024**3).encode()),
    ]
    chunks = [_multipart_head(boundary)] + [b"\0" * MB] * 50
    status, body, read = _post(app, headers, chunks)
    assert status == 413 and read == 0
    assert "larger than the limit of 100 MB (2,048 MB)" in message(body)
    assert list(app.state.served.uploads.iterdir()) == []


def test_an_upload_streamed_past_the_limit_is_stopped_and_deleted(demo: MiniDemo):
    small = create_app(demo.settings(upload_mb=1))
    boundary = "b0undary"
    headers = [(b"content-type", f"multipart/form-data; boundary={boundary}".encode())]
    chunks = [_multipart_head(boundary)] + [b"\0" * (256 * 1024)] * 40  # 10 MB, undeclared
    status, body, read = _post(small, headers, chunks)
    assert status == 413 and "larger than the limit of 1 MB" in message(body)
    assert read <= 6  # stopped at the limit, not at the end of the stream
    assert list(small.state.served.uploads.iterdir()) == []


# --------------------------------------------------------------------------- results view


def test_the_results_view_shows_metrics_per_type_and_the_confused_answers(client, demo):
    page = client.get("/results", params={"run": 0}).text
    metrics = json.loads((demo.runs["full"] / "evaluate-test" / "metrics.json").read_text())
    masn_figures = metrics["masn"]
    assert f"{masn_figures['accuracy']:.2f} %" in page
    for name, figures in masn_figures["per_type"].items():
        assert f'>{name}</a></th><td class="number">{figures["questions"]}</td>' in page
    lines = predictions(demo.runs["full"])
    wrong = [(line["answer"], line["prediction"]) for line in lines if not line["correct"]]
    (answer, prediction), count = max(
        ((pair, wrong.count(pair)) for pair in set(wrong)), key=lambda item: item[1]
    )
    table = page.split('id="confusions"')[1].split("</table>")[0]
    rows = re.findall(r"<tr><td>([^<]*)</td><td><a[^>]*>([^<]*)</a></td><td[^>]*>(\d+)</td>", table)
    assert (answer, prediction, str(count)) in rows and int(rows[0][2]) == count


def test_the_question_table_filters_sorts_and_pages(client, demo: MiniDemo):
    lines = predictions(demo.runs["full"])
    wrong = [i for i, line in enumerate(lines) if not line["correct"]]
    page = client.get("/results", params={"run": 0, "correct": "wrong"}).text
    assert [int(p) for p in re.findall(r'data-position="(\d+)"', page)] == wrong
    kind = lines[0]["type"]
    page = client.get("/results", params={"run": 0, "type": kind, "sort": "score", "order": "desc"})
    positions = [int(p) for p in re.findall(r'data-position="(\d+)"', page.text)]
    expected = sorted(
        (i for i, line in enumerate(lines) if line["type"] == kind),
        key=lambda i: (lines[i]["top"][0][1], i),
        reverse=True,
    )
    assert positions == expected
    answer = lines[0]["answer"]
    page = client.get("/results", params={"run": 0, "answer": answer.upper()}).text
    shown = [int(p) for p in re.findall(r'data-position="(\d+)"', page)]
    assert shown == [i for i, line in enumerate(lines) if line["answer"] == answer]
    small = TestClient(create_app(demo.settings(page_size=2)))
    pages = [small.get("/results", params={"run": 0, "page": n}).text for n in (1, 2, 99)]
    found = [[int(p) for p in re.findall(r'data-position="(\d+)"', text)] for text in pages]
    last = (len(lines) - 1) // 2 * 2
    assert found == [[0, 1], [2, 3], list(range(last, len(lines)))]


def test_comparing_two_runs_counts_where_each_is_right_and_the_other_wrong(client, demo):
    full, single = predictions(demo.runs["full"]), predictions(demo.runs["single"])
    only_full = sum(a["correct"] and not b["correct"] for a, b in zip(full, single, strict=True))
    only_single = sum(b["correct"] and not a["correct"] for a, b in zip(full, single, strict=True))
    page = client.get("/compare", params={"runs": [0, 1]}).text
    cell = r'<td class="number" data-right="{}" data-wrong="{}"><a href="[^"]*">(\d+)</a>'
    assert int(re.search(cell.format(0, 1), page).group(1)) == only_full
    assert int(re.search(cell.format(1, 0), page).group(1)) == only_single
    assert f'<p class="count" id="count">{only_full + only_single} questions' in page
    listed = client.get("/compare", params={"runs": [0, 1], "right": 1, "wrong": 0}).text
    assert f'<p class="count" id="count">{only_single} questions' in listed


def test_runs_on_different_questions_are_a_message(client):
    page = client.get("/compare", params={"runs": [0, 2]})
    assert page.status_code == 400
    said = message(page.text)
    assert "runs 'full' and 'choice' answered different questions" in said
    assert client.get("/compare", params={"runs": [0]}).status_code == 400


# --------------------------------------------------------------------------- the server


def test_a_store_replaced_while_serving_is_reopened_or_refused(demo: MiniDemo, tmp_path: Path):
    copy = copy_demo(demo, tmp_path / "store")
    client = TestClient(create_app(copy.settings()))
    assert "5 videos" in client.get("/store").text
    with FeatureStore(copy.store) as store:  # a smaller store renamed into place
        keep = store.keys()[:3]
    smaller = tmp_path / "smaller.h5"
    _subset(demo.store, smaller, keep)
    smaller.replace(copy.store)
    page = client.get("/store").text
    assert "3 videos" in page and "was replaced while the app was running" in page
    damage_store(copy.store, "truncated")
    page = client.get("/store")
    assert page.status_code == 400 and "is damaged or not an HDF5 file" in message(page.text)
    copy.store.unlink()
    page = client.get(f"/store/video?key={keep[0]}")
    assert page.status_code == 404 and "is gone" in message(page.text)
    smaller_again = tmp_path / "again.h5"
    _subset(demo.store, smaller_again, keep[:2])
    smaller_again.replace(copy.store)
    assert "2 videos" in client.get("/store").text


def _subset(source: Path, target: Path, keys: list[str]) -> None:
    import h5py

    from masn.extract.store.schema import escape_key

    with h5py.File(source, "r", locking=False) as old, h5py.File(target, "w") as new:
        new.attrs.update(old.attrs)
        videos = new.create_group("videos")
        for key in keys:
            old.copy(old["videos"][escape_key(key)], videos, escape_key(key))


def test_two_clients_asking_at_once_each_get_their_own_answer(live: str, demo: MiniDemo):
    questions = {
        key: f"what colour are the shapes in {i}?" for i, key in enumerate(demo.keys["test"])
    }
    questions[demo.keys["train"][0]] = "what shape are they?"
    answers: dict[str, dict] = {}
    failed: dict[str, str] = {}

    def ask(key: str) -> None:
        query = urllib.parse.urlencode({"run": 0, "key": key, "question": questions[key]})
        try:
            with urllib.request.urlopen(f"{live}/ask?{query}", timeout=120) as response:
                answers[key] = answer_json(response.read().decode())
        except Exception as error:  # reported by the test, with its reason
            body = error.read().decode()[-2000:] if hasattr(error, "read") else ""
            failed[key] = f"{error!r} {body}"

    threads = [threading.Thread(target=ask, args=(key,)) for key in questions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not failed and answers.keys() == questions.keys(), failed
    model = masn.load(demo.runs["full"], device="cpu")
    with FeatureStore(demo.store) as store:
        for key, question in questions.items():
            expected = model.answer(store.read(key), question)
            assert answers[key]["question"] == question and answers[key]["video"] == key
            assert answers[key]["top"] == [[text, score] for text, score in expected.top]
