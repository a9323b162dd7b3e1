"""Calibrated thresholds (dedup.calibrate): ``cluster.threshold: calibrate`` on generated folders."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dedup.calibrate import _pick_thresholds, needs_calibration
from dedup.config import load_config
from dedup.features.weightfree import PHashExtractor
from dedup.pipeline import find_duplicates

from imagegen import make_photo


def test_thresholds_from_positives_and_negatives() -> None:
    pos = np.array([0.99, 0.98, 0.97, 0.95, 0.90, 0.85])
    neg = np.array([0.93, 0.80, 0.70, 0.60])
    plain, candidate, sure = _pick_thresholds(pos, neg, 0.99)
    assert plain == 0.95  # the lowest threshold with only copies at and above it
    assert sure == pytest.approx((0.93 + 1) / 2, abs=1e-4)  # halfway from the highest non-copy to 1
    assert candidate == pytest.approx(float(np.quantile(pos, 0.02)), abs=1e-4) and candidate < plain
    # a looser target takes in the first non-copy: 5 copies of 6 pairs at 0.90 are 83 %
    assert _pick_thresholds(pos, neg, 0.8)[0] == 0.85
    # non-copies above every copy: nothing can be called a duplicate without verification
    assert _pick_thresholds(np.array([0.5]), np.array([0.9]), 0.99)[0] >= 0.9


def test_which_extractors_calibrate_at_auto() -> None:
    class Cnn:
        weight_free = False

    auto = load_config()
    assert not needs_calibration(PHashExtractor(), auto)  # tuned defaults are kept
    assert needs_calibration(Cnn(), auto)  # type: ignore[arg-type]
    assert needs_calibration(PHashExtractor(), load_config(overrides={"cluster.threshold": "calibrate"}))
    assert not needs_calibration(Cnn(), load_config(overrides={"cluster.threshold": 0.9}))  # type: ignore[arg-type]


def _folder(root: Path) -> Path:
    """Eight unrelated photos, two with a real re-encoded copy (the copies must not count as non-copies)."""
    root.mkdir()
    for seed in range(8):
        make_photo(seed).save(root / f"p{seed}.jpg", quality=92)
    for seed in (0, 1):
        make_photo(seed).resize((240, 180)).save(root / f"p{seed}_copy.jpg", quality=70)
    return root


def test_calibrated_scan_records_the_calibration_and_uses_it(tmp_path: Path, cli: Callable[..., Any]) -> None:
    folder = _folder(tmp_path / "photos")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "features:\n  extractor: phash\ncluster:\n  threshold: calibrate\ncalibration:\n  sample: 10\n"
        f"cache:\n  dir: {tmp_path / 'cache'}\n",
        encoding="utf-8",
    )
    report = tmp_path / "r.json"
    result = cli("scan", folder, "--config", cfg, "--report", report)
    assert result.exit_code == 0, result.output
    data = json.loads(report.read_text(encoding="utf-8"))
    cal = data["params"]["calibrated"]["phash"]
    assert cal["sample"] == 10 and cal["copies"] == 50 and cal["cached"] is False
    assert cal["excluded"] >= 2  # the real copies among the nearest neighbours were recognised
    assert 0 < cal["recall"] <= 1 and cal["precision"] >= 0.99
    assert set(cal["recall_by_transform"]) == {"jpeg", "resize", "crop", "flip", "brightness"}
    assert data["params"]["thresholds"]["phash"]["plain"] == cal["plain"] == data["params"]["threshold"]
    groups = [sorted(Path(m["path"]).name for m in g["members"]) for g in data["groups"]]
    assert ["p0.jpg", "p0_copy.jpg"] in groups and ["p1.jpg", "p1_copy.jpg"] in groups
    assert (tmp_path / "cache" / "calibration").is_dir()
    again = cli("scan", folder, "--config", cfg, "--report", report)
    assert again.exit_code == 0, again.output
    cached = json.loads(report.read_text(encoding="utf-8"))["params"]["calibrated"]["phash"]
    assert cached["cached"] is True and cached["plain"] == cal["plain"]


def test_a_number_the_user_sets_is_kept(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "photos")
    cfg = load_config(
        overrides={
            "features.extractor": "phash+thumb",
            "cluster.threshold": "calibrate",
            "verify.sure_threshold": 0.999,
            "calibration.sample": 6,
            "cache.enabled": False,
        }
    )
    result = find_duplicates([folder], cfg)
    assert set(result.calibrations) == {"phash", "thumb"}
    for name, t in result.thresholds.items():
        assert t.sure == 0.999 and t.candidate == result.calibrations[name].candidate


def test_too_few_images_keep_the_defaults_with_a_warning(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    make_photo(1).save(tmp_path / "x" / "a.jpg")
    warned: list[str] = []
    cfg = load_config(
        overrides={"features.extractor": "phash", "cluster.threshold": "calibrate", "cache.enabled": False}
    )
    result = find_duplicates([tmp_path / "x"], cfg, warn=warned.append)
    assert result.calibrations == {} and result.threshold == PHashExtractor().default_threshold
    assert any("needs at least 3 images" in w for w in warned)


def test_threshold_calibrate_on_the_command_line(tmp_path: Path, cli: Callable[..., Any]) -> None:
    folder = _folder(tmp_path / "photos")
    args = ("scan", folder, "-f", "phash", "--no-cache", "--json")
    result = cli(*args, "--threshold", "calibrate")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["params"]["calibrated"]["phash"]["sample"] == 10
    bad = cli(*args, "--threshold", "sometimes")
    assert bad.exit_code == 2 and "'sometimes' is not a number" in bad.output


def test_cache_clear_removes_the_calibrations(tmp_path: Path, cli: Callable[..., Any]) -> None:
    folder = _folder(tmp_path / "photos")
    cache = tmp_path / "cache"
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"cache:\n  dir: {cache}\n", encoding="utf-8")
    assert cli("scan", folder, "-f", "phash", "-t", "calibrate", "--config", cfg).exit_code == 0
    assert list((cache / "calibration").glob("*.json"))
    result = cli("cache", "clear", "--config", cfg)
    assert result.exit_code == 0, result.output
    assert not list((cache / "calibration").glob("*.json"))
