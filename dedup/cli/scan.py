"""``dedup scan``: report near-duplicates (a dry run) to the terminal and to JSON / CSV / HTML files."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from dedup.cli.common import (
    ConfigOpt,
    EngineOpt,
    FeaturesOpt,
    HiddenOpt,
    KeepOpt,
    NoCacheOpt,
    PartitionsOpt,
    ProgressReporter,
    RayAddressOpt,
    RecursiveOpt,
    ReferenceOpt,
    ThresholdOpt,
    WeightsOpt,
    build_config,
    cache_overrides,
    common_base,
    errors,
    scale_overrides,
    scan_overrides,
    shown,
    stderr,
    stdout,
    warn,
)
from dedup.cli.review import NoBrowserOpt, serve
from dedup.errors import InputError
from dedup.report.schema import Report
from dedup.report.wording import extractor_label, human_bytes

app = typer.Typer()


@app.command()
def scan(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Folders and/or image files to scan (optional with --across).", show_default=False
        ),
    ] = None,
    config: ConfigOpt = None,
    threshold: ThresholdOpt = None,
    features: FeaturesOpt = None,
    weights: WeightsOpt = None,
    keep: KeepOpt = None,
    recursive: RecursiveOpt = None,
    include_hidden: HiddenOpt = None,
    report: Annotated[
        list[Path] | None,
        typer.Option(
            "--report",
            "-r",
            help="Write the report to FILE.json, FILE.csv or FILE.html (repeatable; HTML is one "
            "self-contained page with thumbnails and a map).",
            show_default=False,
        ),
    ] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the JSON report to stdout (progress stays on stderr).")
    ] = False,
    top: Annotated[int, typer.Option("--top", help="Largest groups shown in the summary.", min=0)] = 10,
    no_cache: NoCacheOpt = False,
    reference: ReferenceOpt = None,
    across: Annotated[
        tuple[Path, Path] | None,
        typer.Option(
            "--across",
            help="Two folders A B: report only pairs of an image of A with one of B (train/test leakage), "
            "with how many images of B have a duplicate in A; A's images are kept.",
            show_default=False,
        ),
    ] = None,
    review: Annotated[
        bool,
        typer.Option(
            "--review",
            help="Then review the groups in the browser (dedup review): the JSON --report, or a report "
            "in $XDG_STATE_HOME/dedup/reviews/ when none is given.",
        ),
    ] = False,
    no_browser: NoBrowserOpt = False,
    engine: EngineOpt = None,
    partitions: PartitionsOpt = None,
    ray_address: RayAddressOpt = None,
) -> None:
    """Report near-duplicate images (dry run: nothing is modified, moved or created except --report files).

    Example: dedup scan ~/photos --report duplicates.json

    Example: dedup scan ~/photos --reference ~/photos/originals

    Example: dedup scan --across data/train data/test --report leakage.json

    Example: dedup scan ~/photos --review

    Example: dedup scan /shared/photos --engine ray --ray-address 10.0.0.5:6379 --partitions 16
    """
    from dedup import curate
    from dedup.report.files import to_json

    if not paths and not across:
        raise typer.BadParameter("give the folders to scan, or --across A B", param_hint="PATH...")
    reports = list(report or [])
    with errors():
        review_json = next((r for r in reports if r.suffix.lower() == ".json"), None)
        if review and review_json is None:
            review_json = review_report_path()
            reports.append(review_json)
        cfg = build_config(
            config,
            {
                **scan_overrides(threshold, features, weights, keep, recursive, include_hidden, reference),
                **cache_overrides(no_cache),
                **scale_overrides(engine, partitions, ray_address),
                "cluster.across": [str(a) for a in across] if across else None,
            },
        )
        with ProgressReporter(stderr) as progress:
            outcome = curate.scan(paths or [], cfg, reports=reports, progress=progress, warn=warn)
        console = stderr if json_out else stdout
        render_summary(outcome.report, console, top=top)
        src = outcome.result.sources
        if src is not None:
            stderr.print(
                f"Features: {src.cached} from the cache, {src.reused} reused by content, "
                f"{src.identical} byte-identical copies, {src.extracted} extracted.",
                highlight=False,
                soft_wrap=True,
            )
        for dest in outcome.written:
            console.print(f"Report written to {dest}", highlight=False, soft_wrap=True)
        if json_out:
            sys.stdout.write(to_json(outcome.report))
            sys.stdout.flush()
        if review and review_json is not None:
            serve(
                review_json,
                config=config,
                reference=reference,
                output=None,
                to=None,
                host="127.0.0.1",
                port=0,
                browser=not no_browser,
            )


def review_report_path() -> Path:
    """Where ``scan --review`` writes its report when no JSON ``--report`` is given:
    ``$XDG_STATE_HOME/dedup/reviews/scan-<UTC time>.json`` (the folder is created)."""
    from datetime import datetime, timezone

    from dedup.ignore import default_path

    folder = default_path().parent / "reviews"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create {folder}: {e.strerror or e}") from e
    return folder / f"scan-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%SZ')}.json"


def render_summary(report: Report, console: Console, *, top: int) -> None:
    """Summary table of a scan report, then its ``top`` largest groups."""
    stats = report.stats
    table = Table(title="dedup scan", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_row("Images found", str(stats["images"] + stats["skipped"]))
    table.add_row("Skipped", str(stats["skipped"]))
    for reason, count in sorted(report.skipped_reasons().items(), key=lambda kv: (-kv[1], kv[0])):
        table.add_row(f"  {escape(reason)}", str(count))
    if stats.get("blank"):
        table.add_row("Blank images (not compared)", str(stats["blank"]))
    table.add_row("Duplicate groups", str(stats["groups"]))
    table.add_row("Duplicate images", str(stats["duplicates"]))
    table.add_row("Reclaimable", human_bytes(stats["reclaimable_bytes"]))
    table.add_row("Chain splits", str(stats["chain_splits"]))
    across = stats.get("across")
    if isinstance(across, dict):
        table.add_row("Images of B with a duplicate in A", f"{across['b_with_duplicate_in_a']}")
    table.add_row("Extractor", extractor_label(report.extractor))
    params = report.params
    if params.get("verified"):
        candidates = ", ".join(f"{n} ≥ {t['candidate']:.2f}" for n, t in params.get("thresholds", {}).items())
        table.add_row("Decision", f"keypoints verified (candidates: {candidates})")
    else:
        table.add_row("Threshold (cosine similarity)", f"{params['threshold']:.3f}")
    console.print(table)
    if stats["images"] + stats["skipped"] == 0:
        where = ", ".join(shown(p, None) for p in report.paths)
        console.print(f"No images found under {escape(where)}.", highlight=False, soft_wrap=True)
    if isinstance(across, dict):
        console.print(
            f"Leakage: {across['b_with_duplicate_in_a']} of {across['b_images']} images of {across['b']} "
            f"have a duplicate in {across['a']} ({across['a_images']} images); only pairs between the two "
            "are reported.",
            highlight=False,
            soft_wrap=True,
        )
    if report.reference:
        console.print(
            f"Always kept (reference folders): {', '.join(report.reference)}", highlight=False, soft_wrap=True
        )
    if not report.groups or top == 0:
        return
    base = common_base(report.paths)
    title = f"Largest groups (top {min(top, len(report.groups))} of {len(report.groups)})"
    groups = Table(title=title + (f", paths under {base}" if base else ""), title_justify="left")
    groups.add_column("Group", justify="right")
    groups.add_column("Image", overflow="fold")
    groups.add_column("Similarity", justify="right")
    groups.add_column("Size", justify="right")
    for g in report.groups[:top]:
        for i, m in enumerate(g.members):
            kept = m.path == g.keep
            groups.add_row(
                str(g.id) if i == 0 else "",
                ("[green]keep[/] " if kept else "     ") + escape(shown(m.path, base)),
                "—" if kept else f"{m.similarity_to_keep:.3f}",
                f"{m.width}×{m.height}, {human_bytes(m.bytes or 0)}",
                end_section=i == len(g.members) - 1,
            )
    console.print(groups)
