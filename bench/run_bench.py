"""Benchmarks of dedup on the real photos in ../shared/data. Run with ``make bench``.

Results go to ``bench/results/<name>.json`` plus a markdown table ``bench/results/<name>.md``; nothing here is
asserted by the test suite (these machines are shared and noisy).

Usage:
    python bench/run_bench.py                 # every benchmark
    python bench/run_bench.py quality         # only the named ones
    python bench/run_bench.py cnn             # the shared MobileNet (not VGG16) through the verified pipeline
    DEDUP_BENCH_GROUPING_N=0 python bench/run_bench.py grouping   # grouping on every labelled image
    DEDUP_BENCH_FULL=1 python bench/run_bench.py verify   # full-size generated sets (n=500 per seed, slow)
    python bench/run_bench.py assign          # a saved index served over HTTP: latency and throughput
    python bench/run_bench.py --full scale    # full sizes (1M vectors, all 3,781 clothing photos): slow

Defaults keep ``make bench`` reasonably short on the 2-core machine: ``extract`` and ``cache`` use a
VGG16 subset of the clothing photos (``--extract-n``, default 128, ~4 min; ``--full`` = all 3,781,
~15-30 min), ``scale`` runs 10k and 100k vectors (``--full`` adds 1M, ~10 min), ``partitions`` 100k
vectors with 16 partitions and with one index (``--full`` adds 1M), ``ray`` starts a local Ray cluster on
127.0.0.2 (1, then 2 one-CPU worker nodes; 4 x ``--extract-n`` clothing photos, ``--full`` all; ~3 min).
``peers`` needs bench/.venv-peers (``make bench-peers``); it is skipped with a note when that environment
is missing.
"""

from __future__ import annotations

