"""``dedup group`` on the command line: kmeans / agglomerative into cluster folders, names.yaml, option
errors, and the duplicate-group folders of the default method."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

from dedup import actions

from helpers import tree_state

SIZES = (6, 5, 4)  # planted clusters of different sizes (write_families' default), numbered by size


def test_cli_kmeans_then_names_then_undo(invoke, families, tmp_path: Path) -> None:
    root, truth = families
    before = tree_state(root)
    out = tmp_path / "sorted"
    code, stdout, err = invoke(
        "group", root, "--to", out, "--method", "kmeans", "--clusters", "3", "-f", "phash"
    )
    assert code == 0, err
    folders = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert folders == ["cluster-0001", "cluster-0002", "cluster-0003"]
    counts = [len(os.listdir(out / f)) for f in folders]
    assert counts == list(SIZES)
    for f in folders:  # each folder holds exactly one family
        assert len({name.split("_")[0] for name in os.listdir(out / f)}) == 1
    assert "cluster-0001" in err and "kmeans: 3 clusters" in err
    rows = list(csv.DictReader((out / "clusters.csv").open()))
    assert sorted(r["path"] for r in rows) == sorted(truth)
    assert actions.load_names(out / "names.yaml") == {1: "cluster-0001", 2: "cluster-0002", 3: "cluster-0003"}
    assert tree_state(root) == before  # copies: the originals are untouched

    (manifest,) = out.glob("dedup-group-*.jsonl")
    code, _, err = invoke("undo", manifest)
    assert code == 0, err
    assert sorted(os.listdir(out)) == sorted(["clusters.csv", "names.yaml", manifest.name])
    assert tree_state(root) == before

    names = tmp_path / "my-names.yaml"
    names.write_text((out / "names.yaml").read_text().replace('"cluster-0002"', '"big cats"'))
    out2 = tmp_path / "named"
    code, _, err = invoke(
        "group", root, "--to", out2, "-m", "kmeans", "-k", "3", "-f", "phash", "--names", names, "--move"
    )
    assert code == 0, err
    assert sorted(p.name for p in out2.iterdir() if p.is_dir()) == [
        "big cats",
        "cluster-0001",
        "cluster-0003",
    ]
    assert len(os.listdir(out2 / "big cats")) == SIZES[1]
    assert not any(root.glob("*.jpg"))  # moved
    (manifest,) = out2.glob("dedup-group-*.jsonl")
    assert invoke("undo", manifest)[0] == 0
    assert tree_state(root) == before


def test_cli_auto_prints_the_curve_and_dry_run_touches_nothing(invoke, families, tmp_path: Path) -> None:
    root, _ = families
    before = tree_state(tmp_path)
    code, stdout, err = invoke(
        "group", root, "--to", tmp_path / "o", "--method", "agglomerative", "--linkage", "complete",
        "-f", "phash", "--dry-run",
    )  # fmt: skip
    assert code == 0, err
    assert "Choosing the number of clusters" in err and "chosen (best silhouette)" in err
    plan = json.loads(stdout)
    assert {Path(op["dst"]).parent.name for op in plan["operations"]} == {
        "cluster-0001",
        "cluster-0002",
        "cluster-0003",
    }
    assert tree_state(tmp_path) == before


def test_cli_group_option_errors(invoke, families, tmp_path: Path) -> None:
    root, _ = families
    code, _, err = invoke(
        "group", root, "--to", tmp_path / "o", "--names", tmp_path / "n.yaml", "-f", "phash"
    )
    assert code == 1 and "--names" in err
    code, _, err = invoke(
        "group", "--to", tmp_path / "o", "--method", "kmeans", "--from-report", tmp_path / "r"
    )
    assert code == 1 and "features" in err
    code, _, err = invoke("group", root, "--to", tmp_path / "o", "--method", "spectral")
    assert code == 1 and "allowed values: dbscan, agglomerative, kmeans" in err
    code, _, err = invoke(
        "group", root, "--to", tmp_path / "o", "-m", "kmeans", "--distance-threshold", "0.2"
    )
    assert code == 1 and "agglomerative only" in err


def test_dbscan_group_is_unchanged(invoke, families, tmp_path: Path) -> None:
    root, _ = families
    out = tmp_path / "g"
    code, _, err = invoke("group", root, "--to", out, "-f", "phash")
    assert code == 0, err
    names = sorted(p.name for p in out.iterdir())
    assert all(n.startswith(("group-", "unique", "dedup-group-")) for n in names)
    assert not (out / "clusters.csv").exists() and not (out / "names.yaml").exists()
