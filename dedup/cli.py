"""The ``dedup`` command line: parse, load config, call the library, render with rich, map errors.

Exit codes: 0 success (duplicates or not), 1 bad input / failed operation (one ``Error: ...`` line on
stderr), 2 usage error (Typer's), 130 interrupted.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from dedup import __version__
from dedup.config import Config, load_config
from dedup.errors import DedupError

if TYPE_CHECKING:
    from dedup.pipeline import ScanResult

app = typer.Typer(
    name="dedup",
    help="Find near-duplicate images and curate image datasets.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

stdout = Console()
stderr = Console(stderr=True)

PHASES = {
    "discover": "Discovering files",
    "extract": "Decoding + extracting",
    "index": "Building neighbour graph",
    "keypoints": "Computing keypoints",
    "verify": "Verifying candidate pairs",
    "cluster": "Clustering",
    "map": "Laying out the map",
    "thumbnails": "Making thumbnails",
    "tune": "Sweeping thresholds",
}

# ---------------------------------------------------------------------------------------------- helpers


@contextmanager
def _errors() -> Iterator[None]:
    """Turn library errors into one ``Error:`` line and exit code 1; Ctrl-C into exit code 130."""
    try:
        yield
    except DedupError as e:
        stderr.print(f"[bold red]Error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        stderr.print("Interrupted.", highlight=False)
        raise typer.Exit(130) from None


def _warn(message: str) -> None:
    stderr.print(f"[yellow]Warning:[/] {escape(message)}", highlight=False, soft_wrap=True)


def _human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"


def _shown(path: str, base: str | None) -> str:
    """A path as the user is likely to recognise it: relative to ``base`` (the scanned root) when under it."""
    if base:
        try:
            return str(Path(path).relative_to(base))
        except ValueError:
            pass
    return path


def _common_base(roots: Sequence[str]) -> str | None:
    """The folder all scanned roots share (a file root counts as its folder), or None."""
    folders = [r if Path(r).is_dir() else str(Path(r).parent) for r in roots]
    try:
        return os.path.commonpath(folders) if folders else None
    except ValueError:
        return None


class ProgressReporter:
    """Progress callback ``(phase, done, total)`` rendered as rich bars, or plain log lines off a terminal."""

    def __init__(self, console: Console, *, interval: float = 5.0) -> None:
        self.console = console
        self.interval = interval
        self.live = console.is_terminal
        self._progress: Progress | None = None
        self._tasks: dict[str, TaskID] = {}
        self._started: dict[str, float] = {}
        self._last_line: dict[str, float] = {}
        self._last_done: dict[str, int] = {}
        self._last_time: dict[str, float] = {}

    def __enter__(self) -> ProgressReporter:
        if self.live:
            self._progress = Progress(
                TextColumn("{task.description:<26}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=self.console,
                transient=False,
            )
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()
        else:
            for phase, done in self._last_done.items():
                if self._last_line.get(phase, 0.0) != -1.0:
                    self._line(phase, done, None, final=True)

    def __call__(self, phase: str, done: int, total: int | None) -> None:
        now = time.monotonic()
        start = self._started.setdefault(phase, now)
        self._last_done[phase] = done
        self._last_time[phase] = now
        rate = done / (now - start) if now > start and done else 0.0
        rate_text = f"{rate:.1f} img/s" if phase == "extract" and rate else ""
        if self._progress is not None:
            if phase not in self._tasks:
                self._tasks[phase] = self._progress.add_task(PHASES.get(phase, phase), total=total, rate="")
            self._progress.update(self._tasks[phase], completed=done, total=total, rate=rate_text)
            return
        finished = total is not None and done >= total
        if finished or now - self._last_line.get(phase, start) >= self.interval:
            self._line(phase, done, total, final=finished)

    def _line(self, phase: str, done: int, total: int | None, *, final: bool) -> None:
        now = self._last_time.get(phase, time.monotonic())
        elapsed = now - self._started.get(phase, now)
        text = f"{PHASES.get(phase, phase)}: {done}" + (f"/{total}" if total is not None else "")
        if phase == "extract" and elapsed > 0 and done:
            rate = done / elapsed
            text += f" ({rate:.1f} img/s"
            if total and not final:
                text += f", ETA {max(0.0, (total - done) / rate):.0f}s"
            text += ")"
        if final:
            text += f" done in {elapsed:.1f}s"
        self.console.print(text, highlight=False, soft_wrap=True)
        self._last_line[phase] = -1.0 if final else now


def build_config(config_file: Path | None, overrides: dict[str, Any]) -> Config:
    """Defaults < ``--config`` file < CLI flags (``None`` flags are ignored)."""
    return load_config(config_file, overrides)


# ------------------------------------------------------------------------------------------------ app


def _version(value: bool) -> None:
    if value:
        typer.echo(f"dedup {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Find near-duplicate images and curate image datasets.

    Example: dedup scan ~/photos --report duplicates.json
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before TensorFlow loads: quiets its C++ logging


ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="YAML config file (see configs/default.yaml).", show_default=False),
]
ThresholdOpt = Annotated[
    float | None,
    typer.Option(
        "--threshold",
        "-t",
        help="Cosine similarity (-1..1) at or above which images are duplicates (default: the extractor's).",
        show_default=False,
    ),
]
FeaturesOpt = Annotated[
    str | None,
    typer.Option(
        "--features",
        "-f",
        help="Feature extractor(s): vgg16 | resnet50 | phash | thumb | color | keras-model:PATH (a saved "
        ".keras/.h5 model), or several joined with '+' (e.g. phash+thumb+color: candidates from each, "
        "decided by the verify stage).",
        show_default=False,
    ),
]
WeightsOpt = Annotated[
    str | None,
    typer.Option(
        "--weights",
        help="VGG16/ResNet50 weights: imagenet | none | PATH to a .h5/.weights.h5 file.",
        show_default=False,
    ),
]
KeepOpt = Annotated[
    str | None,
    typer.Option(
        "--keep",
        help="Image kept per group: resolution | filesize | oldest | newest | path.",
        show_default=False,
    ),
]
RecursiveOpt = Annotated[
    bool | None,
    typer.Option(
        "--recursive/--no-recursive",
        help="Descend into sub-folders (default: yes).",
        show_default=False,
    ),
]
HiddenOpt = Annotated[
    bool | None,
    typer.Option("--include-hidden", help="Also scan hidden files and folders.", show_default=False),
]


NoCacheOpt = Annotated[
    bool,
    typer.Option("--no-cache", help="Neither read nor write the feature cache: extract every image afresh."),
]


def cache_overrides(no_cache: bool) -> dict[str, Any]:
    """The config override of ``--no-cache`` (nothing when the flag is not given)."""
    return {"cache.enabled": False if no_cache else None}


def scan_overrides(
    threshold: float | None,
    features: str | None,
    weights: str | None,
    keep: str | None,
    recursive: bool | None,
    include_hidden: bool | None,
) -> dict[str, Any]:
    """The config overrides given by the flags every scanning command shares."""
    return {
        "cluster.threshold": threshold,
        "features.extractor": features,
        "features.weights": weights,
        "keep.policy": keep,
        "discover.recursive": recursive,
        "discover.include_hidden": include_hidden,
    }


def run_scan(paths: Sequence[Path], config: Config, *, exclude: Sequence[Path] = ()) -> ScanResult:
    """Run the scan pipeline with progress and warnings on stderr; returns the library's ScanResult."""
    from dedup.pipeline import find_duplicates

    with ProgressReporter(stderr) as progress:
        return find_duplicates(paths, config, exclude=exclude, progress=progress, warn=_warn)


