"""Benchmarks of dedup on the real photos in ../shared/data. Run with ``make bench``.

Results go to ``bench/results/<name>.json`` plus a markdown table ``bench/results/<name>.md``; nothing here is
asserted by the test suite (these machines are shared and noisy).

Usage:
    python bench/run_bench.py                 # every benchmark
    python bench/run_bench.py quality         # only the named ones
    python bench/run_bench.py --full scale    # full sizes (1M vectors, all 3,781 clothing photos): slow

Defaults keep ``make bench`` reasonably short on the 2-core machine: ``extract`` and ``cache`` use a
VGG16 subset of the clothing photos (``--extract-n``, default 128, ~4 min; ``--full`` = all 3,781,
~15-30 min), ``scale`` runs 10k and 100k vectors (``--full`` adds 1M, ~10 min). ``peers`` needs
bench/.venv-peers (``make bench-peers``); it is skipped with a note when that environment is missing.
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
OPTIONS: dict[str, Any] = {"full": False, "extract_n": 128}
PEERS_PYTHON = ROOT / "bench" / ".venv-peers" / "bin" / "python"
CLOTHING = "clothing-dataset-small"
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
        "cpu": _cpu_model(),
        "numpy": numpy.__version__,
        "pillow": PIL.__version__,
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _load() -> float:
    return round(os.getloadavg()[0], 2)


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


# ------------------------------------------------------------------------------------ extraction speed


def _clothing_files(n: int | None) -> list[Any]:
    """``n`` clothing photos spread evenly over the sorted list (all when n is None)."""
    from dedup.config import DiscoverConfig
    from dedup.images import discover

    files, _ = discover([DATA / CLOTHING], DiscoverConfig())
    if n is None or n >= len(files):
        return files
    step = len(files) / n
    return [files[int(i * step)] for i in range(n)]


def _model_only(extractor: Any, arrays: Any, batch: int) -> float:
    """Images/s of ``extractor.embed`` on ready tensors (after one warm-up batch)."""
    import numpy as np

    extractor.embed(np.stack(arrays[:batch]))
    t0 = time.perf_counter()
    for start in range(0, len(arrays), batch):
        extractor.embed(np.stack(arrays[start : start + batch]))
    return len(arrays) / (time.perf_counter() - t0)


def bench_extract() -> dict[str, Any]:
    """VGG16 model-only vs end-to-end images/s; bf16 vs fp32, input 160 vs 224, mirror cost."""
    import numpy as np

    from dedup import load_config
    from dedup.features import VGG16Extractor, cpu_has_bf16, model_precision
    from dedup.images import open_image
    from dedup.pipeline import extract_features

    n = None if OPTIONS["full"] else OPTIONS["extract_n"]
    files = _clothing_files(n)
    cfg = load_config(overrides={"features.weights": "none", "cache.enabled": False})
    precision = model_precision(cfg.features)
    batch = cfg.features.batch_size
    rows: list[dict[str, Any]] = []

    def decode_all(side: int, subset: list[Any]) -> list[Any]:
        ext = VGG16Extractor(side, "avg", "none")
        return [ext.prepare(open_image(f.path, max_pixels=10**9, draft_size=side)[0]) for f in subset]

    # 1. the default configuration: model-only (ready tensors) vs end to end, alternated twice
    ext = VGG16Extractor(224, "avg", "none", precision).build()
    arrays = decode_all(224, files)
    for rep in range(2):
        model = _model_only(ext, arrays, batch)
        t0 = time.perf_counter()
        extract_features(files, ext, cfg)
        e2e = len(files) / (time.perf_counter() - t0)
        rows.append(
            {
                "what": f"default ({precision}, 224 px, mirror off), run {rep + 1}",
                "images": len(files),
                "model_only_img_s": round(model, 3),
                "end_to_end_img_s": round(e2e, 3),
                "ratio": round(e2e / model, 3),
                "load": _load(),
            }
        )
        print(f"extract: {rows[-1]}", file=sys.stderr)
    del arrays
    # 2. variants, model-only on a small subset (same inputs), with the fp32 vectors as reference
    small = files[: min(64, len(files))]
    arrays = decode_all(224, small)
    fp32 = VGG16Extractor(224, "avg", "none", "float32").build()
    ref = np.concatenate([fp32.embed(np.stack(arrays[s : s + batch])) for s in range(0, len(small), batch)])
    variants: list[dict[str, Any]] = []
    for label, ex, arr in (
        ("float32, 224 px", fp32, arrays),
        ("bfloat16, 224 px", VGG16Extractor(224, "avg", "none", "bfloat16").build(), arrays),
        ("float32, 160 px", VGG16Extractor(160, "avg", "none", "float32").build(), decode_all(160, small)),
    ):
        rate = _model_only(ex, arr, batch)
        vecs = np.concatenate([ex.embed(np.stack(arr[s : s + batch])) for s in range(0, len(arr), batch)])
        same = (vecs * ref).sum(1)
        sim_ref, sim_new = ref @ ref.T, vecs @ vecs.T
        variants.append(
            {
                "what": label,
                "images": len(small),
                "model_only_img_s": round(rate, 3),
                "cos_to_fp32_224_min": round(float(same.min()), 6),
                "pairwise_sim_max_abs_diff": round(float(np.abs(sim_ref - sim_new).max()), 6),
                "load": _load(),
            }
        )
        print(f"extract: {variants[-1]}", file=sys.stderr)
    # 3. mirroring: end to end on the small subset, off vs on (default precision)
    mirror_rows = []
    for mirror in (False, True):
        mcfg = load_config(
            overrides={"features.weights": "none", "cache.enabled": False, "features.mirror": mirror}
        )
        t0 = time.perf_counter()
        extract_features(small, ext, mcfg)
        mirror_rows.append(
            {
                "mirror": mirror,
                "images": len(small),
                "end_to_end_img_s": round(len(small) / (time.perf_counter() - t0), 3),
                "load": _load(),
            }
        )
        print(f"extract: {mirror_rows[-1]}", file=sys.stderr)
    return {
        "rows": rows,
        "variants": variants,
        "mirror": mirror_rows,
        "cpu_has_bf16": cpu_has_bf16(),
        "note": "random VGG16 weights (weights: none): speed is the same as with ImageNet weights, "
        "vector agreement is only a proxy for quality",
    }


def extract_markdown(result: dict[str, Any]) -> str:
    lines = [
        "| configuration | images | model-only img/s | end-to-end img/s | end-to-end / model-only | load |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['what']} | {r['images']} | {r['model_only_img_s']:.2f} | {r['end_to_end_img_s']:.2f} "
            f"| {r['ratio']:.0%} | {r['load']} |"
        )
    lines += [
        "",
        "| variant (model only, same inputs) | images | img/s | min cosine to fp32-224 vector | "
        "max abs change of pairwise similarity | load |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["variants"]:
        lines.append(
            f"| {r['what']} | {r['images']} | {r['model_only_img_s']:.2f} | "
            f"{r['cos_to_fp32_224_min']:.6f} | {r['pairwise_sim_max_abs_diff']:.6f} | {r['load']} |"
        )
    lines += ["", "| mirror | images | end-to-end img/s | load |", "|---|---|---|---|"]
    for r in result["mirror"]:
        lines.append(f"| {r['mirror']} | {r['images']} | {r['end_to_end_img_s']:.2f} | {r['load']} |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------ cache: cold vs warm


def _cli_scan(args: list[str], env: dict[str, str]) -> tuple[float, str]:
    """Wall time of a whole ``dedup scan`` process (interpreter start and imports included)."""
    import subprocess

    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "dedup", "scan", *args, "--top", "0"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"dedup scan failed: {proc.stderr[-2000:]}")
    line = next((ln for ln in proc.stderr.splitlines() if ln.startswith("Features:")), "")
    return seconds, line


def bench_cache() -> dict[str, Any]:
    """Cold vs warm ``dedup scan`` (fresh processes), and 10 new images, through the feature cache."""
    import shutil
    import tempfile

    rows = []
    n = None if OPTIONS["full"] else OPTIONS["extract_n"]
    with tempfile.TemporaryDirectory(prefix="dedup-bench-cache-") as tmp:
        work = Path(tmp)
        env = {**os.environ, "XDG_CACHE_HOME": str(work / "xdg")}
        cases = [("phash", DATA / CLOTHING, ["--features", "phash"])]
        subset = work / "vgg-subset"
        everything = _clothing_files(None)
        files = _clothing_files(n) if n is not None else everything[:-10]  # --full: 10 held back to add
        chosen = {f.path for f in files}
        extra = [f for f in everything if f.path not in chosen][:10]
        subset.mkdir()
        for f in files:  # symlinks: the same bytes, a folder we can add 10 images to
            (subset / Path(f.path).name).symlink_to(f.path)
        cases.append(("vgg16 (weights none)", subset, ["--features", "vgg16", "--weights", "none"]))
        for label, folder, args in cases:
            cold, cold_line = _cli_scan([str(folder), *args], env)
            warm, warm_line = _cli_scan([str(folder), *args], env)
            row = {
                "extractor": label,
                "images": sum(1 for _ in folder.rglob("*.jpg")),
                "cold_s": round(cold, 2),
                "warm_s": round(warm, 2),
                "speedup": round(cold / warm, 1),
                "cold": cold_line,
                "warm": warm_line,
                "load": _load(),
            }
            if folder == subset:
                for f in extra:
                    (subset / Path(f.path).name).symlink_to(f.path)
                added, added_line = _cli_scan([str(folder), *args], env)
                row.update({"plus_10_new_s": round(added, 2), "plus_10_new": added_line})
            rows.append(row)
            print(f"cache: {row}", file=sys.stderr)
        shutil.rmtree(work / "xdg", ignore_errors=True)
    return {"rows": rows}


def cache_markdown(result: dict[str, Any]) -> str:
    lines = [
        "| extractor | images | cold scan s | warm scan s | speed-up | +10 new images s | load |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['extractor']} | {r['images']} | {r['cold_s']} | {r['warm_s']} | {r['speedup']}x | "
            f"{r.get('plus_10_new_s', '–')} | {r['load']} |"
        )
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------ scale


def bench_scale() -> dict[str, Any]:
    """Index + graph + cluster on synthetic 512-d vectors, one fresh process per size (peak RSS)."""
    import subprocess

    sizes = [10_000, 100_000] + ([1_000_000] if OPTIONS["full"] else [])
    rows = []
    for n in sizes:
        proc = subprocess.run(
            [sys.executable, str(ROOT / "bench" / "scale.py"), str(n)],
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr[-2000:])
        row = {**json.loads(proc.stdout.strip().splitlines()[-1]), "load": _load()}
        rows.append(row)
        print(f"scale: {row}", file=sys.stderr)
    return {"rows": rows}


def scale_markdown(result: dict[str, Any]) -> str:
    lines = [
        "| vectors | index + graph s | cluster s | total s | peak RSS MB (main / largest worker) | "
        "planted pairs | recall | precision | load |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['n']:,} | {r['seconds_index_graph']} | {r['seconds_cluster']} | {r['seconds_total']} | "
            f"{r['peak_rss_mb']:.0f} / {r.get('peak_rss_worker_mb', 0):.0f} | {r['planted_pairs']:,} | "
            f"{r['recall']} | {r['precision']} | "
            f"{r['load']} |"
        )
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------ peers


def _score_groups(groups: list[list[str]], folder: Path, truth_csv: Path) -> dict[str, float]:
    from dedup.metrics import evaluate_report, load_truth

    report = {
        "paths": [str(folder)],
        "skipped": [],
        "groups": [{"members": [{"path": p} for p in g]} for g in groups],
    }
    m = evaluate_report(report, load_truth(truth_csv))["metrics"]
    return {k: round(m[f"pairwise_{k}"], 4) for k in ("precision", "recall", "f1")}


def bench_peers() -> dict[str, Any]:
    """dedup phash vs imagededup PHash vs imagehash: wall time, images/s, pairwise F1."""
    import subprocess
    import tempfile

    from dedup import load_config
    from dedup.pipeline import find_duplicates

    if not PEERS_PYTHON.exists():
        print("peers: bench/.venv-peers missing (run `make bench-peers`); skipped", file=sys.stderr)
        return {"rows": [], "note": "bench/.venv-peers missing"}
    rows = []
    with tempfile.TemporaryDirectory(prefix="dedup-bench-nd-") as tmp:
        sets = [
            (
                "imagededup-testdata",
                DATA / "imagededup-testdata",
                DATA / "imagededup-testdata" / "ground_truth.csv",
            )
        ]
        for seed in (1, 2, 3):
            out = Path(tmp) / f"nd500-seed{seed}"
            subprocess.run(
                [
                    sys.executable,
                    str(DATA.parent / "tools" / "make_nd_bench.py"),
                    "--out",
                    str(out),
                    "--n",
                    "500",
                    "--seed",
                    str(seed),
                ],
                check=True,
                capture_output=True,
            )
            sets.append((f"clothing nd500 seed {seed}", out, out / "ground_truth.csv"))
        for name, folder, truth in sets:
            cfg = load_config(overrides={"features.extractor": "phash", "cache.enabled": False})
            t0 = time.perf_counter()
            result = find_duplicates([folder], cfg)
            seconds = time.perf_counter() - t0
            groups = [[result.images[m].path for m in g.members] for g in result.groups]
            ours = {
                "set": name,
                "tool": "dedup phash (no cache)",
                "seconds": round(seconds, 3),
                "images": len(result.images),
                **_score_groups(groups, folder, truth),
                "load": _load(),
            }
            rows.append(ours)
            print(f"peers: {ours}", file=sys.stderr)
            for tool in ("imagededup", "imagehash"):
                proc = subprocess.run(
                    [str(PEERS_PYTHON), str(ROOT / "bench" / "peers.py"), tool, str(folder)],
                    capture_output=True,
                    text=True,
                    cwd=ROOT,
                )
                if proc.returncode != 0:
                    print(f"peers: {tool} failed: {proc.stderr[-500:]}", file=sys.stderr)
                    continue
                out = json.loads(proc.stdout.strip().splitlines()[-1])
                row = {
                    "set": name,
                    "tool": f"{out['tool']} {out['version']}",
                    "seconds": round(out["seconds"], 3),
                    "images": out["images"],
                    **_score_groups(out["groups"], folder, truth),
                    "load": _load(),
                }
                rows.append(row)
                print(f"peers: {row}", file=sys.stderr)
    return {"rows": rows}


def peers_markdown(result: dict[str, Any]) -> str:
    lines = [
        "| data set | tool | seconds | images/s | precision | recall | F1 | load |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        rate = r["images"] / r["seconds"] if r["seconds"] else 0.0
        lines.append(
            f"| {r['set']} | {r['tool']} | {r['seconds']} | {rate:.0f} | {r['precision']:.3f} | "
            f"{r['recall']:.3f} | {r['f1']:.3f} | {r['load']} |"
        )
    return "\n".join(lines) + "\n"


BENCHMARKS: dict[str, tuple[Callable[[], dict[str, Any]], Callable[[dict[str, Any]], str]]] = {
    "quality": (bench_quality, quality_markdown),
    "peers": (bench_peers, peers_markdown),
    "cache": (bench_cache, cache_markdown),
    "scale": (bench_scale, scale_markdown),
    "extract": (bench_extract, extract_markdown),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("names", nargs="*", help=f"benchmarks to run: {', '.join(BENCHMARKS)} (default: all)")
    parser.add_argument("--full", action="store_true", help="full sizes: all clothing photos, 1M vectors")
    parser.add_argument("--extract-n", type=int, default=OPTIONS["extract_n"], help="VGG16 subset size")
    args = parser.parse_args(argv)
    OPTIONS.update(full=args.full, extract_n=args.extract_n)
    flags = (" --full" if args.full else "") + (
        f" --extract-n {args.extract_n}" if args.extract_n != 128 else ""
    )
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    for name in args.names or list(BENCHMARKS):
        run, markdown = BENCHMARKS[name]
        started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        load_at_start = [round(x, 2) for x in os.getloadavg()]
        result = run()
        result.update(
            {
                "benchmark": name,
                "started": started,
                "machine": machine(),
                "command": f"python bench/run_bench.py{flags} {name}",
                "load_at_start": load_at_start,
                "load_at_end": [round(x, 2) for x in os.getloadavg()],
            }
        )
        (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
        (RESULTS / f"{name}.md").write_text(markdown(result))
        print(f"{name}: wrote {RESULTS / (name + '.json')} and .md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
