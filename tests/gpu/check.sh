#!/bin/bash
# One device call, about 3 minutes on an H200 (docs/gpu.md, 2026-11-27): the sync-free non-finite guard
# on CUDA, the step overhead against the bare loop at three sizes, then together: distgan eval against
# the run's own evaluations, the GP + AMP resume tests, and the GP resume diagnosis.
# From the project root on the GPU machine, with the webdataset and braceexpand wheels in .whl/
# (../shared/GPU.md says how to fetch them); $OUT is where the logs go.
set -u
export PYTHONUNBUFFERED=1 WANDB_MODE=disabled
R=$(pwd)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$R
T0=$(date +%s); el() { echo "[t+$(( $(date +%s) - T0 ))s] $*"; }
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 40 python3 tests/gpu/nan_guard_cuda.py /tmp/nanc 2>&1 | tail -4
for c in "32 32 64" "32 32 512" "64 64 256"; do set -- $c
  timeout 40 python3 -m distgan bench overhead --procs 1 --rounds 2 --steps 200 --warmup 30 -- data.resolution=$1 \
    model.g.width=$2 model.d.width=$2 train.batch_size=$3 > $OUT/bench_$1_$2_$3.log 2>&1 || tail -5 $OUT/bench_$1_$2_$3.log
  el "row $c"; grep -A3 "median distgan" $OUT/bench_$1_$2_$3.log | tail -1; grep -E "^\| 1 \| (distgan|bare)" $OUT/bench_$1_$2_$3.log
done
timeout -s INT -k 10 105 python3 -m pytest -q -p no:cacheprovider --tb=short -rf -n 3 \
  "tests/metrics/test_eval_cli.py::test_eval_cli_same_numbers_on_one_and_two_processes" \
  "tests/e2e/test_cli.py::test_mixed_precision_with_gradient_penalty_trains_and_resumes_exactly" > $OUT/tests.log 2>&1 &
timeout 105 python3 tests/gpu/gp_resume_diag.py bf16,no > $OUT/gpdiag.log 2>&1
wait; el "diag + tests"; grep -v "^  " $OUT/gpdiag.log | tail -12; grep -E "^E  |^FAILED|passed|failed" $OUT/tests.log | tail -12
