"""Tests for dedup.metrics: every score against hand-computed small cases, brute force and sklearn."""

from __future__ import annotations

import itertools
import json
import math
import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from sklearn import metrics as skm

from dedup.errors import ConfigError, InputError
from dedup.metrics import (
    Truth,
    TruthRow,
    bcubed_scores,
    clustering_scores,
    evaluate_report,
    labels_from_groups,
    load_truth,
    pairwise_scores,
)
from dedup.report import Report

# The running example: items a b c d e.
#   truth {a,b,c} {d,e}        pred {a,b} {c,d} {e}
TRUTH = ["T1", "T1", "T1", "T2", "T2"]
PRED = ["P1", "P1", "P2", "P2", "P3"]


def _h(*sizes: int) -> float:
    """Entropy (nats) of a partition with the given part sizes."""
    n = sum(sizes)
    return -sum(s / n * math.log(s / n) for s in sizes)


# ------------------------------------------------------------------------------------------------ pairwise


def test_pairwise_running_example() -> None:
    # true pairs: C(3,2) + C(2,2) = 3 + 1 = 4   (ab ac bc de)
    # predicted pairs: C(2,2) + C(2,2) + 0 = 2   (ab cd)
    # correct: ab only = 1
    # P = 1/2, R = 1/4, F1 = 2 * 1/2 * 1/4 / (1/2 + 1/4) = (1/4) / (3/4) = 1/3
    s = pairwise_scores(TRUTH, PRED)
    assert (s["true_pairs"], s["predicted_pairs"], s["correct_pairs"]) == (4, 2, 1)
    assert s["precision"] == pytest.approx(0.5)
    assert s["recall"] == pytest.approx(0.25)
    assert s["f1"] == pytest.approx(1 / 3)


def test_pairwise_no_predicted_pairs_has_precision_one_and_f1_zero() -> None:
    # pred all singletons: predicted pairs 0 -> P = 1.0 by convention; correct 0 of 4 true -> R = 0; F1 = 0
    s = pairwise_scores(TRUTH, ["a", "b", "c", "d", "e"])
    assert (s["precision"], s["recall"], s["f1"]) == (1.0, 0.0, 0.0)


def test_pairwise_no_true_pairs_has_recall_one() -> None:
    # truth all singletons, pred {a,b}{c}: predicted 1, correct 0 -> P = 0; true pairs 0 -> R = 1.0
    # F1 = 2 * 0 * 1 / (0 + 1) = 0
    s = pairwise_scores([1, 2, 3], [7, 7, 8])
    assert (s["precision"], s["recall"], s["f1"]) == (0.0, 1.0, 0.0)


def test_pairwise_f1_zero_when_precision_and_recall_zero() -> None:
    # truth {a,b}{c,d}, pred {a,c}{b,d}: 2 true, 2 predicted, 0 correct -> P = R = 0 -> F1 defined as 0
    s = pairwise_scores([0, 0, 1, 1], [0, 1, 0, 1])
    assert (s["precision"], s["recall"], s["f1"]) == (0.0, 0.0, 0.0)


def test_pairwise_counts_match_brute_force_pair_enumeration() -> None:
    rng = random.Random(1234)
    for n, k_truth, k_pred in [(1, 1, 1), (7, 2, 5), (60, 8, 15), (150, 40, 3), (200, 200, 200)]:
        truth = [rng.randrange(k_truth) for _ in range(n)]
        pred = [rng.randrange(k_pred) for _ in range(n)]
        true_pairs = pred_pairs = correct = 0
        for i, j in itertools.combinations(range(n), 2):
            same_t, same_p = truth[i] == truth[j], pred[i] == pred[j]
            true_pairs += same_t
            pred_pairs += same_p
            correct += same_t and same_p
        s = pairwise_scores(truth, pred)
        assert (s["true_pairs"], s["predicted_pairs"], s["correct_pairs"]) == (
            true_pairs,
            pred_pairs,
            correct,
        )
        assert s["precision"] == pytest.approx(correct / pred_pairs if pred_pairs else 1.0)
        assert s["recall"] == pytest.approx(correct / true_pairs if true_pairs else 1.0)


