"""The reference run as the yardstick: a pure comparison, tested on recorded reports."""

from __future__ import annotations

import copy

import pytest

from edgetam_provision.verify.reference import TOLERANCE, compare_scores, load_reference, plausibility


def recorded(shift: float = 0.0, drop: str | None = None) -> list[dict]:
    """A report's cases carrying the reference scores, shifted by `shift`."""
    ref = load_reference()
    cases = []
    for c in ref["cases"]:
        if c["name"] == drop:
            continue
        objects = [{"iou_scores": [round(x + shift, 4) for x in s]} for s in (c["iou_scores"] or [[0, 0, 0]])]
        cases.append({"name": c["name"], "objects": objects})
    return cases


def test_the_reference_scores_pass():
    assert compare_scores(recorded(), load_reference()) == []


@pytest.mark.parametrize("shift", [TOLERANCE * 0.9, -TOLERANCE * 0.9])
def test_scores_within_the_tolerance_pass(shift):
    assert compare_scores(recorded(shift), load_reference()) == []


@pytest.mark.parametrize("shift", [TOLERANCE * 1.2, -0.3])
def test_scores_shifted_past_the_tolerance_fail_naming_the_first_case(shift):
    failures = compare_scores(recorded(shift), load_reference())
    assert failures and failures[0].startswith("single point: mask ")
    assert "reference" in failures[0] and f"> {TOLERANCE}" in failures[0]


def test_one_mask_off_names_that_case_and_mask():
    cases = recorded()
    cases[2] = copy.deepcopy(cases[2])
    cases[2]["objects"][0]["iou_scores"][1] = 0.5  # box, mask 1: reference 0.978
    assert compare_scores(cases, load_reference()) == [
        "box: mask 1 predicted IoU 0.500, reference 0.978 (off by 0.478 > 0.05)"]


def test_a_missing_case_fails():
    assert compare_scores(recorded(drop="two points"), load_reference()) == [
        "two points: missing from this run, the reference has it"]


def test_plausibility_of_masks_without_ground_truth():
    good = [{"name": "box", "objects": [{"box_inside": 0.99, "box_fill": 0.7}]},
            {"name": "single point", "objects": [{"points_inside": True}]}]
    assert plausibility(good) == []
    bad = [{"name": "box", "objects": [{"box_inside": 0.5, "box_fill": 0.1}]},
           {"name": "single point", "objects": [{"points_inside": False}]}]
    assert len(plausibility(bad)) == 3
