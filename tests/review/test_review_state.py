"""Review decisions (dedup.review.state): the reviewed report on disk after every decision, the ignore list,
reopening, reference folders, and what prune then does with the reviewed report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dedup.actions import plan_prune
from dedup.config import load_config
from dedup.errors import InputError, ReportError
from dedup.ignore import IgnoreList
from dedup.pipeline import find_duplicates
from dedup.report import Report, load_report
from dedup.review.state import DecisionError, ReviewState, default_output

from reviewtools import SCAN, open_state


def _group_of(state: ReviewState, name: str) -> int:
    return next(gid for gid, g in state.groups.items() if all(f"/{name}/" in m.path for m in g.members))


def _on_disk(state: ReviewState) -> dict:
    return json.loads(state.output.read_text())


def test_opening_writes_an_empty_reviewed_report_beside_the_scan(scanned) -> None:
    _, report, _ = scanned
    state = open_state(report)
    assert state.output == default_output(report) == report.with_name("scan.reviewed.json")
    data = _on_disk(state)
    assert data["version"] == 1 and data["groups"] == [] and data["stats"]["groups"] == 0
    assert data["review"]["source"] == str(report) and data["review"]["counts"]["pending"] == 4
    assert Report.from_dict(data).to_dict() == data  # schema v1, round-trips
    with pytest.raises(InputError, match="must not overwrite"):
        open_state(report, output=report)


def test_each_decision_is_on_disk_at_once_and_prune_acts_on_exactly_that(scanned, tmp_path) -> None:
    root, report, groups = scanned
    state = open_state(report)
    g1, g2, g3, g4 = (_group_of(state, n) for n in ("g1", "g2", "g3", "g4"))
    best1 = groups["g1"][0]
    state.decide("keep", g1, best1)  # choosing the kept image accepts the group
    assert _on_disk(state)["groups"][0]["keep"] == best1
    marked = groups["g2"][3]  # the flipped copy: "not a duplicate"
    state.decide("not-duplicate", g2, marked)
    state.decide("accept-group", g2)
    state.decide("reject-group", g3)
    data = _on_disk(state)
    by_id = {g["id"]: g for g in data["groups"]}
    assert set(by_id) == {g1, g2}  # g3 rejected, g4 pending: neither acted on
    assert [m["path"] for m in by_id[g1]["members"]][0] == best1
    assert marked not in [m["path"] for m in by_id[g2]["members"]]
    assert data["stats"]["groups"] == 2 and data["stats"]["duplicates"] == 2 + 2
    assert data["review"]["groups"][str(g3)]["status"] == "rejected"
    state.decide("accept-page", groups=[g1, g2, g3, g4])  # pending ones only: g3 stays rejected
    assert {g: state.decisions[g].status for g in (g1, g2, g3, g4)} == {
        g1: "accepted",
        g2: "accepted",
        g3: "rejected",
        g4: "accepted",
    }
    reviewed = load_report(state.output)
    plan = plan_prune(reviewed, to=tmp_path / "q")
    expected = {p for g in reviewed.groups for p in (m.path for m in g.members) if p != g.keep}
    assert {op.src for op in plan.operations} == expected
    assert best1 not in expected and marked not in expected
    assert not any("/g3/" in p for p in expected)


def test_not_duplicate_and_reject_go_to_the_ignore_list_and_scans_honour_it(scanned) -> None:
    root, report, groups = scanned
    state = open_state(report)
    g2, g3 = _group_of(state, "g2"), _group_of(state, "g3")
    marked = groups["g2"][3]
    state.decide("not-duplicate", g2, marked)
    state.decide("reject-group", g3)
    listing = IgnoreList.from_config(load_config())
    pairs = {frozenset((p.a.path, p.b.path)) for p in listing.load()}
    keep2, keep3 = state.keep_of(g2), state.keep_of(g3)
    assert pairs == {frozenset((marked, keep2)), frozenset((groups["g3"][0], keep3))}
    rescanned = find_duplicates([root], load_config(overrides=SCAN))
    together = [{rescanned.images[m].path for m in g.members} for g in rescanned.groups]
    assert not any({marked, keep2} <= g for g in together)
    assert not any(set(groups["g3"]) <= g for g in together)
    # undoing the decisions takes the pairs off the list again
    state.decide("not-duplicate", g2, marked)
    state.decide("reject-group", g3)
    assert listing.load() == []


def test_reopening_restores_the_decisions(scanned) -> None:
    _, report, groups = scanned
    state = open_state(report)
    g1, g3 = _group_of(state, "g1"), _group_of(state, "g3")
    state.decide("keep", g1, groups["g1"][0])
    state.decide("reject-group", g3)
    again = open_state(report)
    assert again.decisions[g1].status == "accepted" and again.keep_of(g1) == groups["g1"][0]
    assert again.decisions[g3].status == "rejected"
    via_reviewed = open_state(state.output)  # opening the reviewed report itself resumes it too
    assert via_reviewed.output == state.output and via_reviewed.decisions[g3].status == "rejected"
    # a decision whose group no longer matches (another scan kept another image) is left out
    data = json.loads(report.read_text())
    for g in data["groups"]:
        if g["id"] == g1:
            g["keep"] = groups["g1"][2]
    report.write_text(json.dumps(data))
    changed = open_state(report)
    assert changed.decisions[g1].status == "pending" and changed.decisions[g3].status == "rejected"
    assert any("no longer match" in n for n in changed.notes)


def test_keep_best_in_every_group(scanned) -> None:
    _, report, groups = scanned
    state = open_state(report)
    assert all(Path(state.keep_of(g)).name.startswith("a_") for g in state.groups)  # keep.policy path
    changed = state.decide("keep-best-all")
    assert len(changed) == 4
    assert {state.keep_of(_group_of(state, n)) for n in groups} == {paths[0] for paths in groups.values()}
    assert all(d.status == "pending" for d in state.decisions.values())  # choosing best accepts nothing


def test_reference_images_stay_the_kept_ones(scanned, tmp_path) -> None:
    import shutil

    from dedup.report import from_result
    from dedup.report.files import write_report

    root, _, groups = scanned
    ref = root / "zz_ref"  # sorts last: keep.policy path does not keep it
    ref.mkdir()
    shutil.copy(groups["g1"][2], ref / "g1_half_copy.jpg")
    report = write_report(
        from_result(find_duplicates([root], load_config(overrides=SCAN))), tmp_path / "scan2.json"
    )
    state = open_state(report, reference=[str(ref)])
    g1 = next(gid for gid, g in state.groups.items() if any("/zz_ref/" in m.path for m in g.members))
    with pytest.raises(DecisionError, match="reference folder"):
        state.decide("keep", g1, groups["g1"][0])
    state.decide("keep-best-all")  # best among the reference images: the only one
    assert state.keep_of(g1) == str(ref / "g1_half_copy.jpg")
    state.decide("accept-group", g1)
    moved = {m.path for g in state.reviewed().groups for m in g.members if m.path != g.keep}
    assert moved == set(groups["g1"]) and state.counts()["files"] == 3


def test_bad_decisions_are_clear_errors(scanned) -> None:
    _, report, groups = scanned
    state = open_state(report)
    g1 = _group_of(state, "g1")
    cases = [
        (("explode", g1), "unknown action"),
        (("keep", 999, groups["g1"][0]), "no group 999"),
        (("keep", g1, "/not/a/member.jpg"), "not a member"),
        (("not-duplicate", g1, state.keep_of(g1)), "is the kept image"),
        (("keep", None), "needs a group"),
    ]
    for args, needle in cases:
        with pytest.raises(DecisionError, match=needle):
            state.decide(*args)
    state.decide("not-duplicate", g1, groups["g1"][0])
    with pytest.raises(DecisionError, match="unmark it first"):
        state.decide("keep", g1, groups["g1"][0])


def test_a_reviewed_report_whose_source_is_gone(scanned, tmp_path) -> None:
    _, report, _ = scanned
    state = open_state(report)
    report.unlink()
    with pytest.raises(ReportError, match="source report .* is gone"):
        open_state(state.output)