def test_pairwise_scales_linearly_on_large_input() -> None:
    # 300,000 items: 4.5e10 pairs, hopeless for any O(n^2) enumeration, instant from group sizes.
    n = 300_000
    truth = [i // 3 for i in range(n)]  # 100,000 triples: 3 pairs each
    pred = [i // 2 for i in range(n)]  # 150,000 pairs: 1 pair each; (3m, 3m+1) inside a triple is correct
    s = pairwise_scores(truth, pred)
    # a pred pair (2k, 2k+1) is correct when both fall in the same triple: 2k // 3 == (2k+1) // 3,
    # i.e. 2k % 3 != 2 -> 2 of every 3 consecutive pred pairs -> 100,000 correct
    assert (s["true_pairs"], s["predicted_pairs"], s["correct_pairs"]) == (300_000, 150_000, 100_000)


def test_labelings_must_be_non_empty_and_of_equal_length() -> None:
    with pytest.raises(ValueError, match="empty"):
        pairwise_scores([], [])
    with pytest.raises(ValueError, match="3 labels but prediction has 2"):
        clustering_scores([1, 2, 3], [1, 2])
    with pytest.raises(ValueError):
        bcubed_scores([1], [])


# ------------------------------------------------------------------------------------------------ B-cubed


def test_bcubed_running_example() -> None:
    # item  pred group  truth group   precision                 recall
    # a     {a,b}       {a,b,c}       |{a,b}|/|{a,b}| = 1       |{a,b}|/|{a,b,c}| = 2/3
    # b     {a,b}       {a,b,c}       1                         2/3
    # c     {c,d}       {a,b,c}       |{c}|/|{c,d}|   = 1/2     |{c}|/|{a,b,c}|   = 1/3
    # d     {c,d}       {d,e}         |{d}|/|{c,d}|   = 1/2     |{d}|/|{d,e}|     = 1/2
    # e     {e}         {d,e}         1                         |{e}|/|{d,e}|     = 1/2
    # P = (1 + 1 + 1/2 + 1/2 + 1) / 5 = 4/5
    # R = (2/3 + 2/3 + 1/3 + 1/2 + 1/2) / 5 = (8/3) / 5 = 8/15
    # F1 = 2 * 4/5 * 8/15 / (4/5 + 8/15) = (64/75) / (20/15) = 16/25 = 0.64
    s = bcubed_scores(TRUTH, PRED)
    assert s["precision"] == pytest.approx(4 / 5)
    assert s["recall"] == pytest.approx(8 / 15)
    assert s["f1"] == pytest.approx(0.64)


def test_bcubed_matches_per_item_brute_force() -> None:
    rng = random.Random(99)
    n = 80
    truth = [rng.randrange(6) for _ in range(n)]
    pred = [rng.choice("abcdefghij") for _ in range(n)]
    precision = recall = 0.0
    for x in range(n):
        same_pred = [y for y in range(n) if pred[y] == pred[x]]
        same_truth = [y for y in range(n) if truth[y] == truth[x]]
        both = [y for y in same_pred if truth[y] == truth[x]]
        precision += len(both) / len(same_pred)
        recall += len(both) / len(same_truth)
    precision, recall = precision / n, recall / n
    s = bcubed_scores(truth, pred)
    assert s["precision"] == pytest.approx(precision)
    assert s["recall"] == pytest.approx(recall)
    assert s["f1"] == pytest.approx(2 * precision * recall / (precision + recall))


# ------------------------------------------------------------------------------------------------ bundle


def test_clustering_scores_running_example_by_hand() -> None:
    s = clustering_scores(TRUTH, PRED)
    # contingency  P1 P2 P3
    #   T1          2  1  0
    #   T2          0  1  1
    # ARI = (index - expected) / (max - expected), index = sum C(n_ij,2) = 1,
    #   expected = true_pairs * pred_pairs / C(5,2) = 4 * 2 / 10 = 0.8, max = (4 + 2) / 2 = 3
    #   -> (1 - 0.8) / (3 - 0.8) = 0.2 / 2.2 = 1/11
    assert s["adjusted_rand"] == pytest.approx(1 / 11)
    # Fowlkes-Mallows = correct / sqrt(true_pairs * pred_pairs) = 1 / sqrt(8)
    assert s["fowlkes_mallows"] == pytest.approx(1 / math.sqrt(8))
    # H(C) = H(3/5, 2/5); H(K) = H(2/5, 2/5, 1/5)
    # H(C|K): P1 and P3 are pure, P2 = {c,d} splits 1:1 -> (2/5) * ln 2
    # H(K|C): T1 = {a,b,c} splits 2:1 -> (3/5) * H(2/3, 1/3); T2 = {d,e} splits 1:1 -> (2/5) * ln 2
    h_c, h_k = _h(3, 2), _h(2, 2, 1)
    h_c_given_k = 2 / 5 * math.log(2)
    h_k_given_c = 3 / 5 * _h(2, 1) + 2 / 5 * math.log(2)
    homogeneity = 1 - h_c_given_k / h_c  # ~0.588
    completeness = 1 - h_k_given_c / h_k  # ~0.375
    assert s["homogeneity"] == pytest.approx(homogeneity)
    assert s["completeness"] == pytest.approx(completeness)
    assert s["v_measure"] == pytest.approx(2 * homogeneity * completeness / (homogeneity + completeness))
    # NMI (arithmetic) = I(C;K) / ((H(C) + H(K)) / 2), I = H(C) - H(C|K)
    assert s["normalized_mutual_info"] == pytest.approx((h_c - h_c_given_k) / ((h_c + h_k) / 2))
    assert s["pairwise_precision"] == pytest.approx(0.5)
    assert s["pairwise_recall"] == pytest.approx(0.25)
    assert s["pairwise_f1"] == pytest.approx(1 / 3)
    assert s["bcubed_precision"] == pytest.approx(4 / 5)
    assert s["bcubed_recall"] == pytest.approx(8 / 15)
    assert s["bcubed_f1"] == pytest.approx(0.64)
    counts = {k: s[k] for k in ("items", "true_groups", "predicted_groups", "true_pairs", "predicted_pairs")}
    # predicted groups of size >= 2: {a,b} {c,d}; {e} is a singleton
    assert counts == {
        "items": 5,
        "true_groups": 2,
        "predicted_groups": 2,
        "true_pairs": 4,
        "predicted_pairs": 2,
    }
    assert s["correct_pairs"] == 1


def test_perfect_clustering_scores_one_everywhere_whatever_the_label_names() -> None:
    truth = ["x", "x", "x", "y", "y", "z"]  # z is a singleton in both
    pred = [5, 5, 5, "other", "other", (1, 2)]
    s = clustering_scores(truth, pred)
    for key, value in s.items():
        if key in (
            "items",
            "true_groups",
            "predicted_groups",
            "true_pairs",
            "predicted_pairs",
            "correct_pairs",
        ):
            continue
        assert value == pytest.approx(1.0), key
    assert (s["items"], s["true_groups"], s["predicted_groups"]) == (6, 2, 2)
    assert (s["true_pairs"], s["predicted_pairs"], s["correct_pairs"]) == (4, 4, 4)


def test_all_singletons_prediction() -> None:
    s = clustering_scores(TRUTH, ["a", "b", "c", "d", "e"])
    # pairwise: no predicted pairs -> P = 1 (convention), R = 0/4 = 0, F1 = 0
    assert (s["pairwise_precision"], s["pairwise_recall"], s["pairwise_f1"]) == (1.0, 0.0, 0.0)
    # B-cubed: every item's predicted group is itself -> P = 1
    #   R: a, b, c each 1/3, d, e each 1/2 -> (1 + 1) / 5 = 2/5; F1 = 2 * 1 * 2/5 / (7/5) = 4/7
    assert s["bcubed_precision"] == 1.0
    assert s["bcubed_recall"] == pytest.approx(2 / 5)
    assert s["bcubed_f1"] == pytest.approx(4 / 7)
    # ARI: index 0, expected 4 * 0 / 10 = 0, max (4 + 0) / 2 = 2 -> 0
    assert s["adjusted_rand"] == pytest.approx(0.0)
    # every cluster is pure -> homogeneity 1; completeness = 1 - H(K|C) / H(K),
    #   H(K) = ln 5, H(K|C) = 3/5 ln 3 + 2/5 ln 2
    assert s["homogeneity"] == pytest.approx(1.0)
    assert s["completeness"] == pytest.approx(1 - (0.6 * math.log(3) + 0.4 * math.log(2)) / math.log(5))
    # no correct pair -> Fowlkes-Mallows 0
    assert s["fowlkes_mallows"] == 0.0
    assert (s["predicted_groups"], s["predicted_pairs"], s["correct_pairs"]) == (0, 0, 0)


def test_everything_in_one_group_prediction() -> None:
    s = clustering_scores(TRUTH, ["g"] * 5)
    # pairwise: predicted C(5,2) = 10, correct = all 4 true pairs -> P = 0.4, R = 1, F1 = 0.8 / 1.4 = 4/7
    assert s["pairwise_precision"] == pytest.approx(0.4)
    assert s["pairwise_recall"] == 1.0
    assert s["pairwise_f1"] == pytest.approx(4 / 7)
    # B-cubed P: a, b, c each 3/5, d, e each 2/5 -> (9/5 + 4/5) / 5 = 13/25; R = 1
    #   F1 = 2 * 13/25 / (1 + 13/25) = (26/25) / (38/25) = 13/19
    assert s["bcubed_precision"] == pytest.approx(13 / 25)
    assert s["bcubed_recall"] == 1.0
    assert s["bcubed_f1"] == pytest.approx(13 / 19)
    # ARI: index 4, expected 4 * 10 / 10 = 4, max (4 + 10) / 2 = 7 -> 0
    assert s["adjusted_rand"] == pytest.approx(0.0)
    # Fowlkes-Mallows = 4 / sqrt(4 * 10)
    assert s["fowlkes_mallows"] == pytest.approx(4 / math.sqrt(40))
    # one cluster: H(C|K) = H(C) -> homogeneity 0; H(K) = 0 -> completeness 1 (sklearn's convention)
    assert s["homogeneity"] == pytest.approx(0.0)
    assert s["completeness"] == pytest.approx(1.0)
    assert s["normalized_mutual_info"] == pytest.approx(0.0)
    assert s["predicted_groups"] == 1


def test_all_singletons_on_both_sides() -> None:
    # nothing to find and nothing claimed: pairwise P = R = F1 = 1 (convention), like sklearn's ARI/NMI;
    # Fowlkes-Mallows stays sklearn's 0.0 (no correct pair), as documented.
    s = clustering_scores(["a", "b", "c"], [1, 2, 3])
    assert (s["pairwise_precision"], s["pairwise_recall"], s["pairwise_f1"]) == (1.0, 1.0, 1.0)
    assert (s["bcubed_precision"], s["bcubed_recall"], s["bcubed_f1"]) == (1.0, 1.0, 1.0)
    assert s["adjusted_rand"] == 1.0
    assert s["normalized_mutual_info"] == 1.0
    assert s["fowlkes_mallows"] == 0.0
    assert (s["true_groups"], s["predicted_groups"], s["true_pairs"]) == (0, 0, 0)


def test_clustering_scores_agree_with_sklearn_on_random_labels() -> None:
    rng = random.Random(7)
    for n, kt, kp in [(30, 3, 4), (120, 20, 25), (200, 5, 60)]:
        truth = [rng.randrange(kt) for _ in range(n)]
        pred = [rng.randrange(kp) for _ in range(n)]
        s = clustering_scores(truth, pred)
        assert s["adjusted_rand"] == pytest.approx(skm.adjusted_rand_score(truth, pred))
        assert s["normalized_mutual_info"] == pytest.approx(skm.normalized_mutual_info_score(truth, pred))
        assert s["fowlkes_mallows"] == pytest.approx(skm.fowlkes_mallows_score(truth, pred))
        h, c, v = skm.homogeneity_completeness_v_measure(truth, pred)
        assert (s["homogeneity"], s["completeness"], s["v_measure"]) == pytest.approx((h, c, v))
        # Fowlkes-Mallows is the geometric mean of pairwise precision and recall
        assert s["fowlkes_mallows"] == pytest.approx(
            math.sqrt(s["pairwise_precision"] * s["pairwise_recall"])
        )


def test_results_are_plain_json_types() -> None:
    s = clustering_scores(TRUTH, PRED)
    assert all(type(v) in (int, float) for v in s.values()), {k: type(v) for k, v in s.items()}
    assert json.loads(json.dumps(s)) == s


# ------------------------------------------------------------------------------------------------ labels


def test_labels_from_groups_gives_singletons_unique_labels() -> None:
    items = ["a", "b", "c", "d", "e"]
    # group 0 = {b, a}, group 1 = {d}, group 2 = {x} (x not an item: ignored); c and e get 3 and 4
    assert labels_from_groups(items, [["b", "a"], ["d"], ["x"]]) == [0, 0, 3, 1, 4]
    assert labels_from_groups(items, []) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="more than once"):
        labels_from_groups(["a", "a"], [])
    with pytest.raises(ValueError, match="groups 0 and 1"):
        labels_from_groups(items, [["a", "b"], ["c", "a"]])


# ------------------------------------------------------------------------------------------------ truth CSV


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_load_truth_relative_paths_are_taken_from_the_csv_folder(tmp_path: Path) -> None:
    csv_path = _write(
        tmp_path / "gt" / "truth.csv",
        "\ufeffnote, group_id ,path\n"  # BOM, extra column, columns in another order, stray spaces
        "first,1,imgs/a.jpg\nsecond, 1 , ./imgs/../imgs/b.jpg\n\nthird,2,../other/c.jpg\n",
    )
    truth = load_truth(csv_path)
    assert truth.source == str(csv_path)
    assert [(r.path, r.group_id, r.line) for r in truth.rows] == [
        (str(tmp_path / "gt" / "imgs" / "a.jpg"), "1", 2),
        (str(tmp_path / "gt" / "imgs" / "b.jpg"), "1", 3),
        (str(tmp_path / "other" / "c.jpg"), "2", 5),
    ]


def test_load_truth_relative_csv_path_is_resolved_from_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write(tmp_path / "gt" / "truth.csv", "path,group_id\nx.png,g\n")
    monkeypatch.chdir(tmp_path)
    truth = load_truth(os.path.join("gt", "truth.csv"))
    assert truth.rows[0].path == str(tmp_path / "gt" / "x.png")


def test_load_truth_absolute_paths_are_kept_normalised(tmp_path: Path) -> None:
    target = tmp_path / "photos" / "a.jpg"
    messy = f"{tmp_path}/photos//sub/../a.jpg"
    csv_path = _write(
        tmp_path / "elsewhere" / "t.csv", f"path,group_id\n{target},7\n{messy.replace('a.jpg', 'b.jpg')},7\n"
    )
    truth = load_truth(csv_path)
    assert [r.path for r in truth.rows] == [str(target), str(tmp_path / "photos" / "b.jpg")]


def test_load_truth_does_not_resolve_symlinks(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real, target_is_directory=True)
    csv_path = _write(tmp_path / "t.csv", "path,group_id\nlink/a.jpg,1\n")
    assert load_truth(csv_path).rows[0].path == str(tmp_path / "link" / "a.jpg")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("path,group\na.jpg,1\n", "missing column(s) group_id"),
        ("file,group_id\na.jpg,1\n", "missing column(s) path"),
        ("", "empty file"),
        ("path,group_id\na.jpg,\n", "line 2: empty group_id"),
        ("path,group_id\n,1\n", "line 2: empty path"),
        ("group_id,x,path\n1,2\n", "line 2: expected at least 3 fields"),
        ("path,group_id\na.jpg,1\nb.jpg,2\n./a.jpg,1\n", "line 4: .*a.jpg is already listed on line 2"),
    ],
)
def test_load_truth_errors_name_the_file_and_the_problem(tmp_path: Path, text: str, message: str) -> None:
    csv_path = _write(tmp_path / "bad.csv", text)
    with pytest.raises(InputError, match=r"bad\.csv.*" + message.replace("(", r"\(").replace(")", r"\)")):
        load_truth(csv_path)


