"""``dedup similar``, ``evaluate`` and ``tune``: look into a collection without acting on it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from dedup.cli.common import (
    ConfigOpt,
    FeaturesOpt,
    HiddenOpt,
    NoCacheOpt,
    ProgressReporter,
    RecursiveOpt,
    WeightsOpt,
    build_config,
    cache_overrides,
    common_base,
    errors,
    here,
    scan_overrides,
    shown,
    stderr,
    stdout,
    warn,
)
from dedup.errors import InputError
from dedup.report.wording import extractor_label, human_bytes, json_text

app = typer.Typer()


def _pct(similarity: float) -> str:
    return f"{similarity * 100:.1f} %"


@app.command()
def similar(
    image: Annotated[Path, typer.Argument(help="The query image.", show_default=False)],
    search_in: Annotated[
        list[Path],
        typer.Option("--in", help="Folder(s) or image files to search (repeatable).", show_default=False),
    ],
    k: Annotated[int, typer.Option("-k", "--k", help="How many similar images to show.", min=1)] = 10,
    config: ConfigOpt = None,
    features: FeaturesOpt = None,
    weights: WeightsOpt = None,
    recursive: RecursiveOpt = None,
    include_hidden: HiddenOpt = None,
    no_cache: NoCacheOpt = False,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the results as JSON to stdout (progress stays on stderr).")
    ] = False,
) -> None:
    """Show the k images in the searched folders most similar to IMAGE (similarity in percent).

    The same extractors, thresholds and verification as `dedup scan`: the images scan would pair with
    IMAGE come first, marked duplicate; then the most similar others. Similarity is the first extractor's
    cosine similarity x 100 (mirror images and rotations count as in scan); every image is compared
    exactly, so no match depends on -k. IMAGE itself is left out if it lies in the searched folders.

    Example: dedup similar ~/photos/cat.jpg --in ~/photos -k 5
    """
    from dedup.pipeline import find_similar

    with errors():
        cfg = build_config(
            config,
            {
                **scan_overrides(None, features, weights, None, recursive, include_hidden),
                **cache_overrides(no_cache),
            },
        )
        with ProgressReporter(stderr) as progress:
            result = find_similar(image, search_in, cfg, k=k, progress=progress, warn=warn)
        matches: list[dict[str, Any]] = [
            {
                "rank": rank,
                "path": m.image.path,
                "similarity": round(m.similarity, 6),
                "percent": round(m.similarity * 100, 2),
                "mirrored": m.mirrored,
                "duplicate": m.duplicate,
                "evidence": m.evidence,
                "similarities": m.similarities,
                "width": m.image.width,
                "height": m.image.height,
                "bytes": m.image.size,
            }
            for rank, m in enumerate(result.matches, start=1)
        ]
        if json_out:
            data = {
                "query": result.query.path,
                "paths": result.collection.paths,
                "k": k,
                "extractor": result.extractor,
                "verified": result.verified,
                "images": len(result.collection.images),
                "matches": matches,
                "skipped": [{"path": s.path, "reason": s.reason} for s in result.collection.skipped],
            }
            sys.stdout.write(json_text(data, indent=2) + "\n")
            sys.stdout.flush()
            return
        base = common_base(result.collection.paths)
        extractor = extractor_label(result.extractor)
        title = (
            f"Most similar to {here(result.query.path)} among {len(result.collection.images)} images"
            + (f" under {base}" if base else "")
            + f" ({extractor})"
        )
        table = Table(title=escape(title), title_justify="left")
        table.add_column("#", justify="right")
        table.add_column("Image", overflow="fold")
        table.add_column("Similarity", justify="right")
        table.add_column("Dup", justify="center")
        table.add_column("Size", justify="right")
        for m in matches:
            table.add_row(
                str(m["rank"]),
                escape(shown(m["path"], base)) + (" [yellow](mirrored)[/]" if m["mirrored"] else ""),
                _pct(m["similarity"]),
                "[green]yes[/]" if m["duplicate"] else "",
                f"{m['width']}×{m['height']}, {human_bytes(m['bytes'])}",
            )
        stdout.print(table)
        if not matches:
            stdout.print("No images to compare with.", highlight=False)
        if result.collection.skipped:
            stdout.print(
                f"{len(result.collection.skipped)} files skipped (unreadable or not images).", highlight=False
            )


METRIC_ROWS = (
    ("pairwise_precision", "Pairwise precision"),
    ("pairwise_recall", "Pairwise recall"),
    ("pairwise_f1", "Pairwise F1"),
    ("adjusted_rand", "Adjusted Rand index"),
    ("normalized_mutual_info", "Normalised mutual information"),
    ("fowlkes_mallows", "Fowlkes–Mallows"),
    ("homogeneity", "Homogeneity"),
    ("completeness", "Completeness"),
    ("v_measure", "V-measure"),
    ("bcubed_precision", "B-cubed precision"),
    ("bcubed_recall", "B-cubed recall"),
    ("bcubed_f1", "B-cubed F1"),
)


def evaluationwarnings(result: dict[str, Any]) -> list[str]:
    """Human warnings about how well a truth file covered a report (``metrics.evaluate_report`` output)."""
    cov, excluded = result["coverage"], result["excluded"]
    notes = []
    if cov["in_report_groups"] == 0 and result["metrics"]["predicted_pairs"] == 0:
        hint = " (try --match name)" if result["match"] == "path" else ""
        notes.append(
            f"none of the {cov['truth_items']} truth items is in a report group: the paths probably do not "
            f"match the report's{hint}"
        )
    if cov.get("not_scanned"):
        notes.append(
            f"{len(cov['not_scanned'])} truth items were never scanned (not in the report's images nor "
            f"skipped) and count as singletons, e.g. {cov['not_scanned'][0]}"
        )
    if cov["outside_scanned_paths"]:
        notes.append(
            f"{len(cov['outside_scanned_paths'])} truth items lie outside the scanned paths, e.g. "
            f"{cov['outside_scanned_paths'][0]}"
        )
    if cov.get("skipped_by_scan"):
        notes.append(
            f"{len(cov['skipped_by_scan'])} truth items were skipped by the scan as unreadable, e.g. "
            f"{cov['skipped_by_scan'][0]}"
        )
    if excluded["not_skipped"]:
        notes.append(
            f"{len(excluded['not_skipped'])} of {excluded['rows']} rows of group "
            f"{'/'.join(excluded['group_ids'])} were not skipped by the scan, e.g. "
            f"{excluded['not_skipped'][0]}"
        )
    if excluded["grouped"]:
        notes.append(
            f"{len(excluded['grouped'])} rows of group {'/'.join(excluded['group_ids'])} ended up in a "
            f"duplicate group, e.g. {excluded['grouped'][0]}"
        )
    return notes


@app.command()
def evaluate(
    report: Annotated[Path, typer.Argument(help="JSON report written by dedup scan.", show_default=False)],
    truth: Annotated[
        Path,
        typer.Option(
            "--truth",
            help="Ground-truth CSV with columns path,group_id (paths absolute or relative to the CSV).",
            show_default=False,
        ),
    ],
    match: Annotated[
        str,
        typer.Option(
            "--match", help="Match truth rows to report paths by full path or file name: path | name."
        ),
    ] = "path",
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="Also write all scores as JSON to this file.", show_default=False
        ),
    ] = None,
) -> None:
    """Score a report's groups against a ground truth: pairwise P/R/F1, ARI, NMI, B-cubed and more.

    Images in no group count as singletons. Rows whose group_id is CORRUPT are not scored; they must be
    among the report's skipped files.

    Example: dedup evaluate report.json --truth truth.csv --output scores.json
    """
    from dedup import metrics
    from dedup.report.files import write_text
    from dedup.report.schema import load_report

    with errors():
        if match not in metrics.MATCH_MODES:
            raise InputError(f"--match must be one of {', '.join(metrics.MATCH_MODES)}, not {match!r}")
        if output is not None and not output.parent.is_dir():
            raise InputError(f"cannot write {output}: folder {output.parent} does not exist")
        data = load_report(report)
        result = metrics.evaluate_report(data, metrics.load_truth(truth, match), match)
        m, cov = result["metrics"], result["coverage"]
        table = Table(title=f"dedup evaluate ({m['items']} items, match by {match})", title_justify="left")
        table.add_column("Measure", style="bold")
        table.add_column("Score", justify="right")
        for key, label in METRIC_ROWS:
            table.add_row(label, f"{m[key]:.4f}")
        table.add_row(
            "Pairs: true / predicted / correct",
            f"{m['true_pairs']} / {m['predicted_pairs']} / {m['correct_pairs']}",
            end_section=True,
        )
        table.add_row("Groups: true / predicted", f"{m['true_groups']} / {m['predicted_groups']}")
        table.add_row("Truth items in a report group", f"{cov['in_report_groups']} of {cov['truth_items']}")
        table.add_row("Report members not in the truth", str(result["unmatched"]["count"]))
        ex = result["excluded"]
        if ex["rows"]:
            table.add_row(
                f"{'/'.join(ex['group_ids'])} rows skipped by the scan", f"{ex['skipped']} of {ex['rows']}"
            )
        stdout.print(table)
        for note in evaluationwarnings(result):
            warn(note)
        if output is not None:
            write_text(output, json_text(result, indent=2) + "\n", what="scores")
            stdout.print(f"Scores written to {output}", highlight=False, soft_wrap=True)


def _score(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


@app.command()
def tune(
    paths: Annotated[
        list[Path], typer.Argument(help="Folders and/or image files to analyse.", show_default=False)
    ],
    config: ConfigOpt = None,
    features: FeaturesOpt = None,
    weights: WeightsOpt = None,
    recursive: RecursiveOpt = None,
    include_hidden: HiddenOpt = None,
    no_cache: NoCacheOpt = False,
    lowest: Annotated[
        float | None,
        typer.Option(
            "--min",
            help="Lowest threshold tried (default: verified scans 0.80, vgg16 0.70, phash 0.50).",
            show_default=False,
        ),
    ] = None,
    highest: Annotated[
        float | None,
        typer.Option(
            "--max",
            help="Highest threshold tried (default: verified scans 1.00, vgg16 0.99, phash 0.96).",
            show_default=False,
        ),
    ] = None,
    step: Annotated[
        float | None,
        typer.Option(
            "--step",
            help="Threshold step (default: verified 0.01, vgg16 0.01, phash 0.02).",
            show_default=False,
        ),
    ] = None,
    truth: Annotated[
        Path | None,
        typer.Option(
            "--truth",
            help="Ground-truth CSV (path, group_id; as for `dedup evaluate`): precision / recall / F1 per "
            "threshold, in the table and the plot.",
            show_default=False,
        ),
    ] = None,
    plot: Annotated[
        Path | None,
        typer.Option("--plot", help="Draw the curves to FILE.svg or FILE.png.", show_default=False),
    ] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the sweep as JSON to stdout (progress stays on stderr).")
    ] = False,
) -> None:
    """Sweep the threshold the scan uses over features extracted once, and suggest one.

    The same extractors, views and verification as `dedup scan`: with verification (the default
    combination) the sweep is of verify.sure_threshold and each row is exactly the scan with that value;
    a single extractor sweeps cluster.threshold. For each threshold: duplicate groups and images, the
    silhouette, Davies–Bouldin and Calinski–Harabasz scores of the grouping, and with --truth precision,
    recall and F1; plus the k-distance curve and its elbow.

    Example: dedup tune ~/photos --features phash --plot tune.svg
    """
    from dedup import tune as tuning
    from dedup.plot import check_plot_destination, write_plot

    with errors():
        cfg = build_config(
            config,
            {
                **scan_overrides(None, features, weights, None, recursive, include_hidden),
                **cache_overrides(no_cache),
            },
        )
        if plot is not None:
            check_plot_destination(plot)
        with ProgressReporter(stderr) as progress:
            result = tuning.tune(
                paths,
                cfg,
                lowest=lowest,
                highest=highest,
                step=step,
                truth=truth,
                progress=progress,
                warn=warn,
            )
        if plot is not None:
            write_plot(tuning.plot_panels(result), plot)
        console = stderr if json_out else stdout
        table = Table(
            title=f"dedup tune ({result.images} images, {result.extractor['name']})", title_justify="left"
        )
        table.caption = (
            "Dups = duplicate images, Splits = chain splits, Silh. = silhouette, DB = Davies–Bouldin, "
            "CH = Calinski–Harabasz (scores on grouped images only)"
        )
        scored = truth is not None
        columns = ["Threshold", "Groups", "Dups", "Grouped", "Splits", "Silh.", "DB", "CH"]
        for name in columns + (["P", "R", "F1"] if scored else []):
            table.add_column(name, justify="right")
        for row in result.rows:
            mark = row.threshold == result.suggested
            extra = [_score(row.precision), _score(row.recall), _score(row.f1)] if scored else []
            table.add_row(
                ("[bold green]▶ " if mark else "") + f"{row.threshold:.3f}" + ("[/]" if mark else ""),
                str(row.groups),
                str(row.duplicates),
                str(row.grouped),
                str(row.chain_splits),
                _score(row.silhouette),
                _score(row.davies_bouldin),
                _score(row.calinski_harabasz, 1),
                *extra,
            )
        console.print(table)
        kd = result.k_distance
        if result.elbow_index is not None:
            console.print(
                f"k-distance curve (k = {result.k}, {len(kd)} images): elbow at image "
                f"{result.elbow_index + 1}, "
                f"cosine distance {kd[result.elbow_index]:.3f} = threshold {result.elbow_threshold:.3f}",
                highlight=False,
                soft_wrap=True,
            )
        else:
            console.print(f"k-distance curve (k = {result.k}, {len(kd)} images): no elbow", highlight=False)
        console.print(
            f"[bold]Suggested {result.key}: {result.suggested:.3f}[/] ({result.rule}). "
            + escape(result.reason),
            highlight=False,
            soft_wrap=True,
        )
        if plot is not None:
            console.print(f"Plot written to {plot}", highlight=False, soft_wrap=True)
        if json_out:
            sys.stdout.write(json_text(result.to_dict(), indent=2) + "\n")
            sys.stdout.flush()
