"""`masn serve` in a real browser: Debian's headless Chromium driven by Playwright against the
mini demo's store and runs. Each view is saved as a screenshot under build/test-artefacts/serve/
(the folder is printed at the end of the module)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

import masn
from masn.extract.store.reader import FeatureStore
from masn.pipeline.serve.catalogue import frame_boxes
from tests.conftest import REPO
from tests.pipeline.serve.conftest import MiniDemo

CHROMIUM = Path("/usr/bin/chromium")
INSTALL = "apt-get install -y chromium"
# Chromium as root in a container, with nothing fetched from the network.
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SHOTS = REPO / "build" / "test-artefacts" / "serve"
QUESTION = "what colour are the shapes?"
TIMEOUT = 60_000  # ms: an answer on a busy CPU


@pytest.fixture(scope="module")
def browser(request: pytest.FixtureRequest) -> Iterator:
    if not CHROMIUM.is_file():
        pytest.skip(f"needs Debian's headless Chromium: {INSTALL}")
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="needs Playwright: pip install -e '.[dev]'"
    )
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield browser
        browser.close()
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"masn serve screenshots: {SHOTS}")


@pytest.fixture
def page(browser, live: str):
    context = browser.new_context(base_url=live, viewport={"width": 1400, "height": 900})
    context.set_default_timeout(TIMEOUT)
    yield context.new_page()
    context.close()


def shot(page, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_a_video_found_by_search_shows_its_frames_with_their_boxes_drawn(page, demo: MiniDemo):
    key = demo.keys["test"][0]
    page.goto("/store")
    shot(page, "store")
    page.fill("input[name=q]", key.split("/")[1][:12])
    page.press("input[name=q]", "Enter")
    page.wait_for_url("**/store?q=*")
    page.click(f"a.video-link:text-is('{key}')")
    page.wait_for_selector("#frames figure.frame img")
    page.wait_for_function(
        "[...document.querySelectorAll('#frames img')].every(i => i.complete && i.naturalWidth)"
    )
    with FeatureStore(demo.store) as store:
        record = store.read(key)
    frames = page.locator("#frames figure.frame")
    assert frames.count() == len(record.frame_times)
    for index in range(frames.count()):
        frame = frames.nth(index)
        boxes = frame_boxes(record, index)
        rects = frame.locator("rect.box")
        assert rects.count() == len(boxes) >= 1
        picture = frame.locator("img").bounding_box()
        scale = picture["width"] / record.width
        for box, rect in zip(boxes, rects.all(), strict=True):
            drawn = rect.bounding_box()  # where the browser drew it, in page pixels
            assert drawn["width"] > 0 and drawn["height"] > 0
            assert drawn["x"] == pytest.approx(picture["x"] + box.x1 * scale, abs=2)
            assert drawn["width"] == pytest.approx((box.x2 - box.x1) * scale, abs=2)
        assert f"t = {record.frame_times[index]:.2f} s" in frame.inner_text()
    assert (
        page.locator("video#source")
        .evaluate("v => v.src")
        .endswith("/media/video?key=" + key.replace("/", "%2F"))
    )
    shot(page, "video")


def test_asking_shows_the_python_apis_answer_and_alpha(page, demo: MiniDemo):
    key = demo.keys["test"][1]
    page.goto("/ask")
    page.fill("#key", key)
    page.click("#ask-button")  # no question yet
    assert "the question is empty" in page.locator("#message").inner_text()
    page.select_option("#run", "0")
    page.fill("#question", QUESTION)
    page.click("#ask-button")
    page.wait_for_selector("#answer")
    model = masn.load(demo.runs["full"], device="cpu")
    with FeatureStore(demo.store) as store:
        expected = model.answer(store.read(key), QUESTION)
    assert page.locator("#answer").inner_text() == expected.answer
    shown = {
        row.get_attribute("data-name"): float(row.get_attribute("data-value"))
        for row in page.locator("tr.alpha").all()
    }
    assert shown == expected.alpha
    for name, value in expected.alpha.items():
        assert f"{value:.3f}" in page.locator(f"tr.alpha[data-name={name}]").inner_text()
    top = page.locator("#top tr").all()
    assert [row.get_attribute("data-answer") for row in top] == [t for t, _ in expected.top]
    assert page.locator("figure.map").count() == 3
    assert page.locator("#frames figure.frame").count() == len(expected.chosen)
    shot(page, "ask")


def test_results_filtered_to_wrong_answers_open_one_in_ask(page, demo: MiniDemo):
    lines = [
        json.loads(line)
        for line in (demo.runs["full"] / "evaluate-test" / "predictions.jsonl").open()
    ]
    wrong = [line for line in lines if not line["correct"]]
    assert wrong, "the fixture's run answered every test question right"
    page.goto("/results?run=0")
    page.select_option("#filter-correct", "wrong")
    page.click("#filter-button")
    page.wait_for_url("**correct=wrong**")
    rows = page.locator("#questions tbody tr")
    assert rows.count() == len(wrong)
    assert all(row.get_attribute("class") == "wrong" for row in rows.all())
    shot(page, "results")
    first = wrong[0]
    rows.first.locator("a.open").click()
    page.wait_for_selector("#answer")
    assert page.locator("#key").input_value() == first["video"]
    assert page.locator("#question").input_value() == first["question"]
    assert page.locator("#answer").inner_text() == first["prediction"]
    assert page.locator("#answer").inner_text() != first["answer"]


def test_comparing_two_runs_counts_their_disagreements(page, demo: MiniDemo):
    def read(name: str) -> list[dict]:
        path = demo.runs[name] / "evaluate-test" / "predictions.jsonl"
        return [json.loads(line) for line in path.open()]

    pairs = list(zip(read("full"), read("single"), strict=True))
    full_only = sum(a["correct"] and not b["correct"] for a, b in pairs)
    single_only = sum(b["correct"] and not a["correct"] for a, b in pairs)
    page.goto("/compare")
    page.check("input[name=runs][value='0']")
    page.check("input[name=runs][value='1']")
    page.click("#compare-button")
    page.wait_for_selector("#matrix")
    cell = "#matrix td[data-right='{}'][data-wrong='{}']"
    assert int(page.locator(cell.format(0, 1)).inner_text()) == full_only
    assert int(page.locator(cell.format(1, 0)).inner_text()) == single_only
    assert (
        page.locator("#disagreements tr:has(td)").count() == min(full_only + single_only, 50)
        or full_only + single_only == 0
    )
    shot(page, "compare")
    page.check("input[name=runs][value='2']")
    page.click("#compare-button")
    assert "answered different questions" in page.locator("#message").inner_text()


def test_two_browsers_ask_at_once(browser, live: str, demo: MiniDemo):
    questions = {demo.keys["test"][0]: QUESTION, demo.keys["test"][1]: "what shape are they?"}
    contexts = [browser.new_context(base_url=live) for _ in questions]
    pages = [context.new_page() for context in contexts]
    for page, (key, question) in zip(pages, questions.items(), strict=True):
        page.set_default_timeout(TIMEOUT)
        page.goto("/ask")
        page.fill("#key", key)
        page.fill("#question", question)
    for page in pages:  # both questions in flight together
        page.click("#ask-button", no_wait_after=True)
    model = masn.load(demo.runs["full"], device="cpu")
    with FeatureStore(demo.store) as store:
        for page, (key, question) in zip(pages, questions.items(), strict=True):
            page.wait_for_selector("#answer")
            expected = model.answer(store.read(key), question)
            assert page.locator("#answer").inner_text() == expected.answer
            assert f"“{question}” about {key}" in page.locator("#result h2").inner_text()
    for context in contexts:
        context.close()
