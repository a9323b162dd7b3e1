"""The typed report (dedup.report.schema): parsed once, checked, written back exactly as read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dedup import find_duplicates, load_config
from dedup.errors import InputError
from dedup.report import Report, ReportError, from_result, load_report
from dedup.report.files import to_json


@pytest.fixture(scope="module")
def scan_report(tmp_path_factory: pytest.TempPathFactory) -> Report:
    from imagegen import write_dataset

    root = tmp_path_factory.mktemp("schema") / "data"
    write_dataset(root)
    return from_result(find_duplicates([root], load_config(overrides={"features.extractor": "phash"})))


def test_a_scan_report_round_trips_through_json_unchanged(scan_report: Report, tmp_path: Path) -> None:
    text = to_json(scan_report)
    data = json.loads(text)
    assert list(data)[:10] == [
        "version", "tool", "created", "paths", "extractor", "params", "stats", "groups", "skipped", "images"
    ]  # fmt: skip
    assert list(data["groups"][0]["members"][0]) == [
        "path", "similarity_to_keep", "bytes", "width", "height", "mtime", "mirrored", "evidence",
        "inliers", "coverage", "proposed_by", "similarities", "rotation", "format", "quality", "lossless",
        "derived", "grayscale", "recompressed",
    ]  # fmt: skip
    parsed = Report.from_dict(data)
    assert parsed.to_dict() == data
    path = tmp_path / "r.json"
    path.write_text(text)
    assert to_json(load_report(path)) == text  # byte for byte
    group = parsed.groups[0]
    assert group.kept is not None and group.kept.path == group.keep
    assert all(m.evidence in ("keep", "similar") for m in group.members)


def test_unknown_keys_and_missing_optional_keys_survive_a_round_trip() -> None:
    data = {
        "version": 1,
        "groups": [
            {
                "id": 1,
                "keep": "/a.jpg",
                "members": [{"path": "/a.jpg", "note": "mine"}, {"path": "/b.jpg", "bytes": 3}],
                "reviewed": True,
            }
        ],
        "future_key": {"x": 1},
    }
    report = Report.from_dict(data)
    assert report.to_dict() == data
    assert report.groups[0].members[1].bytes == 3 and report.groups[0].members[0].bytes is None
    assert report.images is None and report.paths == () and report.keep_policy is None


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"version": 2, "groups": []}, "not a dedup report of schema version 1"),
        ({"version": 1}, "not a dedup report"),
        ([1, 2], "not a dedup report"),
        ({"version": 1, "groups": {}}, "'groups' must be a list"),
        ({"version": 1, "groups": [{"id": 1}]}, "report group #1 has no 'members'"),
        ({"version": 1, "groups": [{"id": 1, "members": []}]}, "report group #1 has no 'keep'"),
        ({"version": 1, "groups": [{"id": 1, "keep": "/a", "members": [{"bytes": 3}]}]}, "has no 'path'"),
        (
            {"version": 1, "groups": [{"id": 1, "keep": "/a", "members": [{"path": "/a", "bytes": "3"}]}]},
            "bytes must be an integer",
        ),
        ({"version": 1, "groups": [], "paths": "/photos"}, "'paths' must be a list"),
        ({"version": 1, "groups": [], "skipped": [{"reason": "x"}]}, "'skipped' entry has no 'path'"),
        ({"version": 1, "groups": [], "clusters": [{"id": "one", "members": []}]}, "id must be an integer"),
    ],
)
def test_malformed_reports_are_one_clear_error(data: object, message: str) -> None:
    with pytest.raises(ReportError, match=message) as info:
        Report.from_dict(data)
    assert isinstance(info.value, InputError)  # the CLI prints it as one "Error:" line, exit 1


def test_load_report_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="does not exist"):
        load_report(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ReportError, match="is not valid JSON"):
        load_report(bad)
    bad.write_text(json.dumps({"version": 1, "groups": [{"id": 1}]}))
    with pytest.raises(ReportError, match=r"report .*bad\.json: report group #1 has no 'members'"):
        load_report(bad)