import argparse
import contextlib
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
    """Where a figure was measured (with the load average, as the machine may be shared)."""
    import numpy
    import PIL

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "cpu": _cpu_model(),
        "numpy": numpy.__version__,
        "pillow": PIL.__version__,
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }
    try:
        import cv2

        info["opencv"] = cv2.__version__
    except ImportError:
        pass
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def scan_and_score(folder: Path, truth_csv: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    """Scan ``folder`` with the given config overrides and score the report against ``truth_csv``."""
    from dedup import load_config
    from dedup.metrics import evaluate_report, load_truth
    from dedup.pipeline import find_duplicates
    from dedup.report import from_result

    warnings: list[str] = []
    t0 = time.perf_counter()
    result = find_duplicates([folder], load_config(overrides=overrides), warn=warnings.append)
    seconds = time.perf_counter() - t0
    report = from_result(result)
    scores = evaluate_report(report, load_truth(truth_csv))
    m = scores["metrics"]
    return {
        "extractor": report.extractor,
        "threshold": report.params["threshold"],
        "images": report.stats["images"],
        "skipped": report.stats["skipped"],
        "groups": report.stats["groups"],
        "chain_splits": report.stats["chain_splits"],
        "seconds": round(seconds, 2),
        "ms_per_image": round(1000 * seconds / max(1, report.stats["images"]), 1),
        "verified": report.params.get("verified", False),
        "precision": round(m["pairwise_precision"], 4),
        "recall": round(m["pairwise_recall"], 4),
        "f1": round(m["pairwise_f1"], 4),
        "corrupt_skipped": scores["excluded"]["skipped"],
        "corrupt_not_skipped": scores["excluded"]["not_skipped"],
        "warnings": warnings,
        "thresholds": report.params.get("thresholds"),
        "calibrated": report.params.get("calibrated"),
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
            ("default (vgg16+phash+thumb+color; offline: phash+thumb+color)", {}),
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


# ----------------------------------------------------------------------------------------- grouping

# name -> folder under DATA with a labels.csv (path,label,...) of 10 classes
GROUPING_SETS = {
    "clothing-dataset-small": "clothing-dataset-small",
    "sign-language-digits": "sign-language-digits",
}
# Images per set (a random subsample, seed 0, the same every run); 0 = every labelled image (slow on 2 cores:
# decoding 3,781 + 2,062 photos plus agglomerative on all of them takes several minutes).
GROUPING_N = int(os.environ.get("DEDUP_BENCH_GROUPING_N", "1000"))
GROUPING_METHODS: dict[str, dict[str, Any]] = {
    "dbscan (default threshold)": {"method": "dbscan"},
    "agglomerative average, 10 clusters": {"method": "agglomerative", "clusters": 10, "linkage": "average"},
    "agglomerative complete, 10 clusters": {"method": "agglomerative", "clusters": 10, "linkage": "complete"},
    "kmeans, 10 clusters": {"method": "kmeans", "clusters": 10},
    "kmeans, clusters auto (2-20)": {"method": "kmeans", "clusters": "auto"},
    "agglomerative average, clusters auto (2-20)": {"method": "agglomerative", "clusters": "auto"},
}


def _thumbnails(paths: list[str], side: int = 16) -> Any:
    """The 16x16-pixel baseline: raw RGB thumbnails (BILINEAR), flattened, L2-normalised."""
    import numpy as np
    from PIL import Image

    from dedup.embeddings import l2_normalize
    from dedup.images import open_image

    rows = []
    for path in paths:
        image, _, _ = open_image(path, max_pixels=178_956_970, draft_size=2 * side)
        small = image.convert("RGB").resize((side, side), Image.Resampling.BILINEAR)
        rows.append(np.asarray(small, dtype=np.float32).reshape(-1))
    return l2_normalize(np.stack(rows))


def bench_grouping() -> dict[str, Any]:
    """ARI / NMI / V-measure of every grouping method on the labelled sets, for the backbone that ran (the
    default extractor; offline that is the phash fallback) and for the 16x16-pixel thumbnail baseline."""
    import csv

    import numpy as np

    from dedup import load_config
    from dedup.embeddings import Embeddings
    from dedup.metrics import clustering_scores
    from dedup.partition import cluster_embeddings
    from dedup.pipeline import find_duplicates

    rows = []
    for name, folder in GROUPING_SETS.items():
        root = DATA / folder
        if not (root / "labels.csv").is_file():
            print(f"grouping: {root}/labels.csv missing, skipped", file=sys.stderr)
            continue
        with (root / "labels.csv").open(newline="") as f:
            labelled = [(str((root / r["path"]).resolve()), r["label"]) for r in csv.DictReader(f)]
        labelled.sort()
        if 0 < GROUPING_N < len(labelled):
            pick = np.random.default_rng(0).choice(len(labelled), size=GROUPING_N, replace=False)
            labelled = [labelled[i] for i in sorted(pick)]
        truth_of = dict(labelled)
        warnings: list[str] = []
        t0 = time.perf_counter()
        result = find_duplicates([p for p, _ in labelled], load_config(), warn=warnings.append)
        extract_seconds = time.perf_counter() - t0
        paths = [im.path for im in result.images]
        truth = [truth_of[p] for p in paths]
        t0 = time.perf_counter()
        thumbs = _thumbnails(paths)
        thumb_seconds = time.perf_counter() - t0
        ex = result.extractor
        # whole-collection clustering uses the first extractor's vectors (cluster_collection); name it
        first = ex.get("extractors", [ex])[0]["name"]
        fallback = f" (first of the {ex['name']} offline fallback)" if ex.get("fallback_used") else ""
        backbone = first + fallback
        feature_sets = [
            (backbone, result.embeddings),
            ("16x16 RGB thumbnails (baseline)", Embeddings(thumbs)),
        ]
        feature_sets += _mobilenet_variants(paths)
        for features, embeddings in feature_sets:
            for label, spec in GROUPING_METHODS.items():
                t0 = time.perf_counter()
                if spec["method"] == "dbscan":
                    if embeddings is not result.embeddings:
                        continue  # DBSCAN runs at the extractor's duplicate threshold; thumbnails have none
                    pred = list(range(len(paths)))  # images in no group are singletons
                    for gid, group in enumerate(result.groups):
                        for m in group.members:
                            pred[m] = len(paths) + gid
                    chosen = len(result.groups)
                else:
                    c = cluster_embeddings(
                        embeddings, **spec, auto_range=(2, 20), silhouette_sample=2000, seed=0
                    )
                    pred = c.labels.tolist()
                    chosen = c.n_clusters
                seconds = time.perf_counter() - t0
                s = clustering_scores(truth, pred)
                row = {
                    "set": name,
                    "images": len(paths),
                    "features": features,
                    "method": label,
                    "clusters": chosen,
                    "ari": round(s["adjusted_rand"], 4),
                    "nmi": round(s["normalized_mutual_info"], 4),
                    "v_measure": round(s["v_measure"], 4),
                    "seconds": round(seconds, 2),
                }
                rows.append(row)
                print(
                    f"grouping: {name:22s} {features:32s} {label:44s} k={chosen:<4d} ARI={row['ari']:.3f} "
                    f"NMI={row['nmi']:.3f} V={row['v_measure']:.3f} ({row['seconds']}s)",
                    file=sys.stderr,
                )
        rows.append(
            {
                "set": name,
                "images": len(paths),
                "extractor": ex,
                "extract_seconds": round(extract_seconds, 2),
                "thumbnail_seconds": round(thumb_seconds, 2),
                "warnings": warnings,
            }
        )
    return {"rows": rows, "subsample": GROUPING_N, "load": _load()}


MODELS = Path(os.environ.get("DEDUP_SHARED_MODELS", ROOT.parent / "shared" / "models"))
MOBILENET_H5 = MODELS / "mobilenet_2_5_224_tf_no_top.h5"
MOBILENET_KERAS = MODELS / "mobilenet025_imagenet_notop.keras"
MOBILENETV2_ONNX = MODELS / "mobilenetv2-12-int8.onnx"
STAND_IN = "MobileNet a=0.25 (stand-in, NOT VGG16)"


def _mobilenet_variants(paths: list[str]) -> list[tuple[str, Any]]:
    """The shared real ImageNet MobileNet's vectors of ``paths`` (in that order), raw and with the
    post-processing that might help clustering: PCA to 64 dims with whitening, and PCA without whitening
    (each L2-normalised again). Empty when ../shared/models is absent."""
    import numpy as np
    from sklearn.decomposition import PCA

    from dedup import load_config
    from dedup.embeddings import Embeddings, l2_normalize
    from dedup.extract import collect_features

    if not MOBILENET_H5.is_file():
        print(f"grouping: {MOBILENET_H5} missing, MobileNet rows skipped", file=sys.stderr)
        return []
    cfg = load_config(overrides={"features.extractor": "mobilenet", "features.weights": str(MOBILENET_H5)})
    feats = collect_features(paths, cfg)
    row_of = {im.path: i for i, im in enumerate(feats.images)}
    vectors = feats.embeddings.vectors[[row_of[p] for p in paths]]
    out: list[tuple[str, Any]] = [(STAND_IN, Embeddings(vectors))]
    for label, whiten in (("PCA 64 + whitening", True), ("PCA 64", False)):
        reduced = PCA(n_components=64, whiten=whiten, random_state=0).fit_transform(vectors)
        out.append((f"{STAND_IN}, {label}", Embeddings(l2_normalize(reduced.astype(np.float32)))))
    return out


def _load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def grouping_markdown(result: dict[str, Any]) -> str:
    n = result["subsample"]
    lines = [
        f"Subsample: {n or 'all'} images per set (random, seed 0); load average: {result['load']}.",
        "",
        "| data set | images | features | method | clusters | ARI | NMI | V-measure | seconds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        if "method" not in r:
            continue
        lines.append(
            f"| {r['set']} | {r['images']} | {r['features']} | {r['method']} | {r['clusters']} | "
            f"{r['ari']:.3f} | {r['nmi']:.3f} | {r['v_measure']:.3f} | {r['seconds']} |"
        )
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------- verify benchmark

TOOLS = Path(os.environ.get("DEDUP_SHARED_TOOLS", ROOT.parent / "shared" / "tools"))
WORK = ROOT / "bench" / "work"
CLOTHING = "clothing-dataset-small"
# the one known duplicate pair among the 3,781 clothing photos
CLOTHING_PAIR = (
    "train/shorts/6075b4a5-5b1a-4ce0-aea0-9dbfbca7c35c.jpg",
    "train/skirt/637a56e4-7fa6-4f75-8859-0f8902461554.jpg",
)
# Seeds of the generated sets that are REPORTED; defaults were chosen on seeds 101 and 102 (not used here).
ND_SEEDS = (1, 2, 3)
ND_N_FULL, ND_N_DEFAULT = 500, 200
WEIGHT_FREE = ("phash", "thumb", "color")

# label -> config overrides; every extractor alone and combined, with and without verification.
VERIFY_CONFIGS: dict[str, dict[str, Any]] = {
    "default (vgg16 -> offline fallback phash+thumb+color, verify auto)": {},
    **{
        f"{name} {'+ verify' if verify else 'alone'}": {"features.extractor": name, "verify.enabled": verify}
        for name in (*WEIGHT_FREE, "+".join(WEIGHT_FREE))
        for verify in (False, True)
    },
}


def nd_set(seed: int, n: int) -> Path:
    """The generated near-duplicate set for ``seed`` (built once with make_nd_bench.py, then reused)."""
    out = WORK / f"nd-n{n}-s{seed}"
    if not (out / "ground_truth.csv").is_file():
        import subprocess

        tool = TOOLS / "make_nd_bench.py"
        cmd = [sys.executable, str(tool), "--out", str(out), "--n", str(n), "--seed", str(seed), "--force"]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return out


def clothing_false_positives() -> dict[str, Any]:
    """Pairs flagged at default settings on the real clothing photos (one known duplicate pair)."""
    import itertools

    from dedup import load_config
    from dedup.pipeline import find_duplicates

    root = DATA / CLOTHING
    warnings: list[str] = []
    t0 = time.perf_counter()
    result = find_duplicates([root], load_config(), warn=warnings.append)
    seconds = time.perf_counter() - t0
    pairs = []
    for g in result.groups:
        for a, b in itertools.combinations(g.members, 2):
            pa, pb = (str(Path(result.images[i].path).relative_to(root.resolve())) for i in (a, b))
            pairs.append(sorted([pa, pb]))
    return {
        "images": len(result.images),
        "flagged_pairs": len(pairs),
        "known_pair_found": sorted(CLOTHING_PAIR) in pairs,
        "pairs": pairs,
        "extractor": result.extractor["name"],
        "verified": result.verified,
        "seconds": round(seconds, 1),
        "ms_per_image": round(1000 * seconds / max(1, len(result.images)), 1),
        "stage_seconds": {k: round(v, 1) for k, v in result.seconds.items()},
    }


def bench_verify() -> dict[str, Any]:
    """Pairwise P/R/F1 of each weight-free extractor alone and combined, with and without verification,
    at default settings, on the ground-truth sets and generated clothing sets; false positives on the real
    clothing photos."""
    full = os.environ.get("DEDUP_BENCH_FULL") == "1"
    n = ND_N_FULL if full else ND_N_DEFAULT
    sets: list[tuple[str, Path]] = [
        (name, DATA / folder) for name, (folder, _) in QUALITY_SETS.items() if (DATA / folder).is_dir()
    ]
    if (DATA / CLOTHING).is_dir() and (TOOLS / "make_nd_bench.py").is_file():
        sets += [(f"clothing-nd n={n} seed={seed}", nd_set(seed, n)) for seed in ND_SEEDS]
    rows = []
    for name, path in sets:
        for label, overrides in VERIFY_CONFIGS.items():
            row = {"set": name, "config": label, **scan_and_score(path, path / "ground_truth.csv", overrides)}
            rows.append(row)
            print(
                f"verify: {name:28s} {label:28.28s} P={row['precision']:.3f} R={row['recall']:.3f} "
                f"F1={row['f1']:.3f} ({row['ms_per_image']} ms/img)",
                file=sys.stderr,
            )
    fp = clothing_false_positives() if (DATA / CLOTHING).is_dir() else None
    if fp:
        print(
            f"verify: clothing photos: {fp['flagged_pairs']} pairs flagged, known pair found: "
            f"{fp['known_pair_found']} ({fp['ms_per_image']} ms/img)",
            file=sys.stderr,
        )
    return {"rows": rows, "nd_n": n, "nd_seeds": list(ND_SEEDS), "clothing_false_positives": fp}


def verify_markdown(result: dict[str, Any]) -> str:
    lines = [
        f"Generated sets: `make_nd_bench.py --n {result['nd_n']}` seeds {result['nd_seeds']} "
        "(defaults were chosen on seeds 101, 102). All rows at default settings except the extractor / "
        "`verify.enabled` named in the config column.",
        "",
        "| data set | config | extractor that ran | verified | precision | recall | F1 | ms/image |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        ex = r["extractor"]
        ran = ex["name"] + (" (fallback)" if ex.get("fallback_used") else "")
        lines.append(
            f"| {r['set']} | {r['config']} | {ran} | {'yes' if r['verified'] else 'no'} | "
            f"{r['precision']:.3f} | {r['recall']:.3f} | {r['f1']:.3f} | {r['ms_per_image']} |"
        )
    fp = result.get("clothing_false_positives")
    if fp:
        lines += [
            "",
            f"Clothing photos ({fp['images']} real photos, one known duplicate pair), default settings "
            f"({fp['extractor']}, verified: {fp['verified']}): **{fp['flagged_pairs']} pairs flagged**, "
            f"known pair found: {fp['known_pair_found']}; {fp['ms_per_image']} ms/image "
            f"({fp['stage_seconds']}).",
            "",
        ]
        lines += [f"- `{a}` ~ `{b}`" for a, b in fp["pairs"]]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------ CNN features, calibration

ND_N_CNN = 200


def _cnn_configs() -> dict[str, dict[str, Any]]:
    """label -> overrides: the shared real MobileNet (standing in for VGG16) in the verified pipeline, the
    saved-model path with and without its preprocessing, and fixed vs calibrated thresholds per extractor."""
    mob = {"features.weights": str(MOBILENET_H5)}
    wf = "+".join(WEIGHT_FREE)
    configs: dict[str, dict[str, Any]] = {
        f"{wf} verified (the offline default)": {"features.extractor": wf},
        f"mobilenet+{wf} verified, calibrated (the shape of the VGG16 default)": {
            "features.extractor": f"mobilenet+{wf}",
            **mob,
        },
        "mobilenet alone + verify, sure 0.97 (the old uncalibrated CNN value)": {
            "features.extractor": "mobilenet",
            "verify.enabled": True,
            "verify.sure_threshold": 0.97,
            "cluster.threshold": 0.9,
            **mob,
        },
        "mobilenet alone + verify, calibrated": {
            "features.extractor": "mobilenet",
            "verify.enabled": True,
            **mob,
        },
        "keras-model .keras, preprocessing none, 0.90": {
            "features.extractor": f"keras-model:{MOBILENET_KERAS}",
            "cluster.threshold": 0.9,
        },
        "keras-model .keras, preprocessing tf, 0.90": {
            "features.extractor": f"keras-model:{MOBILENET_KERAS}",
            "features.preprocessing": "tf",
            "cluster.threshold": 0.9,
        },
    }
    singles: dict[str, dict[str, Any]] = {
        "phash": {"features.extractor": "phash"},
        "thumb": {"features.extractor": "thumb"},
        "mobilenet": {"features.extractor": "mobilenet", **mob},
        "onnx MobileNetV2 int8": {"features.extractor": f"onnx:{MOBILENETV2_ONNX}"},
    }
    for name, base in singles.items():
        fixed = 0.9 if name in ("mobilenet", "onnx MobileNetV2 int8") else "auto"
        label = "0.90 (the old fixed default)" if fixed == 0.9 else "its tuned default"
        configs[f"{name} alone, {label}"] = {**base, "cluster.threshold": fixed}
        configs[f"{name} alone, calibrate"] = {**base, "cluster.threshold": "calibrate"}
    configs[f"{wf} verified, calibrate"] = {"features.extractor": wf, "cluster.threshold": "calibrate"}
    return configs


def bench_cnn() -> dict[str, Any]:
    """Real ImageNet features (the shared MobileNet alpha 0.25 standing in for VGG16, the MobileNetV2 int8
    ONNX model) through the verified pipeline, and calibrated against fixed thresholds, on the ground-truth
    sets and generated clothing sets."""
    if not MOBILENET_H5.is_file():
        print(f"cnn: {MOBILENET_H5} missing, skipped", file=sys.stderr)
        return {"rows": []}
    sets: list[tuple[str, Path]] = [
        (name, DATA / folder) for name, (folder, _) in QUALITY_SETS.items() if (DATA / folder).is_dir()
    ]
    if (DATA / CLOTHING).is_dir() and (TOOLS / "make_nd_bench.py").is_file():
        sets += [(f"clothing-nd n={ND_N_CNN} seed={seed}", nd_set(seed, ND_N_CNN)) for seed in ND_SEEDS]
    cache = {"cache.dir": str(WORK / "cnn-cache")}  # features reused across rows; calibrations too
    rows = []
    for name, path in sets:
        for label, overrides in _cnn_configs().items():
            row = {
                "set": name,
                "config": label,
                **scan_and_score(path, path / "ground_truth.csv", {**overrides, **cache}),
            }
            rows.append(row)
            print(
                f"cnn: {name:26s} {label:60.60s} P={row['precision']:.3f} R={row['recall']:.3f} "
                f"F1={row['f1']:.3f} thr={row['threshold']} ({row['ms_per_image']} ms/img)",
                file=sys.stderr,
            )
    return {"rows": rows, "nd_n": ND_N_CNN, "nd_seeds": list(ND_SEEDS), "stand_in": STAND_IN}


def cnn_markdown(result: dict[str, Any]) -> str:
    lines = [
        "MobileNet rows use the small real ImageNet MobileNet v1 alpha 0.25 of ../shared/models standing in "
        "for VGG16 (**not VGG16**: VGG16's ImageNet weights cannot be downloaded here); the onnx rows the "
        "MobileNetV2 int8 ONNX model. Generated sets: `make_nd_bench.py --n "
        f"{result.get('nd_n')}` seeds {result.get('nd_seeds')}. Calibrated thresholds: "
        "`cluster.threshold: calibrate` (or `auto` for CNNs), sample 48, target precision 0.99; the "
        "calibration column gives plain / sure threshold and the sample's estimated precision / recall.",
        "",
        "| data set | config | verified | threshold | calibration (plain / sure, est. P / R) | precision | "
        "recall | F1 | ms/image |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        cals = r.get("calibrated") or {}
        cal = "; ".join(
            f"{n}: {c['plain']:.3f} / {c['sure']:.3f}, {c['precision']:.2f} / {c['recall']:.2f}"
            for n, c in cals.items()
        )
        lines.append(
            f"| {r['set']} | {r['config']} | {'yes' if r['verified'] else 'no'} | {r['threshold']:.3f} | "
            f"{cal or '—'} | {r['precision']:.3f} | {r['recall']:.3f} | {r['f1']:.3f} | {r['ms_per_image']} |"
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
    from dedup.extract import extract_features
    from dedup.features.keras import VGG16Extractor, cpu_has_bf16, model_precision
    from dedup.images import open_image

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


def bench_partitions() -> dict[str, Any]:
    """The partitioned path (dedup.shards, 16 partitions) against the single index on the same synthetic
    vectors, one fresh process each (peak RSS): 100k vectors, and 1M with --full."""
    import subprocess

    sizes = [100_000] + ([1_000_000] if OPTIONS["full"] else [])
    rows = []
    for n in sizes:
        for extra in (["--partitions", "16"], []):
            proc = subprocess.run(
                [sys.executable, str(ROOT / "bench" / "scale.py"), str(n), *extra],
                capture_output=True,
                text=True,
                cwd=ROOT,
            )
            if proc.returncode != 0:
                raise RuntimeError(proc.stderr[-2000:])
            row = {**json.loads(proc.stdout.strip().splitlines()[-1]), "load": _load()}
            row.setdefault("partitions", 1)
            rows.append(row)
            print(f"partitions: {row}", file=sys.stderr)
    return {"rows": rows}


def partitions_markdown(result: dict[str, Any]) -> str:
    lines = [
        "| vectors | partitions | border images | largest partition | total s | "
        "peak RSS MB (main / largest query worker) | planted pairs | recall | precision | load |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['n']:,} | {r['partitions']} | {r.get('border_images', 0):,} | "
            f"{r.get('largest_partition', r['n']):,} | {r['seconds_total']} | "
            f"{r['peak_rss_mb']:.0f} / {r.get('peak_rss_worker_mb', 0):.0f} | "
            f"{r['planted_pairs']:,} | {r['recall']} | {r['precision']} | {r['load']} |"
        )
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------ ray

RAY_HOST = "127.0.0.2"  # loopback; Ray turns 127.0.0.1 into the machine's outward address
RAY_MARK = "DEDUP_BENCH_RAY_NODE"  # every process of a bench node inherits it: how teardown finds them all


def _ray_free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


def _ray_node_pids(tag: str, session: int) -> list[int]:
    """Processes with ``RAY_MARK=tag`` in their environment or in the process session ``session`` (Ray
    starts its agents with an environment of their own)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            env = (entry / "environ").read_bytes().split(b"\0")
            sid = os.getsid(int(entry.name))
        except OSError:
            continue
        if f"{RAY_MARK}={tag}".encode() in env or sid == session:
            pids.append(int(entry.name))
    return pids


class _BenchCluster:
    """A head without CPUs (no actors there) and ``workers`` one-CPU worker nodes on RAY_HOST, each with
    a 100 MB object store, its own ports and the cluster's own auth token; :meth:`down` kills every process
    they started. (tests/test_ray.py starts its cluster the same way.)"""

    def __init__(self, workers: int, token: Path) -> None:
        import tempfile

        self.workers = workers
        self.dir = Path(tempfile.mkdtemp(prefix="dbr", dir="/tmp"))  # short: socket path length limit
        self.port = _ray_free_port()
        self.address = f"{RAY_HOST}:{self.port}"
        # One token for every cluster of the run: this process's Ray reads it once.
        self.auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
        self.procs: list[Any] = []
        self.tags: list[str] = []

    def _start(self, tag: str, cpus: int, *args: str) -> None:
        import subprocess

        ports = [
            a
            for name in ("node-manager", "object-manager", "metrics-export", "runtime-env-agent",
                         "dashboard-agent-listen", "dashboard-agent-grpc")
            for a in (f"--{name}-port", str(_ray_free_port()))
        ]  # fmt: skip
        env = {**os.environ, **self.auth, "RAY_USAGE_STATS_ENABLED": "0", RAY_MARK: f"{self.dir.name}-{tag}"}
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        log = open(self.dir / f"{tag}.log", "wb")  # noqa: SIM115 (closed with the process)
        cmd = [str(Path(sys.executable).with_name("ray")), "start", "--block", "--node-ip-address", RAY_HOST]
        cmd += ["--disable-usage-stats", "--num-cpus", str(cpus), "--object-store-memory", "100000000"]
        self.tags.append(tag)
        self.procs.append(
            subprocess.Popen([*cmd, *ports, *args], env=env, stdout=log, stderr=subprocess.STDOUT,
                             start_new_session=True)
        )  # fmt: skip
        deadline = time.monotonic() + 300
        while b"Ray runtime started" not in (self.dir / f"{tag}.log").read_bytes():
            if self.procs[-1].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ray start of bench node {tag} failed; see {self.dir / (tag + '.log')}")
            time.sleep(0.5)

    def up(self) -> None:
        head = [
            "--head",
            "--port",
            str(self.port),
            "--temp-dir",
            str(self.dir),
            "--include-dashboard",
            "false",
        ]
        self._start("head", 0, *head, "--ray-client-server-port", str(_ray_free_port()))
        for w in range(self.workers):  # one after the other: a node's socket names are taken as it starts
            self._start(f"w{w + 1}", 1, "--address", self.address)

    def down(self) -> None:
        import shutil
        import signal

        nodes = [
            (f"{self.dir.name}-{tag}", proc.pid) for tag, proc in zip(self.tags, self.procs, strict=True)
        ]
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for tag, session in nodes:
                for pid in _ray_node_pids(tag, session):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, sig)
            deadline = time.monotonic() + 10
            while any(_ray_node_pids(t, sid) for t, sid in nodes) and time.monotonic() < deadline:
                time.sleep(0.2)
        for proc in self.procs:
            proc.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


def bench_ray() -> dict[str, Any]:
    """Extraction throughput on a local Ray cluster with 1 and 2 one-CPU worker nodes (all on this 2-core
    machine, shared with other jobs) against the local engine: the same clothing photos, a fresh feature
    cache each run, weight-free extractors (``DEDUP_BENCH_RAY_EXTRACTOR``, default phash+thumb+color)."""
    import shutil
    import tempfile

    from dedup import load_config
    from dedup.pipeline import find_duplicates

    n = None if OPTIONS["full"] else 4 * OPTIONS["extract_n"]
    files = _clothing_files(n)
    extractor = os.environ.get("DEDUP_BENCH_RAY_EXTRACTOR", "phash+thumb+color")
    work = Path(tempfile.mkdtemp(prefix="dedup-bench-ray-"))
    photos = work / "photos"
    photos.mkdir()
    for i, f in enumerate(files):
        (photos / f"{i:05d}{Path(f.path).suffix}").symlink_to(f.path)
    rows = []

    def run(engine: str, workers: int, overrides: dict[str, Any]) -> None:
        cache = work / f"cache-{engine}-{workers}"
        cfg = load_config(
            overrides={
                "features.extractor": extractor,
                "cache.dir": str(cache),
                "scale.engine": engine,
                **overrides,
            }
        )
        t0 = time.perf_counter()
        result = find_duplicates([photos], cfg)
        total = time.perf_counter() - t0
        extract = result.seconds.get("decode_extract", total)
        row = {
            "engine": engine,
            "workers": workers,
            "images": len(result.images),
            "seconds_extract": round(extract, 2),
            "images_per_s": round(len(result.images) / extract, 1),
            "seconds_total": round(total, 2),
            "groups": len(result.groups),
            "load": _load(),
        }
        rows.append(row)
        print(f"ray: {row}", file=sys.stderr)
        shutil.rmtree(cache, ignore_errors=True)

    import secrets

    token = work / "auth_token"
    token.write_text(secrets.token_hex(32))
    try:
        run("local", 0, {})
        for workers in (1, 2):
            cluster = _BenchCluster(workers, token)
            saved = {k: os.environ.get(k) for k in cluster.auth}
            os.environ.update(cluster.auth)  # read by Ray when this process connects (first connection)
            try:
                cluster.up()
                run("ray", workers, {"ray.address": cluster.address, "ray.actors": workers})
            finally:
                cluster.down()
                for k, v in saved.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"extractor": extractor, "rows": rows}


def ray_markdown(result: dict[str, Any]) -> str:
    lines = [
        f"Extractor {result['extractor']}; one machine with 2 CPU cores shared with other jobs: the "
        "worker nodes (1 CPU each) and the driver all run on it.",
        "",
        "| engine | worker nodes | images | extraction s | images/s | scan total s | groups | load |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['engine']} | {r['workers'] or '-'} | {r['images']:,} | {r['seconds_extract']} | "
            f"{r['images_per_s']} | {r['seconds_total']} | {r['groups']} | {r['load']} |"
        )
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------ peers


def _score_groups(groups: list[list[str]], folder: Path, truth_csv: Path) -> dict[str, float]:
    from dedup.metrics import evaluate_report, load_truth
    from dedup.report import Report, ReportGroup, ReportMember

    report = Report(
        paths=(str(folder),),
        groups=tuple(
            ReportGroup(k + 1, g[0], tuple(ReportMember(p) for p in g)) for k, g in enumerate(groups)
        ),
    )
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
        find_duplicates([sets[0][1]], load_config(overrides={"features.extractor": "phash"}))  # warm imports
        for name, folder, truth in sets:
            for label, extra in (
                ("dedup phash (no cache; default: mirror, no rotated views)", {}),
                ("dedup phash (no cache; features.rotations: true)", {"features.rotations": True}),
            ):
                cfg = load_config(overrides={"features.extractor": "phash", "cache.enabled": False, **extra})
                t0 = time.perf_counter()
                result = find_duplicates([folder], cfg)
                seconds = time.perf_counter() - t0
                groups = [[result.images[m].path for m in g.members] for g in result.groups]
                ours = {
                    "set": name,
                    "tool": label,
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


# ------------------------------------------------------------------------------------ speed: the default scan


SIGN = "sign-language-digits"
SPEED_TARGETS = {CLOTHING: 3.0, SIGN: 3.0, "generated nd (make_nd_bench --n 500 --seed 1234)": 2.0}
WARM_TARGET = 0.1  # warm re-scan / cold scan
SCALE_SIZES = (2_000, 20_000)  # look-alike collections: sign-language photos and generated copies
SCALE_COPIES = 9  # generated copies per sign-language photo
SCALE_PER_IMAGE_TARGET = 1.5  # time per image at 20k / at 2k
SCALE_RSS_TARGET_MB = 2048


def _timed_process(cmd: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Wall time and peak RSS of one whole process (interpreter start and imports included)."""
    import subprocess
    import tempfile

    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=ROOT, text=True)
        _, status, usage = os.wait4(proc.pid, 0)  # this process's own rusage (ru_maxrss in kB on Linux)
        seconds = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} failed ({proc.returncode}): {stderr[-2000:]}")
    return {
        "seconds": round(seconds, 2),
        "peak_rss_mb": round(usage.ru_maxrss / 1024),
        "stdout": stdout,
        "stderr": stderr,
    }


def _dedup_scan(folder: Path, env: dict[str, str], report: Path) -> dict[str, Any]:
    """``dedup scan FOLDER --report REPORT`` at default settings, as a user runs it."""
    run = _timed_process([sys.executable, "-m", "dedup", "scan", str(folder), "--report", str(report)], env)
    lines = run.pop("stderr").splitlines()
    run["features"] = next((ln for ln in lines if ln.startswith("Features:")), "")
    run["groups"] = json.loads(report.read_text())["stats"]["groups"]
    run.pop("stdout")
    return run


def _imagededup_process(folder: Path) -> dict[str, Any] | None:
    """imagededup PHash at its default on ``folder``, the whole process (None without bench/.venv-peers)."""
    if not PEERS_PYTHON.exists():
        return None
    run = _timed_process(
        [str(PEERS_PYTHON), str(ROOT / "bench" / "peers.py"), "imagededup", str(folder)], {**os.environ}
    )
    found = json.loads(run.pop("stdout").strip().splitlines()[-1])
    run.pop("stderr")
    run.update(tool=f"{found['tool']} {found['version']}", groups=len(found["groups"]))
    return run


def look_alike_set(n: int) -> Path:
    """``n`` look-alike images: sign-language photos (100 x 100 hands on one background), each with
    :data:`SCALE_COPIES` generated copies (re-encoded, resized, brightened, cropped, mirrored); built once
    under bench/work and reused."""
    import random

    from PIL import Image, ImageEnhance, ImageOps

    out = WORK / f"look-alike-{n}"
    done = out / ".complete"
    if done.is_file():
        return out
    sources = sorted(p for p in (DATA / SIGN).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    originals = sources[: n // (SCALE_COPIES + 1)]
    if len(originals) * (SCALE_COPIES + 1) < n:
        raise RuntimeError(f"{DATA / SIGN} has too few photos for a {n}-image look-alike set")
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(n)
    for k, src in enumerate(originals):
        with Image.open(src) as im:
            photo = im.convert("RGB")
        photo.save(out / f"{k:05}-0.jpg", quality=92)
        for c in range(1, SCALE_COPIES + 1):
            copy = photo
            kind = c % 5
            if kind == 0:
                copy = ImageOps.mirror(copy)
            elif kind == 1:
                side = rng.randint(80, 140)
                copy = copy.resize((side, side), Image.Resampling.BICUBIC)
            elif kind == 2:
                copy = ImageEnhance.Brightness(copy).enhance(rng.uniform(0.8, 1.2))
            elif kind == 3:
                m = rng.randint(3, 8)
                copy = copy.crop((m, m, copy.width - m, copy.height - m))
            copy.save(out / f"{k:05}-{c}.jpg", quality=rng.randint(55, 95))
    done.write_text(f"{len(originals)} originals x {SCALE_COPIES + 1}\n")
    return out


def bench_speed() -> dict[str, Any]:
    """dedup's default scan (cold, then warm) and imagededup PHash, whole processes one after another on the
    same folders; then the default scan on look-alike collections of 2,000 and 20,000 images."""
    import shutil
    import tempfile

    rows: list[dict[str, Any]] = []
    scaling: list[dict[str, Any]] = []
    folders = [
        (CLOTHING, DATA / CLOTHING),
        (SIGN, DATA / SIGN),
        ("generated nd (make_nd_bench --n 500 --seed 1234)", nd_set(1234, 500)),
    ]
    with tempfile.TemporaryDirectory(prefix="dedup-bench-speed-") as tmp:
        work = Path(tmp)
        for name, folder in folders:
            xdg = work / f"xdg-{len(rows)}"
            env = {**os.environ, "XDG_CACHE_HOME": str(xdg)}
            cold = _dedup_scan(folder, env, work / "cold.json")
            warm = _dedup_scan(folder, env, work / "warm.json")
            peer = _imagededup_process(folder)
            row: dict[str, Any] = {
                "set": name,
                "images": _count_images(folder),
                "cold": cold,
                "warm": warm,
                "imagededup": peer,
                "cold_over_peer": round(cold["seconds"] / peer["seconds"], 2) if peer else None,
                "cold_target": SPEED_TARGETS[name],
                "warm_over_cold": round(warm["seconds"] / cold["seconds"], 3),
                "warm_target": WARM_TARGET,
                "load": _load(),
            }
            row["met"] = bool(
                (row["cold_over_peer"] is None or row["cold_over_peer"] <= row["cold_target"])
                and row["warm_over_cold"] <= WARM_TARGET
            )
            rows.append(row)
            shutil.rmtree(xdg, ignore_errors=True)
            print(f"speed: {name}: {json.dumps(row)}", file=sys.stderr)
        for n in SCALE_SIZES:
            folder = look_alike_set(n)
            xdg = work / f"xdg-scale-{n}"
            run = _dedup_scan(folder, {**os.environ, "XDG_CACHE_HOME": str(xdg)}, work / "scale.json")
            shutil.rmtree(xdg, ignore_errors=True)
            images = _count_images(folder)
            scaling.append(
                {
                    "images": images,
                    **run,
                    "ms_per_image": round(1000 * run["seconds"] / images, 2),
                    "load": _load(),
                }
            )
            print(f"speed: look-alike {n}: {json.dumps(scaling[-1])}", file=sys.stderr)
    per_image = scaling[-1]["ms_per_image"] / scaling[0]["ms_per_image"]
    return {
        "rows": rows,
        "scaling": scaling,
        "per_image_ratio": round(per_image, 2),
        "per_image_target": SCALE_PER_IMAGE_TARGET,
        "peak_rss_target_mb": SCALE_RSS_TARGET_MB,
        "scaling_met": bool(
            per_image <= SCALE_PER_IMAGE_TARGET
            and all(s["peak_rss_mb"] < SCALE_RSS_TARGET_MB for s in scaling)
        ),
    }


def _count_images(folder: Path) -> int:
    exts = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
    return sum(1 for p in folder.rglob("*") if p.suffix.lower() in exts and not p.name.startswith("."))


def speed_markdown(result: dict[str, Any]) -> str:
    lines = [
        "| folder | images | dedup cold s | dedup warm s | imagededup PHash s | cold / PHash (target) "
        "| warm / cold (target) | dedup peak RSS MB | load |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        peer = r["imagededup"]
        ratio = f"{r['cold_over_peer']}x (<= {r['cold_target']}x)" if peer else "– (no bench/.venv-peers)"
        lines.append(
            f"| {r['set']} | {r['images']} | {r['cold']['seconds']} | {r['warm']['seconds']} | "
            f"{peer['seconds'] if peer else '–'} | {ratio} | {r['warm_over_cold']} (<= {r['warm_target']}) | "
            f"{r['cold']['peak_rss_mb']} | {r['load']} |"
        )
    lines += [
        "",
        "| look-alike images | dedup cold s | ms / image | peak RSS MB | groups | load |",
        "|---|---|---|---|---|---|",
    ]
    for s in result["scaling"]:
        lines.append(
            f"| {s['images']} | {s['seconds']} | {s['ms_per_image']} | {s['peak_rss_mb']} | {s['groups']} | "
            f"{s['load']} |"
        )
    lines.append(
        f"\nTime per image at {result['scaling'][-1]['images']} / at {result['scaling'][0]['images']}: "
        f"{result['per_image_ratio']}x (target <= {result['per_image_target']}x; peak RSS < "
        f"{result['peak_rss_target_mb']} MB)."
    )
    return "\n".join(lines) + "\n"


def bench_assign() -> dict[str, Any]:
    """A saved index of clothing photos (default offline path, kmeans 10 clusters) served by ``dedup serve``
    in this process: POST /assign latency per image on the warm server, and the throughput of
    ``Index.assign`` and ``Index.update`` on a folder of new images (half re-encoded copies of indexed
    photos, half photos the index does not hold)."""
    import http.client
    import shutil
    import statistics
    import tempfile
    import uuid

    from PIL import Image

    from dedup.config import load_config
    from dedup.saved_index import Index
    from dedup.service import IndexServer

    n_index = 3000 if OPTIONS["full"] else 600
    n_new = 200 if OPTIONS["full"] else 60
    files = _clothing_files(None)
    indexed = files[:n_index]
    fresh = files[n_index : n_index + n_new // 2]
    config = load_config(overrides={"group.method": "kmeans", "group.clusters": 10, "cache.enabled": False})
    with tempfile.TemporaryDirectory(prefix="dedup-bench-assign-") as tmp:
        root, new = Path(tmp) / "photos", Path(tmp) / "new"
        root.mkdir()
        new.mkdir()
        for f in indexed:
            shutil.copy(f.path, root / Path(f.path).name)
        for f in fresh:
            shutil.copy(f.path, new / Path(f.path).name)
        for f in indexed[: n_new - len(fresh)]:
            Image.open(f.path).convert("RGB").save(new / f"q50-{Path(f.path).name}", quality=50)
        t0 = time.perf_counter()
        index = Index.build([root], Path(tmp) / "idx", config)
        build_s = time.perf_counter() - t0
        uploads = sorted(new.iterdir())
        latencies: list[float] = []
        duplicates = 0
        with IndexServer(index, port=0) as server:
            for k, path in enumerate([uploads[0], *uploads]):  # the first request warms up, not counted
                boundary = uuid.uuid4().hex
                body = (
                    (
                        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{path.name}"'
                        "\r\n\r\n"
                    ).encode()
                    + path.read_bytes()
                    + f"\r\n--{boundary}--\r\n".encode()
                )
                conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
                started = time.perf_counter()
                conn.request(
                    "POST", "/assign", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}
                )
                answer = json.loads(conn.getresponse().read())
                elapsed = time.perf_counter() - started
                conn.close()
                if k:
                    latencies.append(elapsed)
                    duplicates += answer.get("duplicate_of") is not None
        t0 = time.perf_counter()
        folder = index.assign([new], cache=False)
        assign_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        update = index.update([new])
        update_s = time.perf_counter() - t0
    latencies.sort()
    return {
        "indexed": len(index.images) - update.added,
        "new_images": len(uploads),
        "copies_among_new": n_new - len(fresh),
        "build_s": round(build_s, 2),
        "latency_ms": {
            "median": round(1000 * statistics.median(latencies), 1),
            "p95": round(1000 * latencies[int(0.95 * (len(latencies) - 1))], 1),
            "max": round(1000 * latencies[-1], 1),
        },
        "http_duplicates_found": duplicates,
        "folder_assign": {
            "seconds": round(assign_s, 2),
            "images_per_s": round(len(folder.assignments) / assign_s, 1),
            "duplicates_found": sum(a.duplicate_of is not None for a in folder.assignments),
        },
        "update": {
            "seconds": round(update_s, 2),
            "added": update.added,
            "images_per_s": round(update.added / update_s, 1),
        },
        "extractors": index.names,
    }


def assign_markdown(result: dict[str, Any]) -> str:
    lat, fa, up = result["latency_ms"], result["folder_assign"], result["update"]
    return (
        f"# assign\n\nIndex of {result['indexed']} clothing photos ({'+'.join(result['extractors'])}, "
        "kmeans 10), "
        f"built in {result['build_s']} s; {result['new_images']} new images ({result['copies_among_new']} "
        "q50 copies of indexed photos).\n\n"
        "| measure | value |\n|---|---|\n"
        f"| POST /assign latency, warm server (median / p95 / max) | {lat['median']} / {lat['p95']} / "
        f"{lat['max']} ms |\n"
        f"| duplicates found over HTTP | {result['http_duplicates_found']} |\n"
        f"| Index.assign on the folder | {fa['seconds']} s, {fa['images_per_s']} img/s, "
        f"{fa['duplicates_found']} duplicates |\n"
        f"| Index.update with the folder | {up['seconds']} s, {up['images_per_s']} img/s "
        f"({up['added']} added) |\n"
        f"\nLoad: {result['load_at_start']} -> {result['load_at_end']}; `{result['command']}`\n"
    )


BENCHMARKS: dict[str, tuple[Callable[[], dict[str, Any]], Callable[[dict[str, Any]], str]]] = {
    "quality": (bench_quality, quality_markdown),
    "grouping": (bench_grouping, grouping_markdown),
    "verify": (bench_verify, verify_markdown),
    "cnn": (bench_cnn, cnn_markdown),
    "peers": (bench_peers, peers_markdown),
    "speed": (bench_speed, speed_markdown),
    "cache": (bench_cache, cache_markdown),
    "scale": (bench_scale, scale_markdown),
    "assign": (bench_assign, assign_markdown),
    "partitions": (bench_partitions, partitions_markdown),
    "ray": (bench_ray, ray_markdown),
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