def test_load_truth_missing_file_and_binary_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read truth file .*nope.csv"):
        load_truth(tmp_path / "nope.csv")
    (tmp_path / "bin.csv").write_bytes(b"path,group_id\n\xff\xfe\x00,1\n")
    with pytest.raises(InputError, match=r"bin\.csv: not UTF-8"):
        load_truth(tmp_path / "bin.csv")


def test_load_truth_by_name_rejects_ambiguous_names(tmp_path: Path) -> None:
    csv_path = _write(
        tmp_path / "t.csv", "path,group_id\na/x.jpg,1\nb/x.jpg,2\nc/y.jpg,2\nd/y.jpg,3\ne/z.jpg,3\n"
    )
    assert len(load_truth(csv_path, match="path").rows) == 5  # fine by path
    with pytest.raises(
        InputError, match=r"t\.csv: .*2 name\(s\).*x\.jpg \(lines 2, 3\); y\.jpg \(lines 4, 5\)"
    ):
        load_truth(csv_path, match="name")
    with pytest.raises(ConfigError, match="path, name"):
        load_truth(csv_path, match="basename")


# ------------------------------------------------------------------------------------------------ reports


def _report(groups: list[list[str]], skipped: Sequence[str] = (), paths: list[str] | None = None) -> Report:
    report: dict[str, Any] = {
        "version": 1,
        "groups": [
            {
                "id": k + 1,
                "keep": members[0],
                "members": [
                    {"path": p, "similarity_to_keep": 1.0, "bytes": 1, "width": 1, "height": 1, "mtime": 0.0}
                    for p in members
                ],
            }
            for k, members in enumerate(groups)
        ],
        "skipped": [{"path": p, "reason": "truncated image"} for p in skipped],
    }
    if paths is not None:
        report["paths"] = paths
    return Report.from_dict(report)


