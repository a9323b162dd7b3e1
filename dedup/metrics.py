"""Measures of grouping quality against a ground truth (``dedup evaluate``).

Two kinds of input:

* **Label sequences** — one label per item, items in the same group share a label. Any hashable values
  work (ints, strings, a mix); only equality matters. An item in no group must still have a label of its
  own: :func:`labels_from_groups` builds such sequences from a list of items and a list of groups, giving
  every ungrouped item a unique singleton label.
* **A JSON report and a truth CSV** — :func:`load_truth` reads ``path,group_id`` rows and
  :func:`evaluate_report` matches them against the report's groups and scores the result.

Every score is computed from the contingency table of the two labelings (how many items fall in truth
group *i* and predicted group *j*), so the cost is O(n + number of non-empty cells), never O(n²) pairs.

Conventions for degenerate cases (documented once here, tested in ``tests/test_metrics.py``):

* Pairwise **precision is 1.0 when there are no predicted pairs** and **recall is 1.0 when there are no
  true pairs** (nothing claimed means nothing claimed wrongly; nothing to find means nothing missed).
  This is the convention sklearn's clustering scores follow for trivial labelings (``rand_score``,
  ``adjusted_rand_score``, ``homogeneity_score`` … all give 1.0 when two all-singleton labelings are
  compared) and it makes pairwise precision agree with B-cubed precision, which is 1.0 for an all-singleton
  prediction by construction. A prediction with no pairs against a truth that has pairs therefore scores
  P = 1.0, R = 0.0, F1 = 0.0: the F1 still exposes it.
* F1 (pairwise and B-cubed) is the harmonic mean ``2PR / (P + R)`` and is **0.0 when P + R = 0**.
* Fowlkes–Mallows is sklearn's value unchanged, and sklearn returns **0.0 when there are no correct
  pairs**, including for two identical all-singleton labelings (where every other score is 1.0).
* Normalised mutual information uses sklearn's default arithmetic-mean normalisation.
* Every function needs at least one item; empty labelings raise ``ValueError``.

Results are plain dicts of Python ``int`` / ``float`` / ``str`` / ``list`` values, ready for ``json.dump``.
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from collections.abc import Collection, Hashable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn import metrics as skm

from dedup.errors import ConfigError, InputError
from dedup.report.schema import Report

MATCH_MODES = ("path", "name")
TRUTH_COLUMNS = ("path", "group_id")


# --------------------------------------------------------------------------------------------------------
# Labels and the contingency table


def labels_from_groups(items: Sequence[Hashable], groups: Iterable[Iterable[Hashable]]) -> list[int]:
    """One label per item from a list of groups; items in no group become singletons.

    Args:
        items: the universe of items (e.g. paths), each listed once.
        groups: disjoint groups of items. Members that are not in ``items`` are ignored (callers that
            care, like :func:`evaluate_report`, count them separately). Empty groups are allowed.

    Returns:
        A list aligned with ``items``: the k-th group's members get label ``k`` (0-based, in the order
        the groups are given); every item in no group gets its own label, counting on after the last
        group's, so singleton labels never collide with group labels.

    Raises:
        ValueError: an item is listed twice in ``items`` or is a member of two groups.
    """
    position: dict[Hashable, int] = {}
    for i, item in enumerate(items):
        if item in position:
            raise ValueError(f"item {item!r} is listed more than once")
        position[item] = i
    labels: list[int | None] = [None] * len(position)
    n_groups = 0
    for k, group in enumerate(groups):
        n_groups = k + 1
        for member in group:
            at = position.get(member)
            if at is None:
                continue
            if labels[at] is not None and labels[at] != k:
                raise ValueError(f"item {member!r} is a member of groups {labels[at]} and {k}")
            labels[at] = k
    next_label = n_groups
    out: list[int] = []
    for label in labels:
        if label is None:
            out.append(next_label)
            next_label += 1
        else:
            out.append(label)
    return out


@dataclass(frozen=True)
class _Contingency:
    """Sparse contingency table of two labelings of the same n items.

    Attributes:
        n: number of items.
        truth_codes, pred_codes: int arrays of shape (n,), each labeling recoded to 0..k-1.
        truth_sizes: int64 array of shape (n_truth_groups,), items per truth group (row sums).
        pred_sizes: int64 array of shape (n_pred_groups,), items per predicted group (column sums).
        cells: int64 array of shape (n_nonzero_cells,), items in each non-empty (truth, pred) cell.
        cell_truth, cell_pred: int64 arrays of shape (n_nonzero_cells,), the cell's row and column.
    """

    n: int
    truth_codes: np.ndarray
    pred_codes: np.ndarray
    truth_sizes: np.ndarray
    pred_sizes: np.ndarray
    cells: np.ndarray
    cell_truth: np.ndarray
    cell_pred: np.ndarray


def _encode(labels: Iterable[Hashable]) -> np.ndarray:
    """Recode hashable labels to ints 0..k-1 in order of first appearance; O(n)."""
    codes: dict[Hashable, int] = {}
    return np.fromiter((codes.setdefault(label, len(codes)) for label in labels), dtype=np.int64)


def _contingency(truth: Iterable[Hashable], pred: Iterable[Hashable]) -> _Contingency:
    t = _encode(truth)
    p = _encode(pred)
    if t.shape != p.shape:
        raise ValueError(
            f"truth has {t.size} labels but prediction has {p.size}; they must label the same items"
        )
    if t.size == 0:
        raise ValueError("cannot score an empty labeling: need at least one item")
    cell_counts = Counter(zip(t.tolist(), p.tolist(), strict=True))  # O(n); a dense table would be O(groups²)
    keys = np.array(list(cell_counts.keys()), dtype=np.int64).reshape(-1, 2)
    return _Contingency(
        n=int(t.size),
        truth_codes=t,
        pred_codes=p,
        truth_sizes=np.bincount(t),
        pred_sizes=np.bincount(p),
        cells=np.fromiter(cell_counts.values(), dtype=np.int64, count=len(cell_counts)),
        cell_truth=keys[:, 0],
        cell_pred=keys[:, 1],
    )


def _pairs(sizes: np.ndarray) -> int:
    """Sum of C(s, 2) over group sizes: the number of unordered pairs sharing a group."""
    s = sizes.astype(np.int64)
    return int((s * (s - 1) // 2).sum())


def _f1(precision: float, recall: float) -> float:
    return 0.0 if precision + recall == 0 else 2.0 * precision * recall / (precision + recall)


# --------------------------------------------------------------------------------------------------------
# Scores


def _pairwise(c: _Contingency) -> dict[str, Any]:
    true_pairs = _pairs(c.truth_sizes)
    predicted_pairs = _pairs(c.pred_sizes)
    correct_pairs = _pairs(c.cells)
    precision = 1.0 if predicted_pairs == 0 else correct_pairs / predicted_pairs
    recall = 1.0 if true_pairs == 0 else correct_pairs / true_pairs
    return {
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(_f1(precision, recall)),
        "true_pairs": true_pairs,
        "predicted_pairs": predicted_pairs,
        "correct_pairs": correct_pairs,
    }


def _bcubed(c: _Contingency) -> dict[str, float]:
    # Per item x in cell (i, j): precision(x) = n_ij / |pred group j|, recall(x) = n_ij / |truth group i|.
    # The n_ij items of a cell share those values, so the means over items are sums over cells.
    n_ij = c.cells.astype(np.float64)
    precision = float((n_ij * n_ij / c.pred_sizes[c.cell_pred]).sum() / c.n)
    recall = float((n_ij * n_ij / c.truth_sizes[c.cell_truth]).sum() / c.n)
    return {"precision": precision, "recall": recall, "f1": float(_f1(precision, recall))}


def pairwise_scores(truth_labels: Iterable[Hashable], pred_labels: Iterable[Hashable]) -> dict[str, Any]:
    """Precision, recall and F1 over unordered pairs of items.

    A pair is *true* when both items share a truth label and *predicted* when both share a predicted
    label; a correct pair is both. Counts come from group sizes (sum of C(size, 2)), in O(n).

    Args:
        truth_labels: one label per item (length n >= 1).
        pred_labels: one label per item, same items in the same order.

    Returns:
        ``{"precision", "recall", "f1"}`` as floats in [0, 1] and ``{"true_pairs", "predicted_pairs",
        "correct_pairs"}`` as ints. Precision is 1.0 with no predicted pairs, recall 1.0 with no true pairs,
        F1 0.0 when both are 0 (see the module docstring).

    Raises:
        ValueError: the two labelings differ in length or are empty.
    """
    return _pairwise(_contingency(truth_labels, pred_labels))


def bcubed_scores(truth_labels: Iterable[Hashable], pred_labels: Iterable[Hashable]) -> dict[str, float]:
    """B-cubed precision, recall and F1 (Bagga & Baldwin, 1998), items weighted equally.

    For item x, precision(x) is the share of x's predicted group (x included) that is in x's truth
    group, recall(x) the share of x's truth group that is in x's predicted group; P and R are the means
    over items and F1 is the harmonic mean of those means. Computed from contingency cells in O(n).

    Args:
        truth_labels: one label per item (length n >= 1).
        pred_labels: one label per item, same items in the same order.

    Returns:
        ``{"precision", "recall", "f1"}`` as floats in (0, 1].

    Raises:
        ValueError: the two labelings differ in length or are empty.
    """
    return _bcubed(_contingency(truth_labels, pred_labels))


def clustering_scores(truth_labels: Iterable[Hashable], pred_labels: Iterable[Hashable]) -> dict[str, Any]:
    """Every quality measure of a predicted grouping against a truth grouping, as one flat dict.

    Args:
        truth_labels: one label per item (length n >= 1); singletons need labels of their own.
        pred_labels: one label per item, same items in the same order.

    Returns:
        Floats ``pairwise_precision``, ``pairwise_recall``, ``pairwise_f1``, ``adjusted_rand`` (in
        [-0.5, 1]), ``normalized_mutual_info``, ``fowlkes_mallows``, ``homogeneity``, ``completeness``,
        ``v_measure``, ``bcubed_precision``, ``bcubed_recall``, ``bcubed_f1`` (in [0, 1]); ints ``items``,
        ``true_groups`` and ``predicted_groups`` (groups of two or more items), ``true_pairs``,
        ``predicted_pairs``, ``correct_pairs``.

    Raises:
        ValueError: the two labelings differ in length or are empty.
    """
    c = _contingency(truth_labels, pred_labels)
    pw = _pairwise(c)
    bc = _bcubed(c)
    t, p = c.truth_codes, c.pred_codes  # int codes: sklearn cannot sort mixed label types
    homogeneity, completeness, v_measure = skm.homogeneity_completeness_v_measure(t, p)
    return {
        "pairwise_precision": pw["precision"],
        "pairwise_recall": pw["recall"],
        "pairwise_f1": pw["f1"],
        "adjusted_rand": float(skm.adjusted_rand_score(t, p)),
        "normalized_mutual_info": float(skm.normalized_mutual_info_score(t, p)),
        "fowlkes_mallows": float(skm.fowlkes_mallows_score(t, p)),
        "homogeneity": float(homogeneity),
        "completeness": float(completeness),
        "v_measure": float(v_measure),
        "bcubed_precision": bc["precision"],
        "bcubed_recall": bc["recall"],
        "bcubed_f1": bc["f1"],
        "items": c.n,
        "true_groups": int((c.truth_sizes >= 2).sum()),
        "predicted_groups": int((c.pred_sizes >= 2).sum()),
        "true_pairs": pw["true_pairs"],
        "predicted_pairs": pw["predicted_pairs"],
        "correct_pairs": pw["correct_pairs"],
    }


# --------------------------------------------------------------------------------------------------------
# Ground truth and reports


@dataclass(frozen=True)
class TruthRow:
    """One row of a truth CSV.

    Attributes:
        path: absolute, normalised path (relative CSV paths are taken from the CSV's folder).
        group_id: the row's group, stripped of surrounding whitespace; rows sharing it are duplicates.
        line: 1-based line of the CSV the row came from (for error messages).
    """

    path: str
    group_id: str
    line: int


@dataclass(frozen=True)
class Truth:
    """A ground-truth grouping read by :func:`load_truth`.

    Attributes:
        source: the CSV path as given.
        rows: the rows in file order; every path appears once.
    """

    source: str
    rows: tuple[TruthRow, ...]


def _norm(path: str, base: str | None = None) -> str:
    """Absolute, normalised path; never resolves symlinks (see :func:`evaluate_report`)."""
    if base is not None and not os.path.isabs(path):
        path = os.path.join(base, path)
    return os.path.normpath(os.path.abspath(path))


def _check_match(match: str) -> None:
    if match not in MATCH_MODES:
        raise ConfigError(f"match must be one of {', '.join(MATCH_MODES)}, not {match!r}")


def _truth_keys(truth: Truth, match: str) -> list[str]:
    """The key each truth row is matched by: its path, or its file name (which must then be unique)."""
    _check_match(match)
    if match == "path":
        return [row.path for row in truth.rows]
    keys = [os.path.basename(row.path) for row in truth.rows]
    lines: dict[str, list[int]] = {}
    for key, row in zip(keys, truth.rows, strict=True):
        lines.setdefault(key, []).append(row.line)
    clashes = {key: ls for key, ls in lines.items() if len(ls) > 1}
    if clashes:
        shown = "; ".join(
            f"{key} (lines {', '.join(map(str, ls))})" for key, ls in sorted(clashes.items())[:10]
        )
        more = f" and {len(clashes) - 10} more" if len(clashes) > 10 else ""
        raise InputError(
            f"{truth.source}: cannot match by file name, {len(clashes)} name(s) occur more than once: "
            f"{shown}{more}; match by path instead"
        )
    return keys


def load_truth(csv_path: str | Path, match: str = "path") -> Truth:
    """Read a ground-truth CSV with at least the columns ``path`` and ``group_id``.

    Extra columns are ignored; the header row is required and column names are compared after stripping
    whitespace. A UTF-8 byte-order mark is accepted. Paths may be absolute or relative to the CSV's
    folder; they are made absolute and normalised (``os.path.normpath``), not resolved through symlinks.
    Values are stripped of surrounding whitespace.

    Args:
        csv_path: the CSV file.
        match: ``"path"`` or ``"name"``; with ``"name"`` the file names must be unique, checked here so
            the error comes early (:func:`evaluate_report` checks again).

    Returns:
        The :class:`Truth`, rows in file order.

    Raises:
        InputError: the file cannot be read, has no header, lacks a column, has a row with an empty path
            or group id, lists a path twice, or (``match="name"``) has ambiguous file names.
        ConfigError: ``match`` is not one of ``"path"``, ``"name"``.
    """
    _check_match(match)
    source = str(csv_path)
    base = os.path.dirname(os.path.abspath(source))
    rows: list[TruthRow] = []
    seen: dict[str, int] = {}
    try:
        with open(source, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f, skipinitialspace=True)
            header = next(reader, None)
            if header is None:
                raise InputError(f"{source}: empty file, expected a header with columns path,group_id")
            columns = [name.strip() for name in header]
            missing = [name for name in TRUTH_COLUMNS if name not in columns]
            if missing:
                raise InputError(
                    f"{source}: missing column(s) {', '.join(missing)}; the header has "
                    f"{', '.join(columns) or 'no columns'} (need at least path,group_id)"
                )
            i_path, i_group = columns.index("path"), columns.index("group_id")
            for record in reader:
                line = reader.line_num
                if not any(value.strip() for value in record):
                    continue  # blank line
                if len(record) <= max(i_path, i_group):
                    raise InputError(
                        f"{source}, line {line}: expected at least {max(i_path, i_group) + 1} "
                        f"fields, found {len(record)}"
                    )
                raw_path, group_id = record[i_path].strip(), record[i_group].strip()
                if not raw_path or not group_id:
                    raise InputError(f"{source}, line {line}: empty {'path' if not raw_path else 'group_id'}")
                path = _norm(raw_path, base)
                if path in seen:
                    raise InputError(f"{source}, line {line}: {path} is already listed on line {seen[path]}")
                seen[path] = line
                rows.append(TruthRow(path=path, group_id=group_id, line=line))
    except OSError as e:
        raise InputError(f"cannot read truth file {source}: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise InputError(f"{source}: not UTF-8 text ({e.reason})") from e
    except csv.Error as e:
        raise InputError(f"{source}: malformed CSV: {e}") from e
    truth = Truth(source=source, rows=tuple(rows))
    _truth_keys(truth, match)
    return truth


def _under(path: str, roots: Sequence[str]) -> bool:
    return any(path == root or path.startswith(root.rstrip(os.sep) + os.sep) for root in roots)


def evaluate_report(
    report: Report,
    truth: Truth,
    match: str = "path",
    exclude_groups: Collection[str] = ("CORRUPT",),
) -> dict[str, Any]:
    """Score a dedup JSON report's groups against a ground truth.

    The items scored are the truth rows, except rows whose ``group_id`` is in ``exclude_groups``: those
    are files the scan should have skipped, and are checked against the report's ``skipped`` list instead.
    Each scored item's predicted label is its report group; scored items in no report group are predicted
    singletons, and truth groups of one row are true singletons. Report group members that are not in
    the truth are not scored; they are counted and listed as ``unmatched``.

    Paths are compared as absolute, ``os.path.normpath``-normalised strings, without resolving symlinks:
    the report records paths as the user sees them (dedup does not resolve links either), two links to
    one file are two items to dedup and would collapse into one if resolved, and evaluation then works on
    a report whose files have since been moved or deleted. The cost is that a truth CSV naming files
    through a different symlinked route than the scan did will not match; ``coverage`` makes that visible
    and ``match="name"`` is the way around it.

    Args:
        report: the report (``groups``, ``skipped``, ``images`` and ``paths`` are read; a report without
            ``paths`` or ``images`` is scored too).
        truth: the ground truth from :func:`load_truth`.
        match: ``"path"`` compares full paths; ``"name"`` compares file names (basenames), which must be
            unique in the truth and among the report's group members.
        exclude_groups: truth group ids that are not scored but must appear in ``skipped``; compared
            exactly (case-sensitive).

    Returns:
        A JSON-ready dict::

            {"match": "path" | "name",
             "truth_file": str,
             "metrics": clustering_scores(...)          # see clustering_scores for its keys
             "coverage": {"truth_items": int,           # scored truth rows (= metrics["items"])
                          "in_report_groups": int,      # of those, found in some report group
                          "outside_scanned_paths": [str, ...],    # scored rows under none of report["paths"]
                                                                  # (empty if the report has no "paths"
                                                                  # or match="name")
                          "not_scanned": [str, ...] | None,  # scored rows the scan never saw: in no
                                                  # group, not in "images", not skipped (None when the
                                                  # report has no "images" list); scored as singletons
                          "skipped_by_scan": [str, ...]},    # scored rows the scan skipped as unreadable
             "unmatched": {"count": int, "paths": [str, ...]},    # report group members not in the truth
             "excluded": {"group_ids": [str, ...], "rows": int,
                          "skipped": int,                # excluded rows found in report["skipped"]
                          "not_skipped": [str, ...],     # excluded rows missing from report["skipped"]
                          "grouped": [str, ...]}}        # excluded rows that ended up in a report group

        Lists of paths are sorted. Paths are the truth's normalised paths, except ``unmatched`` which
        lists report paths.

    Raises:
        InputError: the report is malformed, a path is in two report groups, file names are ambiguous
            with ``match="name"``, or the truth has no row left to score.
        ConfigError: ``match`` is not one of ``"path"``, ``"name"``.
    """
    truth_keys = _truth_keys(truth, match)
    excluded_ids = set(exclude_groups)
    groups = [[_norm(m.path) for m in g.members] for g in report.groups]
    skipped = [_norm(s.path) for s in report.skipped]

    def key_of(path: str) -> str:
        return path if match == "path" else os.path.basename(path)

    truth_key_set = set(truth_keys)
    # Report members by key. A path in two groups is a malformed report; with match="name", two report
    # paths sharing a name that the truth uses cannot be told apart.
    member_group: dict[str, int] = {}
    member_path: dict[str, str] = {}
    unmatched: set[str] = set()
    for k, paths in enumerate(groups):
        for path in paths:
            key = key_of(path)
            if key not in truth_key_set:
                unmatched.add(path)
            other = member_path.get(key)
            if other is not None and other != path and key in truth_key_set:
                raise InputError(
                    f"report has several images named {key!r} ({other}, {path}); "
                    "cannot match by file name, match by path instead"
                )
            if other == path and member_group[key] != k:
                raise InputError(f"report lists {path} in groups #{member_group[key] + 1} and #{k + 1}")
            member_path.setdefault(key, path)
            member_group.setdefault(key, k)

    scored = [
        (key, row)
        for key, row in zip(truth_keys, truth.rows, strict=True)
        if row.group_id not in excluded_ids
    ]
    excluded = [
        (key, row) for key, row in zip(truth_keys, truth.rows, strict=True) if row.group_id in excluded_ids
    ]
    if not scored:
        raise InputError(
            f"{truth.source}: no rows to score outside the excluded group(s) "
            f"{', '.join(sorted(excluded_ids)) or '(none)'}"
        )

    scored_keys = [key for key, _ in scored]
    truth_labels = [row.group_id for _, row in scored]
    pred_labels = labels_from_groups(scored_keys, ([key_of(p) for p in paths] for paths in groups))
    metrics = clustering_scores(truth_labels, pred_labels)

    roots = [_norm(p) for p in report.paths]
    if match == "name":
        roots = []  # truth paths need not be where the scan looked: only their names matter
    skipped_keys = {key_of(p) for p in skipped}
    decoded = None if report.images is None else [_norm(i.path) for i in report.images]
    not_scanned: list[str] | None = None
    if decoded is not None:
        seen = {key_of(p) for p in decoded} | set(member_group) | skipped_keys
        not_scanned = sorted(row.path for key, row in scored if key not in seen)
    return {
        "match": match,
        "truth_file": truth.source,
        "metrics": metrics,
        "coverage": {
            "truth_items": len(scored),
            "in_report_groups": sum(1 for key in scored_keys if key in member_group),
            "outside_scanned_paths": sorted(
                row.path for _, row in scored if roots and not _under(row.path, roots)
            ),
            "not_scanned": not_scanned,
            "skipped_by_scan": sorted(row.path for key, row in scored if key in skipped_keys),
        },
        "unmatched": {"count": len(unmatched), "paths": sorted(unmatched)},
        "excluded": {
            "group_ids": sorted(excluded_ids),
            "rows": len(excluded),
            "skipped": sum(1 for key, _ in excluded if key in skipped_keys),
            "not_skipped": sorted(row.path for key, row in excluded if key not in skipped_keys),
            "grouped": sorted(row.path for key, row in excluded if key in member_group),
        },
    }
