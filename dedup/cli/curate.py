"""``dedup prune``, ``group`` and ``undo``: act on duplicate groups and clusters, journaled and undoable."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from dedup.cli.common import (
    ActionPathsArg,
    ConfigOpt,
    DryRunOpt,
    FeaturesOpt,
    FromReportOpt,
    HiddenOpt,
    KeepOpt,
    NoCacheOpt,
    ProgressReporter,
    RecursiveOpt,
    ReferenceOpt,
    ThresholdOpt,
    ToOpt,
    WeightsOpt,
    build_config,
    cache_overrides,
    errors,
    fail_if_incomplete,
    here,
    scan_overrides,
    stderr,
    stdout,
    usage_error,
    warn,
)
from dedup.errors import InputError
from dedup.report.schema import Report, cluster_folders
from dedup.report.wording import display_text, extractor_label, human_bytes, json_text

if TYPE_CHECKING:
    from dedup.actions import Plan
    from dedup.curate import Outcome

app = typer.Typer()


@app.command()
def prune(
    paths: ActionPathsArg = None,
    to: ToOpt = None,
    delete: Annotated[
        bool, typer.Option("--delete", help="Delete the duplicates instead of moving them (irreversible).")
    ] = False,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Delete without asking (needed off a terminal).")
    ] = False,
    keep: KeepOpt = None,
    dry_run: DryRunOpt = False,
    from_report: FromReportOpt = None,
    config: ConfigOpt = None,
    threshold: ThresholdOpt = None,
    features: FeaturesOpt = None,
    weights: WeightsOpt = None,
    recursive: RecursiveOpt = None,
    include_hidden: HiddenOpt = None,
    no_cache: NoCacheOpt = False,
    reference: ReferenceOpt = None,
) -> None:
    """Keep one image per duplicate group; move the others to a quarantine folder (or delete them).

    Quarantined files mirror their path relative to the scanned folder; every change is journaled in a
    manifest inside the quarantine folder, and `dedup undo MANIFEST` puts everything back. Images under a
    --reference folder are never moved or deleted.

    Example: dedup prune ~/photos --to ~/photos-quarantine --dry-run

    Example: dedup prune --from-report review.reviewed.json --to ~/photos-quarantine
    """
    from dedup import curate

    if delete == (to is not None):
        raise usage_error(
            "give the quarantine folder with --to QUARANTINE_DIR, or --delete", "--to / --delete"
        )
    if not paths and from_report is None:
        raise usage_error("give the folders to scan, or --from-report REPORT.json", "PATH")

    def refuse_without_terminal() -> None:
        if not yes and not sys.stdin.isatty():
            raise InputError(
                "--delete removes files for good and there is no terminal to confirm on; "
                "add --yes (or use --to QUARANTINE_DIR, which 'dedup undo' can reverse)"
            )

    def confirm(plan: Plan) -> None:
        if yes:
            return
        refuse_without_terminal()
        typer.confirm(
            f"Permanently delete {len(plan.operations)} files ({human_bytes(plan.bytes_freed)})? "
            "'dedup undo' cannot restore deleted files",
            abort=True,
            err=True,
        )

    with errors():
        if delete and not dry_run:
            refuse_without_terminal()  # now, not after a long scan
        cfg = build_config(
            config,
            {
                **scan_overrides(threshold, features, weights, keep, recursive, include_hidden, reference),
                **cache_overrides(no_cache),
            },
        )
        with ProgressReporter(stderr) as progress:
            outcome = curate.prune(
                paths,
                cfg,
                to=to,
                delete=delete,
                from_report=from_report,
                keep_policy=cfg.keep.policy if (keep is not None or config is not None) else None,
                dry_run=dry_run,
                confirm=confirm,
                progress=progress,
                warn=warn,
            )
        render_outcome(outcome, dry_run=dry_run)


@app.command()
def group(
    paths: ActionPathsArg = None,
    to: Annotated[
        Path | None,
        typer.Option(
            "--to", help="Output folder for group-NNNN/ and unique/ (or cluster-NNNN/).", show_default=False
        ),
    ] = None,
    move: Annotated[bool, typer.Option("--move", help="Move the images into the folders.")] = False,
    copy: Annotated[bool, typer.Option("--copy", help="Copy the images (the default).")] = False,
    link: Annotated[bool, typer.Option("--link", help="Make symbolic links to the images.")] = False,
    only_duplicates: Annotated[
        bool, typer.Option("--only-duplicates", help="No unique/ folder for images in no group.")
    ] = False,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Print the plan as a table and as JSON; touch nothing except --report files."
        ),
    ] = False,
    from_report: FromReportOpt = None,
    config: ConfigOpt = None,
    threshold: ThresholdOpt = None,
    features: FeaturesOpt = None,
    weights: WeightsOpt = None,
    keep: KeepOpt = None,
    recursive: RecursiveOpt = None,
    include_hidden: HiddenOpt = None,
    method: Annotated[
        str | None,
        typer.Option(
            "--method",
            "-m",
            help="dbscan: duplicate groups + unique/ (default) | agglomerative | kmeans: every image "
            "into a cluster-NNNN/ folder.",
            show_default=False,
        ),
    ] = None,
    clusters: Annotated[
        str | None,
        typer.Option(
            "--clusters",
            "-k",
            help="agglomerative/kmeans: number of clusters, or auto (best silhouette over "
            "group.auto_min..auto_max; the curve is printed). Default: auto.",
            show_default=False,
        ),
    ] = None,
    distance_threshold: Annotated[
        float | None,
        typer.Option(
            "--distance-threshold",
            help="agglomerative: stop merging at this cosine distance (0..2), instead of --clusters.",
            show_default=False,
        ),
    ] = None,
    linkage: Annotated[
        str | None,
        typer.Option(
            "--linkage", help="agglomerative linkage: average (default) | complete.", show_default=False
        ),
    ] = None,
    names: Annotated[
        Path | None,
        typer.Option(
            "--names",
            help="names.yaml (cluster id -> name, as written by a previous run) whose names become the "
            "folder names.",
            show_default=False,
        ),
    ] = None,
    report: Annotated[
        list[Path] | None,
        typer.Option(
            "--report",
            "-r",
            help="Also write the report to FILE.json, FILE.csv or FILE.html (repeatable; with a cluster "
            "method the HTML shows a sample grid per cluster). Outside OUT_DIR or directly in it; undo "
            "leaves it.",
            show_default=False,
        ),
    ] = None,
    no_cache: NoCacheOpt = False,
    reference: ReferenceOpt = None,
) -> None:
    """Sort images into one folder per duplicate group (group-0001/ is the largest), plus unique/ -- or,
    with --method agglomerative|kmeans, every image into a cluster folder (cluster-0001/ is the largest),
    with clusters.csv and an editable names.yaml in the output folder.

    Example: dedup group ~/photos --to ~/photos-by-group --link

    Example: dedup group ~/photos --to ~/sorted --method kmeans --clusters auto

    Example: dedup group ~/photos --to ~/sorted -m kmeans -k 20 --dry-run --report clusters.html
    """
    from dedup import curate

    if to is None:
        raise usage_error("give the output folder with --to OUT_DIR", "--to")
    if move + copy + link > 1:
        raise usage_error("give only one of --move, --copy, --link", "--move / --copy / --link")
    if not paths and from_report is None:
        raise usage_error("give the folders to scan, or --from-report REPORT.json", "PATH")
    with errors():
        overrides = scan_overrides(threshold, features, weights, keep, recursive, include_hidden, reference)
        overrides.update(
            {
                "group.method": method,
                "group.clusters": clusters,
                "group.distance_threshold": distance_threshold,
                "group.linkage": linkage,
                **cache_overrides(no_cache),
            }
        )
        cfg = build_config(config, overrides)
        with ProgressReporter(stderr) as progress:
            outcome = curate.group(
                paths,
                cfg,
                to=to,
                mode="move" if move else "link" if link else "copy",
                only_duplicates=only_duplicates,
                from_report=from_report,
                names=names,
                reports=report or [],
                dry_run=dry_run,
                progress=progress,
                warn=warn,
            )
        if outcome.report.clusters is not None:
            render_clustering(outcome.report, stderr)
        if outcome.cluster_files is not None:
            csv_path, names_path = outcome.cluster_files
            stdout.print(f"Cluster of every image: {csv_path}", highlight=False, soft_wrap=True)
            stdout.print(
                f"Cluster names (edit, then re-run with --names): {names_path}",
                highlight=False,
                soft_wrap=True,
            )
        for dest in outcome.reports:
            (stderr if dry_run else stdout).print(
                f"Report written to {dest} (not part of the undo journal)", highlight=False, soft_wrap=True
            )
        render_outcome(outcome, dry_run=dry_run)


@app.command()
def undo(
    manifest: Annotated[Path, typer.Argument(help="Manifest printed by prune or group.", show_default=False)],
) -> None:
    """Reverse a prune or group run: put moved files back, remove the copies and links it made.

    Safe to run twice, and after an interrupted run or an interrupted undo.

    Example: dedup undo ~/photos-quarantine/dedup-prune-move-20250101T120000Z.jsonl
    """
    from dedup import actions

    with errors():
        with ProgressReporter(stderr) as progress:
            result = actions.undo(manifest, progress=progress)
        table = Table(title="dedup undo", show_header=False, title_justify="left")
        table.add_column(style="bold")
        table.add_column(justify="right")
        table.add_row("Restored", str(len(result.restored)))
        table.add_row("Removed copies/links", str(len(result.removed)))
        table.add_row("Nothing to undo", str(result.unchanged))
        table.add_row("Cannot be restored (deleted)", str(len(result.unrestorable)))
        table.add_row("Failed", str(len(result.failed)))
        stdout.print(table)
        for note in result.notes:
            stderr.print(f"Note: {escape(display_text(note))}", highlight=False, soft_wrap=True)
        if result.unrestorable:
            stderr.print(
                f"{len(result.unrestorable)} files were deleted with --delete and cannot be restored.",
                highlight=False,
            )
        fail_if_incomplete(
            [],
            result.failed + [(p, "deleted permanently") for p in result.unrestorable],
            len(result.restored) + len(result.removed) + result.unchanged,
        )


# ------------------------------------------------------------------------------------------ rendering


def render_outcome(outcome: Outcome, *, dry_run: bool) -> None:
    """A dry run's plan (table on stderr, JSON on stdout), or what applying it did; exit 1 when anything
    was skipped or failed."""
    plan = outcome.plan
    if dry_run:
        render_plan(plan, stderr)
        sys.stdout.write(json_text(plan.to_dict(), indent=2) + "\n")
        sys.stdout.flush()
        return
    for note in plan.notes if plan.command == "group" else []:
        stderr.print(f"Note: {escape(display_text(note))}", highlight=False, soft_wrap=True)
    if outcome.result is not None and not outcome.result.images and not outcome.result.skipped:
        stderr.print(
            f"No images found under {escape(', '.join(here(p) for p in outcome.report.paths))}.",
            highlight=False,
        )
    if outcome.resumed is not None:
        stderr.print(
            f"Resumed the interrupted run recorded in {outcome.resumed}", highlight=False, soft_wrap=True
        )
    if plan.done_before:
        earlier = sorted({s.reason for s in plan.done_before})
        stderr.print(
            f"{len(plan.done_before)} files of the report were already handled by an earlier run: "
            + "; ".join(escape(display_text(e)) for e in earlier),
            highlight=False,
            soft_wrap=True,
        )
    result = outcome.applied
    if result is None:
        stdout.print("Nothing to do.", highlight=False)
        fail_if_incomplete(plan.skipped, [], len(plan.skipped))
        return
    c = result.counts()
    table = Table(title=f"dedup {plan.command}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(justify="right")
    rows = [
        ("Kept", c["kept"]),
        ("Moved", c["moved"]),
        ("Copied", c["copied"]),
        ("Linked", c["linked"]),
        ("Deleted", c["deleted"]),
        ("Done by the interrupted run", c["already_done"]),
        ("Skipped", c["skipped"]),
        ("Failed", c["failed"]),
    ]
    for label, value in rows:
        if value or label in ("Kept", "Skipped", "Failed") or (label == "Moved" and plan.mode == "move"):
            table.add_row(label, str(value))
    table.add_row("Bytes freed", human_bytes(c["bytes_freed"]))
    stdout.print(table)
    stdout.print(f"Manifest: {result.manifest}", highlight=False, soft_wrap=True)
    if plan.mode == "delete":
        stdout.print("Deleted files cannot be restored; the manifest lists them.", highlight=False)
    else:
        stdout.print(
            f"To reverse: dedup undo {shlex.quote(str(result.manifest))}", highlight=False, soft_wrap=True
        )
    fail_if_incomplete(
        result.skipped,
        [(f.op.src, f.reason) for f in result.failed],
        len(result.plan.operations) + len(result.skipped),
    )


def render_plan(plan: Plan, console: Console) -> None:
    """Table of a plan: every operation, then what is left alone and why."""
    table = Table(title=f"dedup {plan.command} plan ({plan.mode})", title_justify="left")
    table.add_column("Group", justify="right")
    table.add_column("Operation")
    table.add_column("File", overflow="fold")
    table.add_column("To", overflow="fold")
    table.add_column("Size", justify="right")
    for op in plan.operations:
        table.add_row(
            "" if op.group is None else str(op.group),
            op.op + (" (link)" if op.symlink else ""),
            escape(here(op.src)),
            escape(here(op.dst)) if op.dst else "—",
            human_bytes(op.bytes),
        )
    console.print(table)
    if plan.skipped:
        skipped = Table(title="Left alone", title_justify="left")
        skipped.add_column("File", overflow="fold")
        skipped.add_column("Reason", overflow="fold")
        for s in plan.skipped:
            skipped.add_row(escape(here(s.path)), escape(display_text(s.reason)))
        console.print(skipped)
    for note in plan.notes:
        console.print(f"Note: {escape(display_text(note))}", highlight=False, soft_wrap=True)
    if plan.done_before:
        console.print(
            f"{len(plan.done_before)} files were already handled by an earlier run (not a failure).",
            highlight=False,
        )
    summary = plan.summary()
    console.print(
        f"{summary['operations']} operations, {summary['kept']} groups keep their image, "
        f"{summary['skipped']} files left alone, {human_bytes(summary['bytes_freed'])} freed. "
        "Dry run: nothing was changed.",
        highlight=False,
        soft_wrap=True,
    )


def render_clustering(report: Report, console: Console) -> None:
    """The ``--clusters auto`` curve (if any), then every cluster's folder and size."""
    info = report.clustering or {}
    params = info.get("params", {})
    if info.get("curve"):
        curve = Table(
            title=f"Choosing the number of clusters ({info['method']}; silhouette on "
            f"{params.get('silhouette_sample')} images, cosine)",
            title_justify="left",
        )
        curve.add_column("Clusters", justify="right")
        curve.add_column("Silhouette", justify="right")
        curve.add_column("Inertia", justify="right")
        curve.add_column("")
        for point in info["curve"]:
            sil = point["silhouette"]
            marks = ", ".join(
                m
                for m, on in (("chosen (best silhouette)", point["chosen"]), ("elbow", point["elbow"]))
                if on
            )
            curve.add_row(
                str(point["clusters"]), "—" if sil is None else f"{sil:.3f}", f"{point['inertia']:.1f}", marks
            )
        console.print(curve)
    how = ", ".join(
        f"{k}={params[k]}"
        for k in ("linkage", "connectivity", "distance_threshold", "algorithm", "chosen_by")
        if k in params
    )
    console.print(
        f"{info.get('method')}: {info.get('n_clusters')} clusters ({how}); features: "
        f"{extractor_label(report.extractor)}",
        highlight=False,
        soft_wrap=True,
    )
    table = Table(title="Clusters (every image is in one)", title_justify="left")
    table.add_column("Cluster", justify="right")
    table.add_column("Folder", overflow="fold")
    table.add_column("Images", justify="right")
    clusters = report.clusters or ()
    folders, _ = cluster_folders(clusters)
    for cluster, folder in zip(clusters, folders, strict=True):
        table.add_row(str(cluster.id), escape(folder), str(cluster.size))
    console.print(table)
