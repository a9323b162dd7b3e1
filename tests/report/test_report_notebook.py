"""A scan result and a report in a notebook: a short repr, a compact HTML summary with the first groups'
thumbnails, rows for pandas, and progress drawn in Jupyter (dedup.progress.NotebookProgress)."""

from __future__ import annotations

import base64
import io
import re

import pytest
from PIL import Image

from dedup.config import load_config
from dedup.pipeline import find_duplicates
from dedup.progress import PHASES, NotebookProgress
from dedup.report import from_result


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    from imagegen import write_dataset

    root = tmp_path_factory.mktemp("nb") / "data"
    write_dataset(root)
    return find_duplicates([root], load_config(overrides={"features.extractor": "phash"}))


def test_short_reprs(result) -> None:
    report = from_result(result)
    text = repr(result)
    assert len(text) < 200 and text.startswith("ScanResult(") and f"{len(result.groups)} groups" in text
    assert len(repr(report)) < 300 and repr(report).startswith(f"Report({len(report.groups)} groups")


def test_html_summary_shows_the_first_groups_thumbnails(result) -> None:
    page = result._repr_html_()
    report = from_result(result)
    assert page == report._repr_html_()
    assert f"<b>{len(report.groups)}</b> groups" in page
    thumbs = re.findall(r'src="data:image/jpeg;base64,([^"]+)"', page)
    shown = sum(min(6, len(g.members)) for g in report.groups[:4])
    assert len(thumbs) == shown
    assert max(Image.open(io.BytesIO(base64.b64decode(thumbs[0]))).size) == 96
    assert len(page) < 200_000  # compact: 33 images here
    assert "<script" not in page


def test_rows_are_flat_and_dataframe_ready(result) -> None:
    rows = result.rows()
    report = from_result(result)
    assert len(rows) == sum(len(g.members) for g in report.groups)
    assert sum(r["kept"] for r in rows) == len(report.groups)
    assert {"group", "path", "kept", "similarity", "evidence", "folder", "quality"} <= set(rows[0])
    assert all(isinstance(v, (str, int, float, bool, type(None))) for r in rows for v in r.values())
    assert all(list(r) == list(rows[0]) for r in rows)  # the same columns in every row


def test_rows_make_a_dataframe(result) -> None:
    pandas = pytest.importorskip("pandas")  # not a dependency of dedup; used when it is there
    frame = pandas.DataFrame(result.rows())
    assert list(frame.columns)[:3] == ["group", "path", "folder"] and frame["kept"].sum() == len(
        result.groups
    )


class _Handle:
    def __init__(self, log: list) -> None:
        self.log = log

    def update(self, obj) -> None:
        self.log.append(obj._repr_html_())


def test_notebook_progress_draws_in_place_without_printing(capsys) -> None:
    shown: list[str] = []

    def display(obj, display_id=False):
        assert display_id is True
        shown.append(obj._repr_html_())
        return _Handle(shown)

    progress = NotebookProgress(display=display, interval=0.0)
    progress("discover", 10, None)
    progress("extract", 5, 33)
    progress("extract", 33, 33)
    assert len(shown) >= 3
    last = shown[-1]
    assert PHASES["extract"] in last and "33/33" in last and '<progress value="33" max="33">' in last
    assert PHASES["discover"] in last
    assert capsys.readouterr() == ("", "")


def test_notebook_progress_outside_ipython_does_nothing(capsys, monkeypatch, tmp_path) -> None:
    import dedup.progress as progress_module

    monkeypatch.setattr(progress_module, "_ipython_display", lambda: None)
    progress = NotebookProgress()
    from imagegen import make_photo

    make_photo(1).save(tmp_path / "a.jpg")
    make_photo(1).save(tmp_path / "b.jpg", quality=60)
    found = find_duplicates(
        [tmp_path], load_config(overrides={"features.extractor": "phash"}), progress=progress
    )
    assert len(found.groups) == 1 and "extract" in progress.phases
    assert capsys.readouterr() == ("", "")