@pytest.fixture
def scene(tmp_path: Path) -> tuple[Truth, Path]:
    """Truth: {a,b,c} {d,e} {f} plus three CORRUPT rows, written with relative paths."""
    csv_path = _write(
        tmp_path / "truth.csv",
        "path,group_id\n"
        "photos/a.jpg,g1\nphotos/b.jpg,g1\nphotos/c.jpg,g1\nphotos/d.jpg,g2\nphotos/e.jpg,g2\nphotos/f.jpg,g3\n"
        "photos/bad1.jpg,CORRUPT\nphotos/bad2.jpg,CORRUPT\nphotos/bad3.jpg,CORRUPT\n",
    )
    return load_truth(csv_path), tmp_path / "photos"


def test_evaluate_report_scores_groups_and_checks_corrupt_rows(scene: tuple[Truth, Path]) -> None:
    truth, photos = scene
    p = {
        name: str(photos / f"{name}.jpg")
        for name in ["a", "b", "c", "d", "e", "f", "bad1", "bad2", "bad3", "z"]
    }
    # pred {a,b} {c,d,z}; e and f in no group -> singletons; z is not in the truth -> unmatched.
    # bad1 and bad3 skipped as they should be, bad2 not. Report paths written un-normalised on purpose.
    report = _report(
        [[p["a"], f"{photos}/./b.jpg"], [p["c"], f"{photos}/x/../d.jpg", p["z"]]],
        skipped=[p["bad1"], p["bad3"]],
        paths=[str(photos)],
    )
    result = evaluate_report(report, truth)
    m = result["metrics"]
    # scored items a..f: truth {a,b,c}{d,e}{f}, pred {a,b}{c,d}{e}{f} -> the running example plus a
    # singleton f that adds no pair: true 4, predicted 2, correct 1 -> P 1/2, R 1/4, F1 1/3
    assert (m["items"], m["true_pairs"], m["predicted_pairs"], m["correct_pairs"]) == (6, 4, 2, 1)
    assert (m["pairwise_precision"], m["pairwise_recall"]) == (0.5, 0.25)
    # B-cubed: f adds precision 1 and recall 1 -> P = (4 + 1) / 6 = 5/6, R = (8/3 + 1) / 6 = 11/18
    assert m["bcubed_precision"] == pytest.approx(5 / 6)
    assert m["bcubed_recall"] == pytest.approx(11 / 18)
    assert (m["true_groups"], m["predicted_groups"]) == (2, 2)
    assert result["coverage"] == {
        "truth_items": 6,
        "in_report_groups": 4,
        "outside_scanned_paths": [],
        "not_scanned": None,  # this report has no "images" list
        "skipped_by_scan": [],
    }
    assert result["unmatched"] == {"count": 1, "paths": [p["z"]]}
    assert result["excluded"] == {
        "group_ids": ["CORRUPT"],
        "rows": 3,
        "skipped": 2,
        "not_skipped": [p["bad2"]],
        "grouped": [],
    }
    assert (result["match"], result["truth_file"]) == ("path", truth.source)
    assert json.loads(json.dumps(result)) == result


