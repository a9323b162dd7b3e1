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
    "cluster": "Clustering",
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
    str | None, typer.Option("--features", "-f", help="Feature extractor: vgg16 | phash.", show_default=False)
]
WeightsOpt = Annotated[
    str | None,
    typer.Option(
        "--weights",
        help="VGG16 weights: imagenet | none | PATH to a .h5/.weights.h5 file.",
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
            help="Write the report to FILE.json or FILE.csv (repeatable).",
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
        for dest in destinations:
            reports.write_report(data, dest)
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
    table.add_row("Threshold (cosine similarity)", f"{data['params']['threshold']:.3f}")
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

PHASES.update({"apply": "Applying operations", "undo": "Undoing"})


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
        return data
    if not paths:
        raise InputError("give the folders to scan (PATH...) or --from-report REPORT.json")
    return reports.to_dict(run_scan(paths, cfg, exclude=actions.output_exclusions(paths, to)))


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
        typer.Option("--to", help="Output folder for group-NNNN/ and unique/.", show_default=False),
    ] = None,
    move: Annotated[bool, typer.Option("--move", help="Move the images into the folders.")] = False,
    copy: Annotated[bool, typer.Option("--copy", help="Copy the images (the default).")] = False,
    link: Annotated[bool, typer.Option("--link", help="Make symbolic links to the images.")] = False,
    only_duplicates: Annotated[
        bool, typer.Option("--only-duplicates", help="No unique/ folder for images in no group.")
    ] = False,
    dry_run: DryRunOpt = False,
    from_report: FromReportOpt = None,
    config: ConfigOpt = None,
    threshold: ThresholdOpt = None,
    features: FeaturesOpt = None,
    weights: WeightsOpt = None,
    keep: KeepOpt = None,
    recursive: RecursiveOpt = None,
    include_hidden: HiddenOpt = None,
    no_cache: NoCacheOpt = False,
) -> None:
    """Sort images into one folder per duplicate group (group-0001/ is the largest), plus unique/.

    Example: dedup group ~/photos --to ~/photos-by-group --link
    """
    from dedup import actions
    from dedup.errors import InputError

    with _errors():
        if to is None:
            raise InputError("give the output folder with --to OUT_DIR")
        if move + copy + link > 1:
            raise InputError("give only one of --move, --copy, --link")
        mode = "move" if move else "link" if link else "copy"
        cfg = build_config(
            config,
            {
                **scan_overrides(threshold, features, weights, keep, recursive, include_hidden),
                **cache_overrides(no_cache),
            },
        )
        data = _action_report(paths, from_report, cfg, to)
        plan = actions.plan_group(data, to=to, mode=mode, only_duplicates=only_duplicates)
        _run_plan(plan, dry_run=dry_run)


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
    app()
