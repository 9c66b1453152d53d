# Shared by the distgan sbatch scripts; sourced, never run. See slurm/README.md.
#
# The preemption handshake, end to end:
#   1. Slurm sends SIGUSR1 to this batch shell only (`--signal=B:USR1@120`),
#      120 s before the time limit or when preemption is near.
#   2. The trap creates the stop file ($DISTGAN_STOP_FILE). torchrun does not
#      forward SIGUSR1, and srun would not reach other nodes, so the workers are
#      told through the (shared) run directory: rank 0 looks for the file at every
#      step boundary, all ranks agree through an all-reduce, write a checkpoint and
#      exit (code 75; the launcher reports any non-zero worker code as 1).
#   3. This shell waits for the launcher, checks that the newest complete
#      checkpoint is short of train.steps, and runs `scontrol requeue`, at most
#      DISTGAN_MAX_REQUEUES times. The requeued job (same id, same arguments)
#      resumes from that checkpoint (train.resume=auto) and appends to the same
#      log and W&B run.
# SIGTERM (scancel, or the time limit reached without warning) reaches the
# workers directly and makes them checkpoint the same way; the job is not
# requeued by this script then (Slurm requeues preempted jobs itself when the
# partition's PreemptMode is REQUEUE).

distgan_die() {
    echo "distgan slurm: error: $*" >&2
    exit 2
}

# distgan_setup CONFIG [OVERRIDES...]: environment, run dir, log file, stop file.
# Expects DISTGAN_HOME (the checkout) and DEFAULT_LAUNCH (a file in launch/).
distgan_setup() {
    [ $# -ge 1 ] || distgan_die "usage: sbatch $(basename "${SLURM_JOB_NAME:-script}") CONFIG [key=value ...]"
    cd "$SLURM_SUBMIT_DIR" || distgan_die "cannot cd to the submit dir $SLURM_SUBMIT_DIR"
    [ -z "${DISTGAN_ENV_SCRIPT:-}" ] || source "$DISTGAN_ENV_SCRIPT" \
        || distgan_die "sourcing DISTGAN_ENV_SCRIPT=$DISTGAN_ENV_SCRIPT failed"
    PYTHON=${DISTGAN_PYTHON:-python}

    # The run dir comes from the config and its overrides, so #SBATCH --output
    # cannot name it: the log is redirected here instead, appending across requeues.
    RUN_DIR=$("$PYTHON" -c 'import sys; from distgan.config import load_config; print(load_config(sys.argv[1], sys.argv[2:]).run_dir)' "$@") \
        || distgan_die "cannot resolve the config: $PYTHON -m distgan train $* --dry-run shows why"
    mkdir -p "$RUN_DIR" || distgan_die "cannot create the run dir $RUN_DIR"
    LOG="$RUN_DIR/slurm-$SLURM_JOB_ID.out"
    echo "distgan slurm: job $SLURM_JOB_ID logs to $LOG"
    exec >>"$LOG" 2>&1

    if [ "${DISTGAN_CPU:-0}" = 1 ]; then
        LAUNCH_CONFIG=${DISTGAN_LAUNCH_CONFIG:-$DISTGAN_HOME/launch/cpu.yaml}
        NPROC=${DISTGAN_NPROC:-2}
        export ACCELERATE_USE_CPU=1
        local threads=$(( ${SLURM_CPUS_ON_NODE:-$NPROC} / NPROC ))
        export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(( threads > 0 ? threads : 1 ))}
    else
        LAUNCH_CONFIG=${DISTGAN_LAUNCH_CONFIG:-$DISTGAN_HOME/launch/$DEFAULT_LAUNCH}
        NPROC=${DISTGAN_NPROC:-${SLURM_GPUS_ON_NODE:-$(nvidia-smi -L 2>/dev/null | wc -l)}}
        [ "$NPROC" -ge 1 ] 2>/dev/null || distgan_die "no GPU found on $(hostname); set DISTGAN_NPROC, or DISTGAN_CPU=1 for a CPU run"
    fi
    MASTER_PORT=${DISTGAN_MASTER_PORT:-$(( 20000 + ${SLURM_JOB_ID:-0} % 20000 ))}
    MAX_REQUEUES=${DISTGAN_MAX_REQUEUES:-20}
    RESTARTS=${SLURM_RESTART_COUNT:-0}
    export DISTGAN_STOP_FILE="$RUN_DIR/.stop-$SLURM_JOB_ID"
    rm -f "$DISTGAN_STOP_FILE"  # left by the attempt before a requeue
    export PYTHONUNBUFFERED=1 LAUNCH_CONFIG NPROC MASTER_PORT
    echo "=== distgan job $SLURM_JOB_ID (restart $RESTARTS of at most $MAX_REQUEUES) on $SLURM_JOB_NODELIST at $(date -Is)"
    echo "    run dir $RUN_DIR, launch config $LAUNCH_CONFIG, $NPROC process(es) per node, args: $*"
}

# Newest complete checkpoint step and train.steps of the run, as "STEP TOTAL".
distgan_progress() {
    "$PYTHON" - "$RUN_DIR" <<'EOF'
import sys
from pathlib import Path

import yaml

from distgan.train import checkpoint

run = Path(sys.argv[1])
latest = checkpoint.find_latest(run / "checkpoints")
step = int(latest.name.removeprefix("step_")) if latest else 0
print(step, yaml.safe_load((run / "config.yaml").read_text())["train"]["steps"])
EOF
}

distgan_on_signal() {
    echo "=== distgan job $SLURM_JOB_ID: SIG$1 at $(date -Is); asking the workers to checkpoint and stop"
    STOP_REASON=${STOP_REASON:-$1}
    touch "$DISTGAN_STOP_FILE"
}

# distgan_run_with_requeue COMMAND...: run the launcher, hand signals over, requeue.
distgan_run_with_requeue() {
    STOP_REASON=""
    trap 'distgan_on_signal USR1' USR1
    trap 'distgan_on_signal TERM' TERM
    "$@" &
    local pid=$! rc
    while :; do
        wait "$pid"
        rc=$?
        # `wait` returns early (>128) whenever a trapped signal arrives.
        if [ $rc -gt 128 ] && kill -0 "$pid" 2>/dev/null; then continue; fi
        [ $rc -gt 128 ] && { wait "$pid"; rc=$?; }  # exited during the trap: its real status
        break
    done
    trap - USR1 TERM
    rm -f "$DISTGAN_STOP_FILE"
    echo "=== distgan job $SLURM_JOB_ID: launcher exited with $rc at $(date -Is)"
    [ $rc -eq 0 ] && return 0
    if [ "$STOP_REASON" = USR1 ]; then
        local progress step total
        progress=$(distgan_progress) || distgan_die "cannot read the run's progress in $RUN_DIR"
        read -r step total <<<"$progress"
        if [ "$step" -ge "$total" ]; then
            echo "=== distgan: the run is complete (step $step/$total)"
            return 0
        fi
        if [ "$RESTARTS" -ge "$MAX_REQUEUES" ]; then
            echo "=== distgan: stopped at step $step/$total; not requeued, $RESTARTS requeues reached" \
                 "(DISTGAN_MAX_REQUEUES=$MAX_REQUEUES). Submit the same command again to resume."
            return 75
        fi
        echo "=== distgan: checkpoint at step $step/$total; requeueing job $SLURM_JOB_ID (restart $((RESTARTS + 1)))"
        scontrol requeue "$SLURM_JOB_ID" || distgan_die "scontrol requeue $SLURM_JOB_ID failed (is the job --requeue and JobRequeue allowed?)"
        return 0
    fi
    return $rc
}