@app.command()
def scan(
    paths: Annotated[
        list[Path], typer.Argument(help="Folders and/or image files to scan.", show_default=False)
    ],
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
) -> None:
    """Report near-duplicate images (dry run: nothing is modified, moved or created except --report files).

    Example: dedup scan ~/photos --report duplicates.json
    """
    from dedup import report as reports

    with _errors():
        cfg = build_config(
            config,
            {
                **scan_overrides(threshold, features, weights, keep, recursive, include_hidden),
                **cache_overrides(no_cache),
            },
        )
        destinations = [reports.check_destination(p) for p in report or []]
        result = run_scan(paths, cfg)
        data = reports.to_dict(result)
        write_reports(data, destinations, vectors=result.embeddings.vectors, max_pixels=cfg.decode.max_pixels)
        render_summary(data, stderr if json_out else stdout, top=top)
        if result.sources is not None:
            src = result.sources
            stderr.print(
                f"Features: {src.cached} from the cache, {src.reused} reused by content, "
                f"{src.identical} byte-identical copies, {src.extracted} extracted.",
                highlight=False,
                soft_wrap=True,
            )
        for dest in destinations:
            (stderr if json_out else stdout).print(
                f"Report written to {dest}", highlight=False, soft_wrap=True
            )
        if json_out:
            sys.stdout.write(reports.to_json(data))
            sys.stdout.flush()


