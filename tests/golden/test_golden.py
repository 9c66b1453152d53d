"""Every shipped config and game option trains as it did when its golden results were recorded
(tests/golden/cases.py): losses to a tolerance on any machine, weights bitwise on the machine
kind that recorded them."""

import json

import pytest

from tests.golden.cases import CASES, GOLDEN, run_case, this_machine

GOLDEN_DATA = json.loads(GOLDEN.read_text())
# Above the float noise between CPU kinds for 4 steps of these tiny nets (losses ~0.7, logged with
# 6 significant digits); a different draw, phase order or loss term moves them by 1e-3 or more.
LOSS_TOL = 1e-4


def test_every_case_has_a_golden_record():
    assert set(GOLDEN_DATA["cases"]) == set(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_case_trains_as_recorded(name, tmp_path):
    golden = GOLDEN_DATA["cases"][name]
    result = run_case(name, tmp_path / name)
    assert result["losses"].keys() == golden["losses"].keys()
    for step, terms in golden["losses"].items():
        assert result["losses"][step].keys() == terms.keys(), step
        for key, value in terms.items():
            assert result["losses"][step][key] == pytest.approx(value, abs=LOSS_TOL), (step, key)
    if this_machine() == GOLDEN_DATA["machine"]:
        assert result["weights_sha256"] == golden["weights_sha256"]
