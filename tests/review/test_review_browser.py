"""The review page in headless Chromium, against the real server: click the data-action controls ->
reviewed report on disk -> ``dedup prune --from-report`` moves exactly what was decided -> ``dedup undo``
restores every file; restart the server -> the decisions are back; compare, sort, pages, quarantine."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from dedup.report import load_report

from helpers import console_errors, snapshot
from reviewtools import running

pytestmark = pytest.mark.browser
WAIT = 30


def _wait(driver, script: str, *args):
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, WAIT).until(lambda d: d.execute_script(script, *args))


def _open(driver, server) -> None:
    driver.get(server.url)
    _wait(driver, "return document.body.getAttribute('data-ready') === '1'")


def _press(driver, css: str) -> None:
    """Scroll the control to the middle of the window (below the sticky bar) and click it."""
    element = driver.find_element("css selector", css)
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
    element.click()


def _click(driver, css: str) -> None:
    """Click the control and wait until the server has answered (the page is not busy any more)."""
    driver.execute_script("document.body.setAttribute('data-busy', 'pending')")
    _press(driver, css)
    _wait(driver, "return !document.body.hasAttribute('data-busy')")


def _sel(group: int, action: str, path: str | None = None) -> str:
    where = f'section[data-group="{group}"] '
    return where + (
        f'[data-action="{action}"][data-path={json.dumps(path)}]' if path else f'h3 [data-action="{action}"]'
    )


def _group(report, folder: str) -> int:
    return next(g.id for g in report.groups if all(f"/{folder}/" in m.path for m in g.members))


def test_decide_in_the_page_then_prune_undo_and_restart(browser, scanned, cli, tmp_path) -> None:
    root, report_path, groups = scanned
    report = load_report(report_path)
    g1, g2, g3, g4 = (_group(report, n) for n in ("g1", "g2", "g3", "g4"))
    before = snapshot(root)
    with running(report_path) as server:
        _open(browser, server)
        assert console_errors(browser) == []
        # every card has its data-path; cards show the folder and the evidence
        paths = browser.execute_script(
            "return Array.prototype.map.call(document.querySelectorAll('figure.thumb'),"
            " function (f) { return f.getAttribute('data-path'); })"
        )
        assert sorted(paths) == sorted(m.path for g in report.groups for m in g.members)
        folder = browser.execute_script(
            "return document.querySelector('figure.thumb[data-path=\"' + arguments[0] + '\"] .folder')"
            ".textContent",
            groups["g1"][0],
        )
        assert folder == "g1"
        assert (
            browser.execute_script("return document.querySelectorAll('figure.thumb .badge.keep').length") == 4
        )
        assert browser.execute_script("return document.querySelectorAll('.badge.mirrored').length") >= 1
        # nothing is loaded from anywhere but this server
        resources = browser.execute_script(
            "return performance.getEntriesByType('resource').map(function (e) { return e.name; })"
        )
        assert resources and all(r.startswith(server.base_url + "/") for r in resources), resources

        _click(browser, '[data-action="keep-best-all"]')  # the scan kept a_* (keep.policy path)
        _click(browser, _sel(g1, "keep", groups["g1"][2]))  # g1: keep the half-size copy, on purpose
        _click(browser, _sel(g2, "not-duplicate", groups["g2"][3]))  # g2: the flip is not a duplicate
        _click(browser, _sel(g2, "accept-group"))
        _click(browser, _sel(g3, "reject-group"))
        _click(browser, '[data-action="accept-page"]')  # accepts g4 (pending); g3 stays rejected
        statuses = browser.execute_script(
            "var out = {}; document.querySelectorAll('section.group').forEach(function (s) {"
            " out[s.getAttribute('data-group')] = s.getAttribute('data-status'); }); return out;"
        )
        assert statuses == {
            str(g1): "accepted",
            str(g2): "accepted",
            str(g3): "rejected",
            str(g4): "accepted",
        }
        assert console_errors(browser) == []
        browser.save_screenshot(str(tmp_path / "review.png"))

    # the reviewed report on disk holds exactly these decisions
    reviewed = load_report(server.state.output)
    kept = {g.id: g.keep for g in reviewed.groups}
    assert kept == {g1: groups["g1"][2], g2: groups["g2"][0], g4: groups["g4"][0]}
    members = {g.id: {m.path for m in g.members} for g in reviewed.groups}
    assert members[g2] == set(groups["g2"][:3]) and members[g1] == set(groups["g1"])
    expected = sorted(p for g in reviewed.groups for p in members[g.id] if p != g.keep)

    # prune --from-report moves exactly what was decided; undo restores every file
    q = tmp_path / "q"
    result = cli("prune", "--from-report", server.state.output, "--to", q)
    assert result.exit_code == 0, result.output
    moved = sorted(str(root / p.relative_to(q)) for p in q.rglob("*.jpg"))
    assert moved == expected
    assert all(os.path.exists(p) for p in groups["g3"]) and os.path.exists(groups["g2"][3])
    (manifest,) = q.glob("dedup-prune-*.jsonl")
    result = cli("undo", manifest)
    assert result.exit_code == 0, result.output
    assert snapshot(root) == before

    # a new server on the same report: the decisions are back in the page
    with running(report_path) as again:
        _open(browser, again)
        statuses = browser.execute_script(
            "var out = {}; document.querySelectorAll('section.group').forEach(function (s) {"
            " out[s.getAttribute('data-group')] = s.getAttribute('data-status'); }); return out;"
        )
        assert statuses == {
            str(g1): "accepted",
            str(g2): "accepted",
            str(g3): "rejected",
            str(g4): "accepted",
        }
        kept_shown = browser.execute_script(
            "return document.querySelector('section[data-group=\"' + arguments[0] + '\"] figure.kept')"
            ".getAttribute('data-path')",
            g1,
        )
        assert kept_shown == groups["g1"][2]
        marked = browser.execute_script(
            "return Array.prototype.map.call(document.querySelectorAll('figure.not-duplicate'),"
            " function (f) { return f.getAttribute('data-path'); })"
        )
        assert marked == [groups["g2"][3]]
        assert console_errors(browser) == []


def test_enlarge_compare_sort_pages_and_quarantine(browser, scanned, cli, tmp_path) -> None:
    from selenium.webdriver.support.ui import Select

    root, report_path, groups = scanned
    report = load_report(report_path)
    before = snapshot(root)
    with running(report_path) as server:
        _open(browser, server)
        # enlarge: the image itself, from this server
        _press(browser, "figure.thumb img[data-action=enlarge]")
        _wait(
            browser,
            "var v = document.querySelector('.viewer'); var i = v && v.querySelector('img');"
            "return v && !v.hidden && i.complete && i.naturalWidth > 0",
        )
        src = browser.execute_script("return document.querySelector('.viewer img').src")
        assert src.startswith(server.base_url + "/file/")
        browser.find_element("css selector", ".viewer [data-action=close-viewer]").click()
        # compare two images of different sizes at the same zoom
        full, half = groups["g1"][0], groups["g1"][2]
        for path in (full, half):
            _press(browser, f'input[data-action="select-compare"][data-path="{path}"]')
        _press(browser, '[data-action="compare"]')
        _wait(
            browser,
            "var i = document.querySelectorAll('.viewer img');"
            "return i.length === 2 && i[0].naturalWidth > 0 && i[1].naturalWidth > 0",
        )
        browser.find_element("css selector", ".viewer [data-action=zoom-in]").click()
        ratios = browser.execute_script(
            "return Array.prototype.map.call(document.querySelectorAll('.viewer img'),"
            " function (i) { return parseFloat(i.style.width) / i.naturalWidth; })"
        )
        assert len(ratios) == 2 and abs(ratios[0] - ratios[1]) < 0.02  # the same zoom for both
        labels = browser.execute_script(
            "return Array.prototype.map.call(document.querySelectorAll('.viewer-label'),"
            " function (l) { return l.textContent; })"
        )
        assert sorted(labels) == sorted([full, half])
        browser.find_element("css selector", ".viewer [data-action=close-viewer]").click()
        # sort by reclaimable bytes, then one group per page and a jump to page 3
        Select(browser.find_element("id", "sort")).select_by_value("reclaimable")
        order = browser.execute_script(
            "return Array.prototype.map.call(document.querySelectorAll('section.group'),"
            " function (s) { return parseInt(s.getAttribute('data-group'), 10); })"
        )
        reclaim = {g.id: sum(m.bytes or 0 for m in g.members if m.path != g.keep) for g in report.groups}
        assert order == sorted(reclaim, key=lambda gid: (-reclaim[gid], gid))
        Select(browser.find_element("id", "page-size")).select_by_visible_text("10")  # (all on one page)
        browser.execute_script(
            "var s = document.getElementById('page-size'); var o = document.createElement('option');"
            "o.textContent = '1'; s.appendChild(o); s.value = '1'; s.dispatchEvent(new Event('change'));"
        )
        box = browser.find_element("id", "jump")
        box.clear()
        box.send_keys("3")
        browser.find_element("css selector", '[data-action="jump"]').click()
        assert browser.execute_script("return document.body.getAttribute('data-page')") == "3"
        shown = browser.execute_script("return document.querySelectorAll('section.group').length")
        assert shown == 1
        assert (
            browser.execute_script(
                "return parseInt(document.querySelector('section.group').getAttribute('data-group'), 10)"
            )
            == order[2]
        )
        # accept this page (one group), then move its duplicates from the page
        _click(browser, '[data-action="accept-page"]')
        accepted = next(g for g in report.groups if g.id == order[2])
        expected = sorted(m.path for m in accepted.members if m.path != accepted.keep)
        browser.find_element("css selector", '[data-action="quarantine"]').click()
        to = browser.find_element("id", "quarantine-to")
        to.clear()
        to.send_keys(str(tmp_path / "quarantine"))
        browser.find_element("css selector", '[data-action="preview-quarantine"]').click()
        _wait(browser, "return document.getElementById('preview').getAttribute('data-files') !== null")
        _wait(browser, "return !document.getElementById('confirm-quarantine').disabled")
        files = browser.execute_script("return document.getElementById('preview').getAttribute('data-files')")
        assert int(files) == len(expected)
        assert str(len(expected)) in browser.find_element("id", "confirm-quarantine").text
        assert snapshot(root) == before  # confirming is a separate step
        browser.find_element("css selector", '[data-action="confirm-quarantine"]').click()
        _wait(browser, "return document.getElementById('undo-command') !== null")
        manifest = browser.find_element("id", "manifest").text
        undo = browser.find_element("id", "undo-command").text
        assert undo == f"dedup undo {manifest}" and Path(manifest).is_file()
        assert not any(os.path.exists(p) for p in expected)
        assert console_errors(browser) == []
        browser.save_screenshot(str(tmp_path / "quarantined.png"))
    result = cli("undo", manifest)
    assert result.exit_code == 0, result.output
    assert snapshot(root) == before