def write_reports(
    data: dict[str, Any], destinations: Sequence[Path], *, vectors: Any | None, max_pixels: int
) -> None:
    """Write ``data`` to every destination (format by extension). For HTML the map is laid out from
    ``vectors`` (no map when None) and the thumbnails made once (group members and cluster samples), with
    progress on stderr."""
    from dedup import report as reports

    html_extras: dict[str, Any] = {}
    if any(dest.suffix.lower() == ".html" for dest in destinations):
        with ProgressReporter(stderr) as progress:
            if vectors is not None:
                progress("map", 0, 1)
                html_extras["coordinates"] = reports.map_coordinates(vectors)
                progress("map", 1, 1)
            html_extras["thumbnails"] = reports.make_thumbnails(
                reports.html_thumbnail_paths(data), max_pixels=max_pixels, progress=progress
            )
    for dest in destinations:
        reports.write_report(data, dest, **(html_extras if dest.suffix.lower() == ".html" else {}))


def render_summary(data: dict[str, Any], console: Console, *, top: int) -> None:
    """Summary table of a scan report, then its ``top`` largest groups."""
    from dedup.report import skipped_reasons

    stats = data["stats"]
    ex = data["extractor"]
    extractor = ex["name"] + (f" (fallback for {ex.get('requested')})" if ex.get("fallback_used") else "")
    table = Table(title="dedup scan", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_row("Images found", str(stats["images"] + stats["skipped"]))
    table.add_row("Skipped", str(stats["skipped"]))
    for reason, count in sorted(skipped_reasons(data).items(), key=lambda kv: (-kv[1], kv[0])):
        table.add_row(f"  {reason}", str(count))
    table.add_row("Duplicate groups", str(stats["groups"]))
    table.add_row("Duplicate images", str(stats["duplicates"]))
    table.add_row("Reclaimable", _human_bytes(stats["reclaimable_bytes"]))
    table.add_row("Chain splits", str(stats["chain_splits"]))
    table.add_row("Extractor", extractor)
    params = data["params"]
    if params.get("verified"):
        candidates = ", ".join(f"{n} ≥ {t['candidate']:.2f}" for n, t in params.get("thresholds", {}).items())
        table.add_row("Decision", f"keypoints verified (candidates: {candidates})")
    else:
        table.add_row("Threshold (cosine similarity)", f"{params['threshold']:.3f}")
    console.print(table)
    if not data["groups"] or top == 0:
        return
    base = _common_base(data["paths"])
    title = f"Largest groups (top {min(top, len(data['groups']))} of {len(data['groups'])})"
    groups = Table(title=title + (f", paths under {base}" if base else ""), title_justify="left")
    groups.add_column("Group", justify="right")
    groups.add_column("Image", overflow="fold")
    groups.add_column("Similarity", justify="right")
    groups.add_column("Size", justify="right")
    for g in data["groups"][:top]:
        for i, m in enumerate(g["members"]):
            kept = m["path"] == g["keep"]
            groups.add_row(
                str(g["id"]) if i == 0 else "",
                ("[green]keep[/] " if kept else "     ") + escape(_shown(m["path"], base)),
                "—" if kept else f"{m['similarity_to_keep']:.3f}",
                f"{m['width']}×{m['height']}, {_human_bytes(m['bytes'])}",
                end_section=i == len(g["members"]) - 1,
            )
    console.print(groups)


# ------------------------------------------------------------------------------ prune / group / undo

PHASES.update({"apply": "Applying operations", "undo": "Undoing", "grouping": "Clustering collection"})


def _here(path: str) -> str:
    """``path`` relative to the current folder when it lies below it (shorter tables), else as is."""
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return path


ToOpt = Annotated[
    Path | None,
    typer.Option(
        "--to", help="Output folder (quarantine for prune, group folders for group).", show_default=False
    ),
]
DryRunOpt = Annotated[
    bool, typer.Option("--dry-run", help="Print the plan as a table and as JSON; touch nothing.")
]
FromReportOpt = Annotated[
    Path | None,
    typer.Option(
        "--from-report",
        help="Act on this reviewed JSON report instead of scanning again; files "
        "changed since it was written are left alone.",
        show_default=False,
    ),
]
ActionPathsArg = Annotated[
    list[Path] | None,
    typer.Argument(help="Folders to scan (optional with --from-report).", show_default=False),
]


def _action_report(
    paths: list[Path] | None, from_report: Path | None, cfg: Config, to: Path | None
) -> dict[str, Any]:
    """The report to plan from: ``--from-report``, or a fresh scan that skips the output folder."""
    return _action_scan(paths, from_report, cfg, to)[0]


def _action_scan(
    paths: list[Path] | None, from_report: Path | None, cfg: Config, to: Path | None
) -> tuple[dict[str, Any], ScanResult | None]:
    """:func:`_action_report` and the scan it came from (None with ``--from-report``)."""
    import os

    from dedup import actions
    from dedup import report as reports
    from dedup.errors import InputError

    if from_report is not None:
        data = reports.load_report(from_report)
        given = sorted(os.path.abspath(p) for p in paths or [])
        if given and given != sorted(os.path.abspath(p) for p in data.get("paths", [])):
            raise InputError(
                f"report {from_report} scanned {', '.join(data.get('paths', []))}, not "
                f"{', '.join(given)}; omit PATH or give the same folders"
            )
        return data, None
    if not paths:
        raise InputError("give the folders to scan (PATH...) or --from-report REPORT.json")
    result = run_scan(paths, cfg, exclude=actions.output_exclusions(paths, to))
    return reports.to_dict(result), result


def render_plan(plan: Any, console: Console) -> None:
    """Table of a :class:`dedup.actions.Plan`: every operation, then what is left alone and why."""
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
            escape(_here(op.src)),
            escape(_here(op.dst)) if op.dst else "—",
            _human_bytes(op.bytes),
        )
    console.print(table)
    if plan.skipped:
        skipped = Table(title="Left alone", title_justify="left")
        skipped.add_column("File", overflow="fold")
        skipped.add_column("Reason", overflow="fold")
        for s in plan.skipped:
            skipped.add_row(escape(_here(s.path)), escape(s.reason))
        console.print(skipped)
    for note in plan.notes:
        console.print(f"Note: {escape(note)}", highlight=False, soft_wrap=True)
    s = plan.summary()
    console.print(
        f"{s['operations']} operations, {s['kept']} groups keep their image, {s['skipped']} files left "
        f"alone, {_human_bytes(s['bytes_freed'])} freed. Dry run: nothing was changed.",
        highlight=False,
        soft_wrap=True,
    )


