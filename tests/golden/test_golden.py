"""Every shipped config and game option trains as it did when its golden results were recorded
(tests/golden/cases.py): losses and weight statistics, to tolerances that hold on any CPU.

The tolerances come from the spread between the CPU kernels torch can pick on one machine
(AMD EPYC with AVX-512, 2026-12-06): every case run under ATEN_CPU_CAPABILITY avx512 / avx2 /
default with ONEDNN_MAX_CPU_ISA AVX512_CORE_AMX / AVX512_CORE_BF16 / AVX512_CORE / AVX2 / SSE41
(7 combinations). Largest spread seen, and what a real change moves (dcgan case, G's lr 1% higher):

                 float32 spread   bf16 spread   G's lr +1% (float32)
    losses       0 (6 digits)     4e-6          1e-6
    tensor sum   4.6e-6           7.2e-4        1.1e-4
    tensor norm  6.4e-8           1.0e-5        2.1e-5

Each tolerance sits about ten times above its spread, so a machine whose kernels differ more than
these seven still passes, while a change to what is computed (another draw, phase order, loss term,
learning rate) moves the float32 norms by far more than theirs. bf16 rounds every matmul input to
8 bits of mantissa, so its spread, and hence its tolerance, is about a hundred times wider.
"""

import json

import pytest

from tests.golden.cases import CASES, GOLDEN, run_case

pytestmark = pytest.mark.numeric

GOLDEN_DATA = json.loads(GOLDEN.read_text())
# Per precision: losses (logged with 6 significant digits, so rel 1e-5 is two units of the last one),
# then the per-tensor sum and norm, each as (rel, abs).
TOLERANCES = {
    "no": {"loss": (1e-5, 1e-6), "sum": (1e-5, 5e-5), "norm": (1e-6, 1e-6)},
    "bf16": {"loss": (0, 1e-4), "sum": (1e-3, 5e-3), "norm": (1e-3, 1e-4)},
}


def test_every_case_has_a_golden_record():
    assert set(GOLDEN_DATA["cases"]) == set(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_case_trains_as_recorded(name, tmp_path):
    golden = GOLDEN_DATA["cases"][name]
    result = run_case(name, tmp_path / name)
    assert result["precision"] == golden["precision"]
    tol = TOLERANCES[golden["precision"]]
    assert result["losses"].keys() == golden["losses"].keys()
    for step, terms in golden["losses"].items():
        assert result["losses"][step].keys() == terms.keys(), step
        for key, value in terms.items():
            rel, abs_ = tol["loss"]
            assert result["losses"][step][key] == pytest.approx(value, rel=rel, abs=abs_), (step, key)
    assert result["weights"].keys() == golden["weights"].keys()
    for key, (total, norm) in golden["weights"].items():
        got_total, got_norm = result["weights"][key]
        assert got_total == pytest.approx(total, rel=tol["sum"][0], abs=tol["sum"][1]), (key, "sum")
        assert got_norm == pytest.approx(norm, rel=tol["norm"][0], abs=tol["norm"][1]), (key, "norm")
