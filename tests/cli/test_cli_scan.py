import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from dedup import __version__

from helpers import tree_state

PHASH = ["--features", "phash"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from imagegen import write_dataset

    root = tmp_path_factory.mktemp("cli") / "data"
    return write_dataset(root)


def test_version(cli):
    result = cli("--version")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"dedup {__version__}"


def test_scan_summary_and_reports(cli, data, tmp_path):
    root = Path(data["root"])
    before = tree_state(root)
    out_json, out_csv = tmp_path / "r.json", tmp_path / "r.csv"
    result = cli("scan", str(root), *PHASH, "--report", str(out_json), "--report", str(out_csv))
    assert result.exit_code == 0, result.output
    for needle in (
        "Images found",
        "Skipped",
        "Duplicate groups",
        "Duplicate images",
        "Reclaimable",
        "truncated",
    ):
        assert needle in result.stdout
    assert tree_state(root) == before  # scan creates nothing in the scanned tree

    report = json.loads(out_json.read_text())
    assert report["stats"]["groups"] == len(data["phash_groups"])
    assert {s["path"]: s["reason"] for s in report["skipped"]} == data["skipped"]
    assert report["extractor"]["name"] == "phash" and report["extractor"]["fallback_used"] is False
    assert report["paths"] == [str(root)]

    rows = list(csv.DictReader(out_csv.open()))
    assert len(rows) == sum(len(g["members"]) for g in report["groups"])
    assert sum(r["kept"] == "yes" for r in rows) == report["stats"]["groups"]
    columns = ["group_id", "path", "kept", "similarity", "bytes", "width", "height"]
    assert list(rows[0])[:7] == columns  # the original columns first, in order; evidence columns after
    assert list(rows[0])[7:] == ["inliers", "evidence", "proposed_by"]


def test_json_flag_prints_only_json_on_stdout(data):
    proc = subprocess.run(
        [sys.executable, "-m", "dedup", "scan", data["root"], *PHASH, "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)  # nothing but the JSON report
    assert report["version"] == 1
    # off a terminal, progress degrades to plain lines on stderr
    assert "Decoding + extracting" in proc.stderr and "\x1b[" not in proc.stderr
    assert "Duplicate groups" in proc.stderr


def test_offline_fallback_warns_once_and_report_says_so(cli, data, tmp_path, monkeypatch):
    import dedup.features.weights as weights

    def offline(**kwargs):
        raise Exception("URL fetch failure: [Errno -2] Name or service not known")

    monkeypatch.setattr(weights, "_keras_get_file", offline)
    result = cli("scan", data["root"], "--json")
    assert result.exit_code == 0, result.output
    assert result.stderr.count("Warning:") == 1
    assert "--weights" in result.stderr
    report = json.loads(result.stdout)
    assert report["extractor"]["name"] == "phash+thumb+color"  # features.offline_fallback's default
    assert report["extractor"]["fallback_used"] is True and report["params"]["verified"] is True


def test_offline_without_fallback_is_a_clear_error(cli, data, monkeypatch):
    import dedup.features.weights as weights

    def offline(**kwargs):
        raise Exception("URL fetch failure")

    monkeypatch.setattr(weights, "_keras_get_file", offline)
    cfg = Path(data["root"]).parent / "nofallback.yaml"
    cfg.write_text("features:\n  offline_fallback: none\n")
    result = cli("scan", data["root"], "--config", str(cfg))
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: ") and "--weights" in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["scan", "/no/such/folder", *PHASH], "does not exist"),
        (["scan", "{root}", "--threshold", "1.5", *PHASH], "cluster.threshold"),
        (
            ["scan", "{root}", "--features", "sift9"],
            "allowed values: vgg16, resnet50, mobilenet, mobilenet_v2, efficientnet_b0, keras-model:PATH, "
            "onnx:PATH, phash",
        ),
        (["scan", "{root}", *PHASH, "--report", "/no/such/dir/r.json"], "does not exist"),
        (["scan", "{root}", *PHASH, "--report", "{tmp}/r.txt"], "unsupported format"),
        (["scan", "{root}", *PHASH, "--config", "{tmp}/missing.yaml"], "cannot read config file"),
        (["scan", "{root}", *PHASH, "--keep", "prettiest"], "keep.policy"),
    ],
)
def test_bad_input_exits_1_with_one_error_line(cli, data, tmp_path, args, message):
    args = [a.format(root=data["root"], tmp=tmp_path) for a in args]
    result = cli(*args)
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("Error: ") and message in result.stderr
    assert "Traceback" not in result.output
    assert not list(tmp_path.iterdir())  # no report written


def test_usage_errors_exit_2(cli):
    assert cli("scan").exit_code == 2
    assert cli("scan", ".", "--no-such-flag").exit_code == 2
    assert cli("scan", ".", "--threshold", "high").exit_code == 2


def test_no_recursive_and_threshold_flags_reach_the_pipeline(cli, data):
    result = cli("scan", data["root"], *PHASH, "--no-recursive", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["params"]["discover"]["recursive"] is False
    root = Path(data["root"])
    assert all(Path(p["path"]).parent == root for p in report["images"])
    result = cli("scan", data["root"], *PHASH, "--threshold", "0.95", "--json")
    assert json.loads(result.stdout)["params"]["threshold"] == 0.95


def test_help_is_fast_and_does_not_import_tensorflow():
    code = "import sys; from dedup.cli import app; assert 'tensorflow' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_progress_without_a_terminal_prints_each_phase_once_and_the_map_only_for_html(cli, data, tmp_path):
    root = Path(data["root"])
    lines = {}
    for fmt in ("json", "html"):
        result = cli("scan", str(root), "--report", str(tmp_path / f"r.{fmt}"))
        assert result.exit_code == 0, result.output
        lines[fmt] = [line for line in result.stderr.splitlines() if " done in " in line]
        phases = [line.split(":")[0] for line in lines[fmt]]
        assert len(phases) == len(set(phases)), result.stderr  # one line per phase
        assert phases[:5] == [
            "Discovering files",
            "Decoding + extracting",
            "Building neighbour graph",
            "Verifying candidate pairs",
            "Clustering",
        ]
        found = next(line for line in result.stdout.splitlines() if "Images found" in line)
        discovered = lines[fmt][0].split(":")[1].split("/")[0].strip()
        assert found.split()[-2] == discovered  # the bar and the summary count the same files
    assert not any(line.startswith("Laying out the map") for line in lines["json"])
    assert any(line.startswith("Laying out the map") for line in lines["html"])
