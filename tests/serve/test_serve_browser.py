"""The web UI end to end in a real headless Chromium (Debian's /usr/bin/chromium, driven by playwright).

Install the browser with ``apt-get install -y chromium`` (no playwright browser download). The
screenshots go to the test's tmp dir and to ``runs/screenshots/`` (git-ignored).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from serve_helpers import LiveServer

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "runs" / "screenshots"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.is_file(), reason="/usr/bin/chromium is missing: apt-get install -y chromium"),
]


@pytest.fixture(scope="module")
def ui_server(service):
    pytest.importorskip("playwright.sync_api")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from medic_ad.serve.api import create_app

    with LiveServer(create_app(service, api=True, ui=True)) as base:
        yield base


@pytest.fixture(scope="module")
def page(ui_server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        pg = context.new_page()
        pg.set_default_timeout(30_000)
        pg.goto(f"{ui_server}/ui/")
        pg.wait_for_selector("#detect-button")
        yield pg
        browser.close()


def _save(pg, tmp_path: Path, name: str) -> Path:
    shot = tmp_path / name
    pg.screenshot(path=str(shot), full_page=True)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, SCREENSHOTS / name)
    return shot


def _upload(pg, elem_id: str, path: Path) -> None:
    pg.set_input_files(f"#{elem_id} input[type=file]", str(path))
    # the upload has finished when the server's copy is linked; the file's name is in the cell's label
    pg.locator(f'#{elem_id} td.filename[aria-label="{path.name}"]').wait_for()
    pg.locator(f'#{elem_id} [data-testid="download-link"]').first.wait_for()


def test_detect_in_the_browser(page, br35h, bad_corpus, tmp_path) -> None:
    _upload(page, "study-file", br35h[0])
    page.click("#detect-button")
    answer = page.locator("#detect-answer")
    answer.get_by_text("P(abnormal)").wait_for()
    text = answer.inner_text()
    assert "Answer:" in text and ("normal" in text or "abnormal" in text)
    page.locator("#overlay img").first.wait_for()
    assert page.locator("#detect-score").inner_text().strip()
    shot = _save(page, tmp_path, "ui.png")
    assert shot.stat().st_size > 10_000

    # a refusal is shown as a readable message, not an error page
    page.locator("#study-file button[aria-label='Clear']").first.click()
    folder, _ = bad_corpus
    _upload(page, "study-file", folder / "blank.png")
    page.click("#detect-button")
    answer.get_by_text("Refused").wait_for()
    assert "blank_image" in answer.inner_text()
    _save(page, tmp_path, "ui_refusal.png")


def test_compare_in_the_browser(page, cxr_pair, tmp_path) -> None:
    page.get_by_role("tab", name="Prior / current").click()
    prior, current = cxr_pair
    _upload(page, "prior-file", prior)
    _upload(page, "current-file", current)
    page.click("#compare-button")
    answer = page.locator("#compare-answer")
    answer.get_by_text("Change map").wait_for()
    assert "Answer:" in answer.inner_text()
    page.locator("#sidebyside img").first.wait_for()
    _save(page, tmp_path, "ui_compare.png")


def test_study_in_the_browser(page, ct_study, tmp_path) -> None:
    """A zip of a CT series in the Study tab: the answer, then the slice scroller moves the shown slice."""
    page.get_by_role("tab", name="Study (series)").click()
    _, zip_path = ct_study
    _upload(page, "series-files", zip_path)
    page.click("#series-button")
    answer = page.locator("#series-answer")
    answer.get_by_text("Study score").wait_for()
    text = answer.inner_text()
    assert "Answer:" in text and "Key slice" in text
    built, _ = ct_study
    assert "Series UID" in text and built.series_uid in text and built.study_uid in text and "score" in text
    caption = page.locator("#series-caption")
    caption.get_by_text("key slice").wait_for()
    page.locator("#series-overlay img").first.wait_for()
    first = caption.inner_text()
    before = page.locator("#series-overlay img").first.get_attribute("src")
    _save(page, tmp_path, "ui_study.png")

    scroller = page.locator("#series-slider input[type=range]")
    key = int(scroller.input_value())
    scroller.focus()
    page.keyboard.press("ArrowLeft" if key > 0 else "ArrowRight")
    # the caption of another slice, once the redraw is done (a pending one shows a timer beside the old text)
    page.wait_for_function("sel => { const t = document.querySelector(sel).innerText;"
                           " return t.includes('score') && !t.includes('key slice') && !/\\ds/.test(t); }",
                           arg="#series-caption")
    moved = caption.inner_text().strip()
    assert moved != first and moved.startswith("slice ") and "score" in moved
    page.wait_for_function("([sel, old]) => document.querySelector(sel).getAttribute('src') !== old",
                           arg=["#series-overlay img", before])
    _save(page, tmp_path, "ui_study_scrolled.png")