def test_evaluate_report_flags_corrupt_rows_found_in_groups(scene: tuple[Truth, Path]) -> None:
    truth, photos = scene
    bad1 = str(photos / "bad1.jpg")
    report = _report([[str(photos / "a.jpg"), bad1]], skipped=[str(photos / "bad2.jpg")])
    result = evaluate_report(report, truth)
    assert result["excluded"]["grouped"] == [bad1]
    assert result["excluded"]["not_skipped"] == [bad1, str(photos / "bad3.jpg")]
    assert result["excluded"]["skipped"] == 1
    assert result["unmatched"]["count"] == 0  # bad1 is in the truth, just not scored
    # a is grouped only with an unscored item -> no predicted pair among scored items
    assert result["metrics"]["predicted_pairs"] == 0
    # with no excluded group ids the CORRUPT rows are scored as an ordinary group {bad1, bad2, bad3}
    plain = evaluate_report(report, truth, exclude_groups=())
    assert plain["metrics"]["items"] == 9
    assert plain["excluded"]["rows"] == 0


def test_evaluate_report_perfect_report_and_empty_report(scene: tuple[Truth, Path]) -> None:
    truth, photos = scene
    abc = [str(photos / f"{n}.jpg") for n in "abc"]
    de = [str(photos / f"{n}.jpg") for n in "de"]
    perfect = evaluate_report(_report([abc, de]), truth)["metrics"]
    assert perfect["pairwise_f1"] == 1.0 and perfect["bcubed_f1"] == 1.0 and perfect["adjusted_rand"] == 1.0
    empty = evaluate_report(_report([]), truth)
    assert empty["metrics"]["pairwise_recall"] == 0.0
    assert empty["coverage"]["in_report_groups"] == 0