def _run_plan(plan: Any, *, dry_run: bool) -> None:
    """Dry run (table on stderr, JSON on stdout) or apply with a progress bar, resuming an interrupted run."""
    import json
    import shlex

    from dedup import actions

    if dry_run:
        render_plan(plan, stderr)
        sys.stdout.write(json.dumps(plan.to_dict(), indent=2, ensure_ascii=False) + "\n")
        sys.stdout.flush()
        return
    manifest = actions.find_resumable(plan)
    if manifest is not None:
        stderr.print(f"Resuming the interrupted run recorded in {manifest}", highlight=False, soft_wrap=True)
    elif not plan.operations:
        stdout.print("Nothing to do.", highlight=False)
        _fail_if_incomplete(plan.skipped, [], len(plan.skipped))
        return
    manifest = manifest or actions.new_manifest_path(plan)
    with ProgressReporter(stderr) as progress:
        result = actions.apply(plan, manifest, progress=progress)
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
    table.add_row("Bytes freed", _human_bytes(c["bytes_freed"]))
    stdout.print(table)
    stdout.print(f"Manifest: {result.manifest}", highlight=False, soft_wrap=True)
    if plan.mode == "delete":
        stdout.print("Deleted files cannot be restored; the manifest lists them.", highlight=False)
    else:
        stdout.print(
            f"To reverse: dedup undo {shlex.quote(str(result.manifest))}", highlight=False, soft_wrap=True
        )
    _fail_if_incomplete(
        result.skipped,
        [(f.op.src, f.reason) for f in result.failed],
        len(result.plan.operations) + len(result.skipped),
    )


