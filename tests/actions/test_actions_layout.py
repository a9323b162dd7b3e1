"""names.yaml and cluster folders (dedup.actions.layout, dedup.report.schema): rename, clash, missing ids,
bad files, and names.yaml never overwritten."""

from __future__ import annotations

from pathlib import Path

import pytest

from dedup import actions
from dedup.errors import ActionError, InputError
from dedup.report import Report, ReportCluster
from dedup.report.schema import cluster_folders, sanitize_folder_name


def _report(n: int = 3) -> Report:
    return Report(
        groups=(), clusters=tuple(ReportCluster(i, f"cluster-{i:04d}", 1, ()) for i in range(1, n + 1))
    )


def test_names_rename_clash_and_missing_ids(tmp_path: Path) -> None:
    names_file = tmp_path / "names.yaml"
    names_file.write_text('1: "Shirts/red"\n2: shirts/RED\n4: ghost\n5: ""\n')
    names = actions.load_names(names_file)
    assert names == {1: "Shirts/red", 2: "shirts/RED", 4: "ghost"}
    named, notes = actions.with_names(_report(3), names)
    assert any("4" in n and "ignored" in n for n in notes)  # id not in this run
    assert any("clusters 3 have no name" in n for n in notes)  # id missing from names.yaml
    folders, notes = cluster_folders(named.clusters or ())
    # sanitised; two clusters named alike (case-insensitively) by the user share one folder
    assert folders == ["Shirts_red", "Shirts_red", "cluster-0003"]
    assert any("both named" in n for n in notes)


def test_generated_name_clashing_with_a_user_name_gets_a_suffix() -> None:
    named, _ = actions.with_names(_report(3), {1: "cluster-0003", 2: "..", 3: "ok"})
    folders, notes = cluster_folders(named.clusters or ())
    assert folders == ["cluster-0003", "_.", "ok"]
    named, _ = actions.with_names(_report(3), {1: "cluster-0002"})
    folders, notes = cluster_folders(named.clusters or ())
    assert folders == ["cluster-0002", "cluster-0002 (2)", "cluster-0003"]
    assert any("taken by cluster 1" in n for n in notes)
    assert sanitize_folder_name("  \t ") is None and sanitize_folder_name("a\nb") == "a b"


@pytest.mark.parametrize(
    ("text", "needle"),
    [("- a\n- b\n", "must map cluster ids"), ("x: a\n", "not a cluster id"), ("1: [a]\n", "must be text")],
)
def test_bad_names_files_are_input_errors(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "names.yaml"
    path.write_text(text)
    with pytest.raises(InputError, match=needle):
        actions.load_names(path)
    with pytest.raises(InputError, match="does not exist"):
        actions.load_names(tmp_path / "missing.yaml")
    with pytest.raises(ActionError, match="--names needs a clustering"):
        actions.with_names(Report(groups=()), {1: "a"})


def test_write_names_round_trips_and_never_overwrites(tmp_path: Path) -> None:
    report = Report.from_dict(
        {
            "version": 1,
            "groups": [],
            "clusters": [{"id": 1, "name": 'odd: "name" #1', "size": 2, "members": [{"path": "/x/a b.jpg"}]}],
        }
    )
    first = actions.write_names(report, tmp_path)
    assert first == tmp_path / "names.yaml" and actions.load_names(first) == {1: 'odd: "name" #1'}
    assert actions.write_names(report, tmp_path) == first  # same text: not written again
    first.write_text("1: edited\n")
    second = actions.write_names(report, tmp_path)
    assert second == tmp_path / "names (1).yaml" and first.read_text() == "1: edited\n"