def test_evaluate_report_lists_truth_rows_outside_the_scanned_paths(scene: tuple[Truth, Path]) -> None:
    truth, photos = scene
    result = evaluate_report(_report([], paths=[str(photos / "a.jpg"), str(photos)[:-1]]), truth)
    # only a.jpg itself is under a scanned path (".../photo" is a string prefix of ".../photos", not a parent)
    assert result["coverage"]["outside_scanned_paths"] == sorted(str(photos / f"{n}.jpg") for n in "bcdef")


def test_evaluate_report_by_name(tmp_path: Path) -> None:
    # the truth was written for a copy of the photos elsewhere; only file names are shared
    csv_path = _write(tmp_path / "t.csv", "path,group_id\nx/a.jpg,1\nx/b.jpg,1\ny/c.jpg,2\n")
    truth = load_truth(csv_path, match="name")
    scan = tmp_path / "scan"
    report = _report(
        [
            [str(scan / "a.jpg"), str(scan / "sub" / "b.jpg")],
            [str(scan / "n1" / "z.jpg"), str(scan / "n2" / "z.jpg")],
        ],
        paths=[str(scan)],
    )
    by_name = evaluate_report(report, truth, match="name")
    assert (by_name["metrics"]["correct_pairs"], by_name["metrics"]["pairwise_f1"]) == (1, 1.0)
    # two report images named z.jpg are fine while the truth has no z.jpg: both are unmatched
    assert by_name["unmatched"]["count"] == 2
    assert by_name["coverage"]["outside_scanned_paths"] == []  # not meaningful when matching by name
    by_path = evaluate_report(report, truth, match="path")
    assert by_path["metrics"]["predicted_pairs"] == 0
    assert by_path["unmatched"]["count"] == 4
    assert len(by_path["coverage"]["outside_scanned_paths"]) == 3