def _fail_if_incomplete(skipped: Sequence[Any], failed: Sequence[tuple[str, str]], total: int) -> None:
    """List what was not done on stderr and exit 1 when anything was skipped or failed."""
    if not skipped and not failed:
        return
    for s in skipped:
        stderr.print(
            f"  skipped {escape(_here(s.path))}: {escape(s.reason)}", highlight=False, soft_wrap=True
        )
    for path, reason in failed:
        stderr.print(f"  failed  {escape(_here(path))}: {escape(reason)}", highlight=False, soft_wrap=True)
    stderr.print(
        f"[bold red]Error:[/] not everything was done: {len(failed)} failed, {len(skipped)} skipped "
        f"(of {total}).",
        highlight=False,
        soft_wrap=True,
    )
    raise typer.Exit(1)


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
) -> None:
    """Keep one image per duplicate group; move the others to a quarantine folder (or delete them).

    Quarantined files mirror their path relative to the scanned folder; every change is journaled in a
    manifest inside the quarantine folder, and `dedup undo MANIFEST` puts everything back.

    Example: dedup prune ~/photos --to ~/photos-quarantine --dry-run
    """
    from dedup import actions
    from dedup.errors import InputError

    with _errors():
        if delete == (to is not None):
            raise InputError("give either --to QUARANTINE_DIR or --delete")
        cfg = build_config(
            config,
            {
                **scan_overrides(threshold, features, weights, keep, recursive, include_hidden),
                **cache_overrides(no_cache),
            },
        )
        data = _action_report(paths, from_report, cfg, to)
        policy = cfg.keep.policy if (keep is not None or config is not None) else None
        plan = actions.plan_prune(data, to=to, delete=delete, keep_policy=policy)
        if delete and not dry_run and not yes and plan.operations:
            if not sys.stdin.isatty():
                raise InputError(
                    "--delete removes files for good and there is no terminal to confirm on; "
                    "add --yes (or use --to QUARANTINE_DIR, which 'dedup undo' can reverse)"
                )
            typer.confirm(
                f"Permanently delete {len(plan.operations)} files ({_human_bytes(plan.bytes_freed)})? "
                "'dedup undo' cannot restore deleted files",
                abort=True,
                err=True,
            )
        _run_plan(plan, dry_run=dry_run)


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
) -> None:
    """Sort images into one folder per duplicate group (group-0001/ is the largest), plus unique/ -- or,
    with --method agglomerative|kmeans, every image into a cluster folder (cluster-0001/ is the largest),
    with clusters.csv and an editable names.yaml in the output folder.

    Example: dedup group ~/photos --to ~/photos-by-group --link

    Example: dedup group ~/photos --to ~/sorted --method kmeans --clusters auto

    Example: dedup group ~/photos --to ~/sorted -m kmeans -k 20 --dry-run --report clusters.html
    """
    from dedup import actions
    from dedup.errors import InputError

    with _errors():
        if to is None:
            raise InputError("give the output folder with --to OUT_DIR")
        if move + copy + link > 1:
            raise InputError("give only one of --move, --copy, --link")
        mode = "move" if move else "link" if link else "copy"
        overrides = scan_overrides(threshold, features, weights, keep, recursive, include_hidden)
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
        if cfg.group.method == "dbscan":
            if names is not None:
                raise InputError("--names names the folders of --method agglomerative or kmeans")
            destinations = actions.check_group_reports(report or [], to, dry_run=dry_run)
            data, result = _action_scan(paths, from_report, cfg, to)
            plan = actions.plan_group(data, to=to, mode=mode, only_duplicates=only_duplicates)
            _group_reports(data, destinations, plan, result, cfg, dry_run=dry_run)
            _run_plan(plan, dry_run=dry_run)
            return
        if from_report is not None:
            raise InputError(
                f"--method {cfg.group.method} needs the images' features, which a report does not hold; "
                "scan the folders again (give PATH, omit --from-report)"
            )
        cluster_names = actions.load_names(names) if names is not None else None
        folders = [actions.sanitize_folder_name(n) for n in (cluster_names or {}).values()]
        destinations = actions.check_group_reports(
            report or [], to, folder_names=[f for f in folders if f], dry_run=dry_run
        )
        data, result = _clustering_report(paths, cfg, to)
        notes: list[str] = []
        if cluster_names is not None:
            data, notes = actions.with_names(data, cluster_names)
        render_clustering(data, stderr)
        plan = actions.plan_group(data, to=to, mode=mode, only_duplicates=only_duplicates)
        plan.notes[:0] = notes
        if not dry_run:
            for note in plan.notes:
                stderr.print(f"Note: {escape(note)}", highlight=False, soft_wrap=True)
            csv_path, names_path = actions.write_cluster_files(data, to)
            stdout.print(f"Cluster of every image: {csv_path}", highlight=False, soft_wrap=True)
            stdout.print(
                f"Cluster names (edit, then re-run with --names): {names_path}",
                highlight=False,
                soft_wrap=True,
            )
        _group_reports(data, destinations, plan, result, cfg, dry_run=dry_run)
        _run_plan(plan, dry_run=dry_run)


