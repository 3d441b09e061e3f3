"""`snnsec leaderboard DIR`: one self-contained, deterministic HTML page from the results database, with
every row's configs and everything escaped. The browser test (opt-in: SNNSEC_BROWSER_TESTS=1) loads the page
in headless Chromium (/usr/bin/chromium, driven by the playwright package) and checks what a person sees."""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from snnsec.cli import cli
from snnsec.leaderboard import leaderboard_html, write_leaderboard
from snnsec.results_db import ResultsDB

try:
    from test_report import attack_record, planted_db
except ImportError:
    from tests.test_report import attack_record, planted_db

CHROMIUM = Path(os.environ.get("SNNSEC_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def test_leaderboard_holds_sections_rows_and_configs(tmp_path):
    records = planted_db(tmp_path)
    result = CliRunner().invoke(cli, ["leaderboard", str(tmp_path)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    page = (tmp_path / "leaderboard.html").read_text(encoding="utf-8")
    for heading in ("Attacks", "Defenses", "Robustness (evasion)", "digits-dvs / spiking-cnn"):
        assert f">{heading}</h" in page
    # attacks: 2 groups (3 seeds merged, one other rate); defenses: 2; evasion: 2 budgets
    bodies = re.findall(r"<tbody>(.*?)</tbody>", page, re.S)
    assert [body.count("<tr>") for body in bodies] == [2, 2, 2]
    assert "91.0 ± 1.0" in page and ">3</td>" in page
    for rec in records:  # every run's id and config are in the page
        assert rec["run_id"] in page
    assert "&quot;poison_rate&quot;: 0.05" in page
    assert page.count('src="data:image/png;base64,') == 3
    assert not re.search(r"""(src|href)\s*=\s*["'](?!data:|#)""", page)  # nothing to fetch
    assert "<link" not in page and "@import" not in page


def test_leaderboard_is_deterministic(tmp_path):
    planted_db(tmp_path)
    first = write_leaderboard(tmp_path).read_bytes()
    assert write_leaderboard(tmp_path).read_bytes() == first
    copy = tmp_path / "copy" / tmp_path.name
    copy.mkdir(parents=True)
    shutil.copy(tmp_path / "results.sqlite", copy / "results.sqlite")
    assert write_leaderboard(copy).read_bytes() == first  # the same rows, the same bytes


def test_leaderboard_escapes_what_it_shows(tmp_path):
    evil = "<script>alert('x')</script>&"
    ResultsDB.of(tmp_path).put(attack_record(0, trigger=evil))
    page = leaderboard_html(tmp_path)
    assert evil not in page and "alert('x')" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;&amp;" in page
    assert page.count("<script>") == 1  # ours


# ---- in a real browser (opt-in) ---------------------------------------------------------------------------


@pytest.fixture
def browser():
    if os.environ.get("SNNSEC_BROWSER_TESTS") != "1":
        pytest.skip("browser tests are opt-in: set SNNSEC_BROWSER_TESTS=1")
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set SNNSEC_CHROMIUM)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright package is not installed (pip install playwright; no `playwright install` "
                    "needed, the system Chromium is used)")
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


def test_leaderboard_in_headless_chromium(tmp_path, browser):
    planted_db(tmp_path)
    path = write_leaderboard(tmp_path)
    page = browser.new_page()
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(path.as_uri())
    page.wait_for_load_state("load")

    assert page.locator("h2").all_inner_texts() == ["Attacks", "Defenses", "Robustness (evasion)"]
    tables = page.locator("table.sortable")
    assert tables.count() == 3
    assert [tables.nth(i).locator("tbody tr").count() for i in range(3)] == [2, 2, 2]

    # sort the attacks by ASR: a click sorts ascending, a second descending
    attacks = tables.nth(0)
    headers = attacks.locator("thead th").all_inner_texts()
    asr = headers.index("ASR (%)")
    column = lambda: attacks.locator(f"tbody tr td:nth-child({asr + 1})").all_inner_texts()  # noqa: E731
    assert column() == ["40.0 ± -", "91.0 ± 1.0"]  # as written: by the labels (rate 0.05 before 0.1)
    attacks.locator("thead th").nth(asr).click()
    assert attacks.locator("thead th").nth(asr).get_attribute("aria-sort") == "ascending"
    assert column() == ["40.0 ± -", "91.0 ± 1.0"]
    attacks.locator("thead th").nth(asr).click()  # again: descending
    assert attacks.locator("thead th").nth(asr).get_attribute("aria-sort") == "descending"
    assert column() == ["91.0 ± 1.0", "40.0 ± -"]
    n = headers.index("n")
    attacks.locator("thead th").nth(n).click()  # by n, ascending: the one-run group first
    assert attacks.locator(f"tbody tr td:nth-child({n + 1})").all_inner_texts() == ["1", "3"]
    attacks.locator("thead th").nth(n).click()
    assert attacks.locator(f"tbody tr td:nth-child({n + 1})").all_inner_texts() == ["3", "1"]

    # a row's configs: hidden until its details are opened, then the JSON of each run
    details = attacks.locator("tbody tr").first.locator("details")
    pre = details.locator("pre")
    assert not pre.is_visible()
    details.locator("summary").click()
    assert pre.is_visible()
    shown = pre.inner_text()
    assert '"run_id"' in shown and '"poison_rate": 0.1' in shown and shown.count('"run_id"') == 3

    # the plots are loaded and drawn
    images = page.locator("img")
    assert images.count() == 3
    widths = images.evaluate_all("images => images.map(i => i.complete ? i.naturalWidth : 0)")
    assert all(w > 0 for w in widths), widths
    assert not errors, errors
    assert all(url.startswith(("file:", "data:")) for url in requests), requests  # nothing fetched from outside
