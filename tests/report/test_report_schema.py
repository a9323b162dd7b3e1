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


# ------------------------------------------------------------------------------- hostile and unlucky reports


def _one_group(**member: object) -> dict[str, object]:
    m = {"path": "/data/a.jpg", "bytes": 10, "mtime": 1.0, **member}
    return {
        "version": 1,
        "paths": ["/data"],
        "groups": [{"id": 1, "keep": "/data/k.jpg", "members": [{"path": "/data/k.jpg"}, m]}],
    }


def test_a_keep_that_is_not_a_member_makes_the_report_invalid() -> None:
    data = _one_group()
    data["groups"][0]["keep"] = "/etc/hostname"  # type: ignore[index]
    with pytest.raises(ReportError, match="keep '/etc/hostname' is not one of its members"):
        Report.from_dict(data)
    data["groups"][0]["keep"] = "/data/./k.jpg"  # type: ignore[index]  # the same path spelled otherwise
    assert Report.from_dict(data).groups[0].keep == "/data/./k.jpg"


@pytest.mark.parametrize(
    ("member", "message"),
    [
        ({"bytes": "10"}, "bytes must be an integer"),
        ({"bytes": -1}, "bytes must be at least 0"),
        ({"bytes": True}, "bytes must be an integer"),
        ({"mtime": "yesterday"}, "mtime must be a number"),
        ({"mtime": float("nan")}, "mtime must be a finite number"),
        ({"mtime": float("inf")}, "mtime must be a finite number"),
        ({"similarity_to_keep": float("nan")}, "must be a finite number"),
        ({"path": "/data/a\0.jpg"}, "contains a NUL byte"),
    ],
)
def test_member_facts_must_be_valid(member: dict[str, object], message: str) -> None:
    with pytest.raises(ReportError, match=message):
        Report.from_dict(_one_group(**member))


def test_nul_bytes_are_refused_in_every_path() -> None:
    for where in ("paths", "keep", "skipped", "images"):
        data = _one_group()
        if where == "paths":
            data["paths"] = ["/da\0ta"]
        elif where == "keep":
            data["groups"][0]["keep"] = data["groups"][0]["members"][0]["path"] = "/data/k\0.jpg"  # type: ignore[index]
        elif where == "skipped":
            data["skipped"] = [{"path": "/data/x\0", "reason": "r"}]
        else:
            data["images"] = [{"path": "/data/\0"}]
        with pytest.raises(ReportError, match="NUL byte"):
            Report.from_dict(data)


def test_a_deeply_nested_report_is_a_one_line_error(tmp_path: Path, cli) -> None:
    path = tmp_path / "deep.json"
    path.write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(ReportError, match="nested too deeply"):
        load_report(path)
    result = cli("prune", "--from-report", path, "--to", tmp_path / "q")
    assert result.exit_code == 1 and "nested too deeply" in result.stderr
    assert "Traceback" not in result.output and len(result.stderr.strip().splitlines()) == 1


def test_a_report_that_is_not_a_regular_file_is_refused_without_reading(tmp_path: Path) -> None:
    import os

    os.mkfifo(tmp_path / "report.json")
    with pytest.raises(ReportError, match="not a regular file"):
        load_report(tmp_path / "report.json")  # would block forever reading a FIFO without a writer


def test_blank_flag_round_trips_and_is_checked() -> None:
    data = _one_group()
    data["images"] = [
        {"path": "/data/a.jpg", "bytes": 1, "mtime": 1.0, "width": 2, "height": 2, "blank": True}
    ]
    assert Report.from_dict(data).to_dict() == data
    data["images"][0]["blank"] = "yes"  # type: ignore[index]
    with pytest.raises(ReportError, match="blank must be true or false"):
        Report.from_dict(data)
