"""The curation workflows behind ``dedup scan``, ``prune`` and ``group``, callable from Python.

Each function is one whole job: where the report comes from (a fresh scan that skips the output folder, or a
reviewed report given with ``from_report``), the checks that must pass before a long scan starts (report
destinations, names.yaml), the plan, the files written beside the placed images (``clusters.csv``,
``names.yaml``, ``--report`` files), and, unless it is a dry run, applying the plan under its journal --
resuming an interrupted run of the same command instead of starting a new one. Nothing here prints: the
caller renders the returned :class:`Outcome`.

Example::

    from dedup import load_config, prune
    outcome = prune(["photos/"], load_config(), to="photos-quarantine")
    print(outcome.applied.counts(), outcome.applied.manifest)   # then: dedup undo MANIFEST
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dedup.across import reference_folders, scan_roots
from dedup.actions import (
    ApplyResult,
    Plan,
    apply,
    check_group_reports,
    check_plan_reports,
    check_roots,
    check_writable,
    default_state_dir,
    find_resumable,
    load_names,
    manifest_dir,
    new_manifest_path,
    output_exclusions,
    plan_group,
    plan_prune,
    run_lock,
    settle_earlier,
    with_names,
    write_cluster_files,
)
from dedup.config import Config
from dedup.errors import InputError
from dedup.pipeline import ScanResult, cluster_collection, find_duplicates
from dedup.report.files import check_destination, write_reports
from dedup.report.schema import Report, from_result, load_report, sanitize_folder_name

ProgressFn = Callable[[str, int, "int | None"], None]
WarnFn = Callable[[str], None]
#: Asked before files are deleted for good (``prune --delete``); raises to refuse.
ConfirmFn = Callable[[Plan], None]

PathLike = str | os.PathLike[str]


@dataclass
class ScanOutcome:
    """What :func:`scan` did: the scan, its report and the report files written."""

    result: ScanResult
    report: Report
    written: list[Path] = field(default_factory=list)


@dataclass
class Outcome:
    """What :func:`prune` or :func:`group` did.

    Attributes:
        report: the report the plan was made from (after names.yaml was merged).
        plan: the operations planned, and what is left alone and why.
        result: the fresh scan, or None when the report came from ``from_report``.
        applied: what applying the plan did; None for a dry run or when there was nothing to do.
        resumed: the manifest of an interrupted run that was completed instead of starting anew.
        reports: ``--report`` files written (never part of the undo journal).
        cluster_files: ``(clusters.csv, names.yaml)`` written into the output folder (clustering only).
    """

    report: Report
    plan: Plan
    result: ScanResult | None = None
    applied: ApplyResult | None = None
    resumed: Path | None = None
    reports: list[Path] = field(default_factory=list)
    cluster_files: tuple[Path, Path] | None = None


def scan(
    paths: Sequence[PathLike],
    config: Config,
    *,
    reports: Sequence[PathLike] = (),
    progress: ProgressFn | None = None,
    warn: WarnFn | None = None,
) -> ScanOutcome:
    """Scan ``paths`` (a dry run: nothing is changed) and write the report to each of ``reports``.

    Report destinations are checked before the scan starts.

    Raises:
        InputError: a path or a report destination is unusable.
        WeightsError: model weights cannot be obtained and no fallback is allowed.
    """
    destinations = [check_destination(Path(p)) for p in reports]
    result = find_duplicates([Path(p) for p in paths], config, progress=progress, warn=warn)
    report = from_result(result)
    written = write_reports(report, destinations, vectors=result.embeddings.vectors, progress=progress)
    return ScanOutcome(result, report, written)


def prune(
    paths: Sequence[PathLike] | None,
    config: Config,
    *,
    to: PathLike | None = None,
    delete: bool = False,
    from_report: PathLike | None = None,
    keep_policy: str | None = None,
    dry_run: bool = False,
    confirm: ConfirmFn | None = None,
    progress: ProgressFn | None = None,
    warn: WarnFn | None = None,
) -> Outcome:
    """Keep one image per duplicate group; move the others into ``to`` (or delete them with ``delete``).

    Args:
        paths: folders to scan; optional with ``from_report`` (then they must be the report's).
        config: the scan configuration.
        to: the quarantine folder (files mirror their path below the scanned folder); journaled, undoable.
        delete: delete instead of moving (irreversible; ``confirm`` is asked first).
        from_report: act on this reviewed JSON report instead of scanning again.
        keep_policy: re-choose each group's kept image with this policy (None keeps the report's choice).
        dry_run: plan only; nothing on disk changes.
        confirm: called with the plan before anything is deleted; raise to refuse.

    Raises:
        InputError: neither or both of ``to`` / ``delete``, or the paths do not match ``from_report``.
        ActionError: bad or unwritable destination (checked before the scan), malformed report, a scanned
            folder that is a system folder, another run in progress in the destination, unwritable
            manifest, a destination that filled up half-way.
    """
    if delete == (to is not None):
        raise InputError("give either --to QUARANTINE_DIR or --delete")
    if paths:
        check_roots([os.fspath(p) for p in paths], "the command line")
    if not dry_run:
        check_writable(to if to is not None else default_state_dir())
    report, result = _source(paths, from_report, config, to, progress=progress, warn=warn)
    plan = plan_prune(
        report, to=to, delete=delete, keep_policy=keep_policy, reference=reference_folders(config)
    )
    settle_earlier(plan)
    outcome = Outcome(report, plan, result)
    if dry_run:
        return outcome
    if delete and confirm is not None and plan.operations:
        confirm(plan)
    return _apply(outcome, progress)


def group(
    paths: Sequence[PathLike] | None,
    config: Config,
    *,
    to: PathLike,
    mode: str = "copy",
    only_duplicates: bool = False,
    from_report: PathLike | None = None,
    names: PathLike | None = None,
    reports: Sequence[PathLike] = (),
    dry_run: bool = False,
    progress: ProgressFn | None = None,
    warn: WarnFn | None = None,
) -> Outcome:
    """Sort images into folders under ``to``: one per duplicate group plus ``unique/`` (``group.method``
    dbscan), or every image into a cluster folder (agglomerative / kmeans), with ``clusters.csv`` and an
    editable ``names.yaml`` (whose names, given back as ``names``, become the folder names).

    ``reports`` are written before any image is placed, outside ``to`` or directly in it, and are never
    journaled (``dedup undo`` leaves them, like clusters.csv and names.yaml).

    Raises:
        InputError: unusable report destination or names file, ``names`` without a clustering method, a
            clustering asked of a report (it holds no features).
        ActionError: bad mode or destination, malformed report, unwritable manifest.
    """
    method = config.group.method
    if paths:
        check_roots([os.fspath(p) for p in paths], "the command line")
    if not dry_run:
        check_writable(to)
    if method == "dbscan":
        if names is not None:
            raise InputError("--names names the folders of --method agglomerative or kmeans")
        destinations = check_group_reports(reports, to, dry_run=dry_run)
        report, result = _source(paths, from_report, config, to, progress=progress, warn=warn)
        plan = plan_group(
            report, to=to, mode=mode, only_duplicates=only_duplicates, reference=reference_folders(config)
        )
        settle_earlier(plan)
        outcome = Outcome(report, plan, result)
    else:
        if from_report is not None:
            raise InputError(
                f"--method {method} needs the images' features, which a report does not hold; "
                "scan the folders again (give PATH, omit --from-report)"
            )
        cluster_names = load_names(names) if names is not None else None
        folders = [sanitize_folder_name(n) for n in (cluster_names or {}).values()]
        destinations = check_group_reports(
            reports, to, folder_names=[f for f in folders if f], dry_run=dry_run
        )
        if not paths:
            raise InputError("give the folders to scan (PATH...)")
        result = _scan(paths, config, to, progress=progress, warn=warn)
        result = cluster_collection(result, config, progress=progress)
        report = from_result(result)
        notes: list[str] = []
        if cluster_names is not None:
            report, notes = with_names(report, cluster_names)
        plan = plan_group(
            report, to=to, mode=mode, only_duplicates=only_duplicates, reference=reference_folders(config)
        )
        plan.notes[:0] = notes
        outcome = Outcome(report, plan, result)
        if not dry_run:
            outcome.cluster_files = write_cluster_files(report, to)
    if destinations:
        check_plan_reports(plan, destinations)
        for dest in destinations:  # only the output folder can be missing here (check_group_reports)
            if not dry_run and not dest.parent.is_dir():
                try:
                    dest.parent.mkdir(parents=True, exist_ok=True)
                except OSError as e:
                    raise InputError(f"cannot create {dest.parent}: {e.strerror or e}") from e
        vectors = outcome.result.embeddings.vectors if outcome.result is not None else None
        outcome.reports = write_reports(outcome.report, destinations, vectors=vectors, progress=progress)
    if dry_run:
        return outcome
    return _apply(outcome, progress)


def _apply(outcome: Outcome, progress: ProgressFn | None) -> Outcome:
    """Apply the outcome's plan: complete an interrupted run of the same command if there is one, else
    journal a new run (nothing at all when there is nothing to do). The run folder's lock is held from
    choosing the manifest to the end, so a second run never joins a live journal."""
    plan = outcome.plan
    if not plan.operations and find_resumable(plan) is None:
        return outcome
    with run_lock(manifest_dir(plan, None), create=True):
        manifest = find_resumable(plan)
        if manifest is None and not plan.operations:
            return outcome
        outcome.resumed = manifest
        outcome.applied = apply(plan, manifest or new_manifest_path(plan), progress=progress)
    return outcome


def _source(
    paths: Sequence[PathLike] | None,
    from_report: PathLike | None,
    config: Config,
    to: PathLike | None,
    *,
    progress: ProgressFn | None,
    warn: WarnFn | None,
) -> tuple[Report, ScanResult | None]:
    """The report to plan from: ``from_report`` (whose scanned folders must be ``paths`` if given), or a
    fresh scan of ``paths`` that skips the output folder ``to``."""
    if from_report is not None:
        report = load_report(Path(from_report))
        given = sorted(os.path.abspath(p) for p in scan_roots([Path(p) for p in paths or []], config))
        given = given if paths else []
        if given and given != sorted(os.path.abspath(p) for p in report.paths):
            raise InputError(
                f"report {from_report} scanned {', '.join(report.paths)}, not "
                f"{', '.join(given)}; omit PATH or give the same folders"
            )
        return report, None
    if not paths:
        raise InputError("give the folders to scan (PATH...) or --from-report REPORT.json")
    result = _scan(paths, config, to, progress=progress, warn=warn)
    return from_result(result), result


def _scan(
    paths: Sequence[PathLike],
    config: Config,
    to: PathLike | None,
    *,
    progress: ProgressFn | None,
    warn: WarnFn | None,
) -> ScanResult:
    roots = [Path(p) for p in paths]
    return find_duplicates(roots, config, exclude=output_exclusions(roots, to), progress=progress, warn=warn)