def test_evaluate_report_by_name_rejects_ambiguous_names(tmp_path: Path) -> None:
    truth = load_truth(_write(tmp_path / "t.csv", "path,group_id\na.jpg,1\nb.jpg,1\n"), match="name")
    report = _report([[str(tmp_path / "p" / "a.jpg"), str(tmp_path / "q" / "a.jpg")]])
    with pytest.raises(InputError, match="several images named 'a.jpg'"):
        evaluate_report(report, truth, match="name")
    # a Truth built by hand is checked too
    twins = Truth("hand", (TruthRow("/p/a.jpg", "1", 2), TruthRow("/q/a.jpg", "1", 3)))
    with pytest.raises(InputError, match=r"hand: .*a\.jpg \(lines 2, 3\)"):
        evaluate_report(_report([]), twins, match="name")


def test_evaluate_report_rejects_malformed_reports_and_truths(scene: tuple[Truth, Path]) -> None:
    truth, photos = scene
    a = str(photos / "a.jpg")
    with pytest.raises(InputError, match="in groups #1 and #2"):
        evaluate_report(_report([[a, str(photos / "b.jpg")], [a]]), truth)
    with pytest.raises(ConfigError, match="match must be one of"):
        evaluate_report(_report([]), truth, match="stem")
    only_corrupt = Truth("c.csv", (TruthRow(a, "CORRUPT", 2),))
    with pytest.raises(InputError, match="c.csv: no rows to score"):
        evaluate_report(_report([]), only_corrupt)