def _group_reports(
    data: dict[str, Any],
    destinations: Sequence[Path],
    plan: Any,
    result: ScanResult | None,
    cfg: Config,
    *,
    dry_run: bool,
) -> None:
    """Write the ``--report`` files of a group run (before its files are placed; never journaled)."""
    from dedup import actions
    from dedup.errors import InputError

    if not destinations:
        return
    actions.check_plan_reports(plan, destinations)
    for dest in destinations:  # only the output folder can be missing here (check_group_reports)
        if not dry_run and not dest.parent.is_dir():
            try:
                dest.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise InputError(f"cannot create {dest.parent}: {e.strerror or e}") from e
    vectors = result.embeddings.vectors if result is not None else None
    write_reports(data, destinations, vectors=vectors, max_pixels=cfg.decode.max_pixels)
    for dest in destinations:
        (stderr if dry_run else stdout).print(
            f"Report written to {dest} (not part of the undo journal)", highlight=False, soft_wrap=True
        )


def _clustering_report(paths: list[Path] | None, cfg: Config, to: Path) -> tuple[dict[str, Any], ScanResult]:
    """Scan ``paths`` (skipping the output folder) and cluster every image with ``cfg.group``; returns the
    report and the clustered scan."""
    from dedup import actions
    from dedup import report as reports
    from dedup.errors import InputError
    from dedup.pipeline import cluster_collection

    if not paths:
        raise InputError("give the folders to scan (PATH...)")
    result = run_scan(paths, cfg, exclude=actions.output_exclusions(paths, to))
    with ProgressReporter(stderr) as progress:
        result = cluster_collection(result, cfg, progress=progress)
    return reports.to_dict(result), result


def render_clustering(data: dict[str, Any], console: Console) -> None:
    """The ``--clusters auto`` curve (if any), then every cluster's folder and size."""
    from dedup.actions import cluster_folders

    info = data["clustering"]
    params = info["params"]
    if info["curve"]:
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
    ex = data["extractor"]
    extractor = ex["name"] + (f" (fallback for {ex.get('requested')})" if ex.get("fallback_used") else "")
    how = ", ".join(
        f"{k}={params[k]}"
        for k in ("linkage", "connectivity", "distance_threshold", "algorithm", "chosen_by")
        if k in params
    )
    console.print(
        f"{info['method']}: {info['n_clusters']} clusters ({how}); features: {extractor}",
        highlight=False,
        soft_wrap=True,
    )
    table = Table(title="Clusters (every image is in one)", title_justify="left")
    table.add_column("Cluster", justify="right")
    table.add_column("Folder", overflow="fold")
    table.add_column("Images", justify="right")
    folders, _ = cluster_folders(data["clusters"])
    for cluster, folder in zip(data["clusters"], folders, strict=True):
        table.add_row(str(cluster["id"]), escape(folder), str(cluster["size"]))
    console.print(table)


