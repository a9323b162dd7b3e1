"""Benchmarks of dedup on the real photos in ../shared/data. Run with ``make bench``.

Results go to ``bench/results/<name>.json`` plus a markdown table ``bench/results/<name>.md``; nothing here is
asserted by the test suite (these machines are shared and noisy).

Usage:
    python bench/run_bench.py                 # every benchmark
    python bench/run_bench.py quality         # only the named ones
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
DATA = Path(os.environ.get("DEDUP_SHARED_DATA", ROOT.parent / "shared" / "data"))

# name -> (folder under DATA, ground-truth csv inside it)
QUALITY_SETS = {
    "imagededup-testdata": ("imagededup-testdata", "ground_truth.csv"),
    "jenssegers-imagehash": ("jenssegers-imagehash-testimages", "ground_truth.csv"),
}


def machine() -> dict[str, Any]:
    """Where a figure was measured."""
    import numpy
    import PIL

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "numpy": numpy.__version__,
        "pillow": PIL.__version__,
    }


def scan_and_score(folder: Path, truth_csv: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    """Scan ``folder`` with the given config overrides and score the report against ``truth_csv``."""
    from dedup import load_config
    from dedup.metrics import evaluate_report, load_truth
    from dedup.pipeline import find_duplicates
    from dedup.report import to_dict

    warnings: list[str] = []
    t0 = time.perf_counter()
    result = find_duplicates([folder], load_config(overrides=overrides), warn=warnings.append)
    seconds = time.perf_counter() - t0
    report = to_dict(result)
    scores = evaluate_report(report, load_truth(truth_csv))
    m = scores["metrics"]
    return {
        "extractor": report["extractor"],
        "threshold": report["params"]["threshold"],
        "images": report["stats"]["images"],
        "skipped": report["stats"]["skipped"],
        "groups": report["stats"]["groups"],
        "chain_splits": report["stats"]["chain_splits"],
        "seconds": round(seconds, 2),
        "precision": round(m["pairwise_precision"], 4),
        "recall": round(m["pairwise_recall"], 4),
        "f1": round(m["pairwise_f1"], 4),
        "corrupt_skipped": scores["excluded"]["skipped"],
        "corrupt_not_skipped": scores["excluded"]["not_skipped"],
        "warnings": warnings,
    }


def bench_quality() -> dict[str, Any]:
    """Pairwise precision / recall / F1 of ``dedup scan`` at default settings on the ground-truth sets."""
    rows = []
    for name, (folder, truth) in QUALITY_SETS.items():
        path = DATA / folder
        if not path.is_dir():
            print(f"quality: {path} missing, skipped", file=sys.stderr)
            continue
        for label, overrides in (
            ("default (vgg16, offline fallback if no weights)", {}),
            ("phash", {"features.extractor": "phash"}),
        ):
            row = {"set": name, "config": label, **scan_and_score(path, path / truth, overrides)}
            rows.append(row)
            print(
                f"quality: {name:24s} {label:48s} P={row['precision']:.3f} R={row['recall']:.3f} "
                f"F1={row['f1']:.3f} ({row['seconds']}s)",
                file=sys.stderr,
            )
    return {"rows": rows}


def quality_markdown(result: dict[str, Any]) -> str:
    lines = [
        "| data set | config | extractor that ran | threshold | precision | recall | F1 | corrupt skipped |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        ex = r["extractor"]
        ran = ex["name"] + (" (fallback)" if ex.get("fallback_used") else "")
        corrupt = f"{r['corrupt_skipped']}/{r['corrupt_skipped'] + len(r['corrupt_not_skipped'])}"
        lines.append(
            f"| {r['set']} | {r['config']} | {ran} | {r['threshold']:.3f} | {r['precision']:.3f} | "
            f"{r['recall']:.3f} | {r['f1']:.3f} | {corrupt} |"
        )
    return "\n".join(lines) + "\n"


BENCHMARKS: dict[str, tuple[Callable[[], dict[str, Any]], Callable[[dict[str, Any]], str]]] = {
    "quality": (bench_quality, quality_markdown),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("names", nargs="*", help=f"benchmarks to run: {', '.join(BENCHMARKS)} (default: all)")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    for name in args.names or list(BENCHMARKS):
        run, markdown = BENCHMARKS[name]
        started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        result = run()
        result.update(
            {
                "benchmark": name,
                "started": started,
                "machine": machine(),
                "command": f"python bench/run_bench.py {name}",
            }
        )
        (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
        (RESULTS / f"{name}.md").write_text(markdown(result))
        print(f"{name}: wrote {RESULTS / (name + '.json')} and .md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
