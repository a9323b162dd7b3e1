"""Where ``dedup group`` puts things besides the images: ``names.yaml`` (cluster names the user edits),
``clusters.csv``, and ``--report`` files inside or beside the output folder."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import yaml

from dedup.actions.paths import absolute, suffixed, within
from dedup.actions.plan import Plan
from dedup.errors import ActionError, InputError
from dedup.report.files import FORMATS, check_destination, write_clusters_csv
from dedup.report.schema import Report

NAMES_FILE = "names.yaml"
CLUSTERS_FILE = "clusters.csv"


def load_names(path: str | os.PathLike[str]) -> dict[int, str]:
    """Read a ``names.yaml`` (cluster id -> name) as written by :func:`write_names` and edited by a user.

    Entries whose name is empty or null are left out (those clusters keep their numbered folder).

    Raises:
        InputError: missing or unreadable file, not YAML, not a mapping, or an id that is not a positive
            integer.
    """
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise InputError(f"names file {p} does not exist") from e
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read names file {p}: {e}") from e
    except yaml.YAMLError as e:
        raise InputError(f"names file {p} is not valid YAML: {str(e).splitlines()[0]}") from e
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise InputError(f"names file {p} must map cluster ids to names (like '3: shirts'), got {data!r}")
    names: dict[int, str] = {}
    for key, value in data.items():
        if isinstance(key, bool) or not (isinstance(key, int) or (isinstance(key, str) and key.isdigit())):
            raise InputError(f"names file {p}: {key!r} is not a cluster id (a positive integer)")
        if int(key) < 1:
            raise InputError(f"names file {p}: {key!r} is not a cluster id (a positive integer)")
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        if isinstance(value, (dict, list)):
            raise InputError(f"names file {p}: the name of cluster {key} must be text, got {value!r}")
        names[int(key)] = str(value)
    return names


def with_names(report: Report, names: Mapping[int, str]) -> tuple[Report, list[str]]:
    """A copy of a clustering report whose clusters carry the user's ``names`` (``named``).

    Returns:
        ``(report, notes)``: notes list names for ids the report does not have and clusters left unnamed.

    Raises:
        ActionError: the report has no clusters.
    """
    clusters = report.clusters
    if clusters is None:
        raise ActionError("--names needs a clustering (--method agglomerative or kmeans)")
    ids = {c.id for c in clusters}
    out = tuple(replace(c, name=names[c.id], named=True) if c.id in names else c for c in clusters)
    notes = []
    unknown = sorted(set(names) - ids)
    if unknown:
        notes.append(
            f"names.yaml names clusters {', '.join(map(str, unknown))}, which this run does not have "
            f"({len(ids)} clusters); ignored"
        )
    unnamed = sorted(ids - set(names))
    if unnamed and names:
        notes.append(
            f"clusters {', '.join(map(str, unnamed))} have no name in names.yaml; they keep numbered folders"
        )
    return report.replace(clusters=out), notes


def names_yaml(report: Report) -> str:
    """The text of ``names.yaml`` for a clustering report: ``id: "name"  # size, an example image``."""
    lines = [
        "# Cluster names for `dedup group ... --names names.yaml`: edit the names (not the ids), then re-run",
        "# the same group command with --names (undo this run first, or choose a new --to folder).",
        "# Clusters given the same name share a folder; a removed line keeps its numbered folder.",
    ]
    for c in report.clusters or ():
        example = " ".join(os.path.basename(c.members[0].path).split()) if c.members else ""
        name = json.dumps(str(c.name), ensure_ascii=False)
        lines.append(f"{c.id}: {name}  # {c.size} images, e.g. {example}")
    return "\n".join(lines) + "\n"


def write_names(report: Report, folder: str | os.PathLike[str]) -> Path:
    """Write :func:`names_yaml` into ``folder`` as ``names.yaml``, never overwriting a different file.

    Returns:
        the path written: ``names.yaml``, ``names (1).yaml``... (or the existing file when it already holds
        exactly this text).
    """
    text = names_yaml(report)
    target = os.path.join(os.fspath(folder), NAMES_FILE)
    n = 0
    candidate = target
    while os.path.lexists(candidate):
        try:
            if Path(candidate).read_text(encoding="utf-8") == text:
                return Path(candidate)
        except (OSError, UnicodeDecodeError):
            pass
        n += 1
        candidate = suffixed(target, n)
    try:
        with open(candidate, "x", encoding="utf-8") as f:
            f.write(text)
    except OSError as e:
        raise ActionError(f"cannot write {candidate}: {e.strerror or e}") from e
    return Path(candidate)