@app.command()
def undo(
    manifest: Annotated[Path, typer.Argument(help="Manifest printed by prune or group.", show_default=False)],
) -> None:
    """Reverse a prune or group run: put moved files back, remove the copies and links it made.

    Safe to run twice, and after an interrupted run or an interrupted undo.

    Example: dedup undo ~/photos-quarantine/dedup-prune-move-20250101T120000Z.jsonl
    """
    from dedup import actions

    with _errors():
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
        if result.unrestorable:
            stderr.print(
                f"{len(result.unrestorable)} files were deleted with --delete and cannot be restored.",
                highlight=False,
            )
        _fail_if_incomplete(
            [],
            result.failed + [(p, "deleted permanently") for p in result.unrestorable],
            len(result.restored) + len(result.removed) + result.unchanged,
        )


# ------------------------------------------------------------------------------- similar / evaluate / tune


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

    Similarity is the cosine similarity of the features x 100 (mirror images count when
    features.mirror is on); IMAGE itself is left out if it lies in the searched folders.

    Example: dedup similar ~/photos/cat.jpg --in ~/photos -k 5
    """
    import json

    from dedup.pipeline import find_similar

    with _errors():
        cfg = build_config(
            config,
            {
                **scan_overrides(None, features, weights, None, recursive, include_hidden),
                **cache_overrides(no_cache),
            },
        )
        with ProgressReporter(stderr) as progress:
            result = find_similar(image, search_in, cfg, k=k, progress=progress, warn=_warn)
        matches: list[dict[str, Any]] = [
            {
                "rank": rank,
                "path": m.image.path,
                "similarity": round(m.similarity, 6),
                "percent": round(m.similarity * 100, 2),
                "mirrored": m.mirrored,
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
                "images": len(result.collection.images),
                "matches": matches,
                "skipped": [{"path": s.path, "reason": s.reason} for s in result.collection.skipped],
            }
            sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
            sys.stdout.flush()
            return
        base = _common_base(result.collection.paths)
        ex = result.extractor
        extractor = ex["name"] + (f" (fallback for {ex.get('requested')})" if ex.get("fallback_used") else "")
        title = (
            f"Most similar to {_here(result.query.path)} among {len(result.collection.images)} images"
            + (f" under {base}" if base else "")
            + f" ({extractor})"
        )
        table = Table(title=escape(title), title_justify="left")
        table.add_column("#", justify="right")
        table.add_column("Image", overflow="fold")
        table.add_column("Similarity", justify="right")
        table.add_column("Size", justify="right")
        for m in matches:
            table.add_row(
                str(m["rank"]),
                escape(_shown(m["path"], base)) + (" [yellow](mirrored)[/]" if m["mirrored"] else ""),
                _pct(m["similarity"]),
                f"{m['width']}×{m['height']}, {_human_bytes(m['bytes'])}",
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


def evaluation_warnings(result: dict[str, Any]) -> list[str]:
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
    import json

    from dedup import metrics
    from dedup import report as reports
    from dedup.errors import InputError

    with _errors():
        if match not in metrics.MATCH_MODES:
            raise InputError(f"--match must be one of {', '.join(metrics.MATCH_MODES)}, not {match!r}")
        if output is not None and not output.parent.is_dir():
            raise InputError(f"cannot write {output}: folder {output.parent} does not exist")
        data = reports.load_report(report)
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
        for note in evaluation_warnings(result):
            _warn(note)
        if output is not None:
            reports.write_text(output, json.dumps(result, indent=2, ensure_ascii=False) + "\n", what="scores")
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
            "--min", help="Lowest threshold tried (default: vgg16 0.70, phash 0.50).", show_default=False
        ),
    ] = None,
    highest: Annotated[
        float | None,
        typer.Option(
            "--max", help="Highest threshold tried (default: vgg16 0.99, phash 0.96).", show_default=False
        ),
    ] = None,
    step: Annotated[
        float | None,
        typer.Option("--step", help="Threshold step (default: vgg16 0.01, phash 0.02).", show_default=False),
    ] = None,
    plot: Annotated[
        Path | None,
        typer.Option("--plot", help="Draw the curves to FILE.svg or FILE.png.", show_default=False),
    ] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the sweep as JSON to stdout (progress stays on stderr).")
    ] = False,
) -> None:
    """Sweep the similarity threshold over features extracted once, and suggest one.

    For each threshold: duplicate groups and images, and the silhouette, Davies–Bouldin and
    Calinski–Harabasz scores of the grouping; plus the k-distance curve and its elbow.

    Example: dedup tune ~/photos --features phash --plot tune.svg
    """
    import json

    from dedup import tune as tuning
    from dedup.plot import check_plot_destination, write_plot

    with _errors():
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
                paths, cfg, lowest=lowest, highest=highest, step=step, progress=progress, warn=_warn
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
        for name in ("Threshold", "Groups", "Dups", "Grouped", "Splits", "Silh.", "DB", "CH"):
            table.add_column(name, justify="right")
        for row in result.rows:
            mark = row.threshold == result.suggested
            table.add_row(
                ("[bold green]▶ " if mark else "") + f"{row.threshold:.3f}" + ("[/]" if mark else ""),
                str(row.groups),
                str(row.duplicates),
                str(row.grouped),
                str(row.chain_splits),
                _score(row.silhouette),
                _score(row.davies_bouldin),
                _score(row.calinski_harabasz, 1),
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
            f"[bold]Suggested threshold: {result.suggested:.3f}[/] ({result.rule}). {escape(result.reason)}",
            highlight=False,
            soft_wrap=True,
        )
        if plot is not None:
            console.print(f"Plot written to {plot}", highlight=False, soft_wrap=True)
        if json_out:
            sys.stdout.write(json.dumps(result.to_dict(), indent=2, ensure_ascii=False) + "\n")
            sys.stdout.flush()


# ------------------------------------------------------------------------------------------------ cache

cache_app = typer.Typer(
    help="Inspect or empty the persistent feature cache.", no_args_is_help=True, rich_markup_mode="rich"
)
app.add_typer(cache_app, name="cache")


@cache_app.command("info")
def cache_info(
    config: ConfigOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the facts as JSON to stdout.")] = False,
) -> None:
    """Show where the feature cache is, how big it is and how many images it holds per extractor.

    Example: dedup cache info
    """
    import json

    from dedup import cache

    with _errors():
        cfg = build_config(config, {})
        facts = cache.info(cache.cache_dir(cfg.cache))
        if json_out:
            sys.stdout.write(json.dumps({"enabled": cfg.cache.enabled, **facts}, indent=2) + "\n")
            return
        table = Table(title="dedup feature cache", show_header=False, title_justify="left")
        table.add_column(style="bold")
        table.add_column(overflow="fold")
        table.add_row("Enabled", "yes" if cfg.cache.enabled else "no (cache.enabled: false)")
        table.add_row("File", facts["file"] + ("" if facts["exists"] else " (not created yet)"))
        table.add_row("Size", _human_bytes(facts["bytes"]))
        table.add_row("Images", str(facts["entries"]))
        for ex in facts["extractors"]:
            ident = ex["identity"]
            what = ", ".join(f"{k}={v}" for k, v in ident.items() if v is not None and k != "weights_sha256")
            if ident.get("weights_sha256"):
                what += f", weights sha256 {ident['weights_sha256'][:12]}…"
            table.add_row(f"  {ex['entries']} images", escape(what))
        if facts["error"]:
            table.add_row("Error", escape(facts["error"]) + " (it will be rebuilt by the next scan)")
        stdout.print(table)


@cache_app.command("clear")
def cache_clear(config: ConfigOpt = None) -> None:
    """Delete the feature cache; the next scan extracts every image again.

    Example: dedup cache clear
    """
    from dedup import cache

    with _errors():
        cfg = build_config(config, {})
        folder = cache.cache_dir(cfg.cache)
        freed = cache.clear(folder)
        message = f"Feature cache in {folder} cleared ({_human_bytes(freed)} freed)."
        stdout.print(message, highlight=False, soft_wrap=True)


def main() -> None:
    """Console-script entry point."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before TensorFlow loads: quiets its C++ logging
    app()