def write_cluster_files(report: Report, dest: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write ``clusters.csv`` (replaced) and ``names.yaml`` (never overwritten, see :func:`write_names`) of a
    clustering report into the output folder ``dest`` (created if needed).

    Returns:
        ``(clusters_csv_path, names_yaml_path)``.
    """
    folder = absolute(dest)
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise ActionError(f"cannot create {folder}: {e.strerror or e}") from e
    csv_path = write_clusters_csv(report, os.path.join(folder, CLUSTERS_FILE))
    return csv_path, write_names(report, folder)


def check_group_reports(
    reports: Sequence[str | os.PathLike[str]],
    to: str | os.PathLike[str],
    *,
    folder_names: Iterable[str] = (),
    dry_run: bool = False,
) -> list[Path]:
    """Validate the ``--report`` destinations of ``dedup group`` before the (possibly long) scan starts.

    A report may lie outside the output folder ``to`` (anywhere :func:`dedup.report.files.check_destination`
    accepts), or directly inside it, beside ``clusters.csv`` and ``names.yaml``; it is never journaled, so
    ``dedup undo`` leaves it, like those two files. Inside ``to`` it must not be in a subfolder (those hold
    the placed files), be called ``clusters.csv``, or be called like one of ``folder_names`` (the folders
    the names of names.yaml give, compared case-insensitively). An output folder that does not exist yet is
    created when the report is written -- except with ``dry_run``, which creates nothing, so there the report
    must go into an existing folder.

    Args:
        reports: the report paths (``.json``, ``.csv``, ``.html``).
        to: the output folder of the run.
        folder_names: folder names the run may create directly in ``to`` besides ``group-NNNN``,
            ``unique`` and ``cluster-NNNN`` (which no report extension can match).
        dry_run: the run creates nothing.

    Returns:
        the report paths, as given.

    Raises:
        InputError: a destination that is unusable or would collide with the files being placed.
    """
    dest, dest_real = absolute(to), os.path.realpath(to)
    taken = {name.lower() for name in folder_names} | {CLUSTERS_FILE}
    out = []
    for report in reports:
        p = Path(report)
        where, where_real = absolute(p), os.path.join(os.path.realpath(p.parent), p.name)
        if where in (dest, dest_real) or where_real in (dest, dest_real):
            raise InputError(f"report {p} is the output folder; give a file name")
        if not (within(where, dest) or within(where_real, dest_real)):
            out.append(check_destination(p))
            continue
        if os.path.dirname(where) != dest and os.path.dirname(where_real) != dest_real:
            raise InputError(
                f"report {p} would be in a subfolder of the output folder {dest}, where the images are "
                "placed; write it into the output folder itself or outside it"
            )
        if p.name.lower() in taken:
            raise InputError(
                f"report {p} would collide with {p.name}, which this run writes into {dest}; "
                "choose another name"
            )
        if p.suffix.lower() not in FORMATS or os.path.isdir(dest):
            out.append(check_destination(p))
            continue
        if os.path.lexists(dest):
            raise InputError(f"destination {dest} exists and is not a folder")
        if dry_run:
            raise InputError(
                f"cannot write report {p}: --dry-run creates nothing and the output folder {dest} does not "
                "exist yet; write the report elsewhere"
            )
        parent = os.path.dirname(dest)
        while parent and not os.path.isdir(parent) and os.path.dirname(parent) != parent:
            parent = os.path.dirname(parent)
        if not os.access(parent, os.W_OK):
            raise InputError(f"cannot write report {p}: cannot create {dest} (permission denied)")
        out.append(p)
    return out


def check_plan_reports(plan: Plan, reports: Sequence[str | os.PathLike[str]]) -> None:
    """Refuse a plan that would place a file at, or inside, one of the report paths (a last check after
    planning; :func:`check_group_reports` already rules this out before the scan).

    Raises:
        ActionError: an operation's destination is a report path or lies below one.
    """
    targets = {absolute(r) for r in reports} | {os.path.realpath(r) for r in reports}
    for op in plan.operations:
        if op.dst is not None and any(op.dst == t or within(op.dst, t) for t in targets):
            raise ActionError(f"{op.src} would be placed at {op.dst}, where a --report is written")
