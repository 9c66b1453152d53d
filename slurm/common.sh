# Shared by the distgan sbatch scripts; sourced, never run. See slurm/README.md and
# docs/operations.md (what the job does on each failure).
#
# One attempt of a job, in order:
#   distgan_setup      resolve the run dir, log to <run dir>/slurm-<jobid>.out, keep a copy of
#                      the submitted config (first attempt) or compare the file with it
#                      (requeued attempt), count Slurm's own requeues, NCCL defaults, threads,
#                      rendezvous port
#   distgan_guards     one task per node; the run dir is the same directory on every node
#   distgan_run_with_requeue
#                      srun one task per node, each `accelerate launch` of that node's
#                      processes; hand USR1/TERM over to the workers; when the launcher
#                      exits, decide (without torch) whether to requeue.
#
# Stopping: Slurm's warning (`--signal=B:USR1@120`) reaches this batch shell only. The
# trap creates the stop file ($DISTGAN_STOP_FILE, in the shared run dir): torchrun does
# not forward SIGUSR1 (it dies and orphans the workers) and srun would not carry it to
# other nodes. Rank 0 polls the file at every step boundary, all ranks agree through an
# all-reduce, checkpoint and exit. SIGTERM (scancel, preemption, a time limit reached
# without warning) is sent by Slurm to every process of the job: the workers checkpoint
# the same way, and the trap here creates the stop file too, so a TERM sent to this
# shell alone (`scancel --batch`) also stops the workers. Only a TERM at the time limit
# is followed by a requeue from here: after scancel the user wants the job over, and a
# preempted job is requeued by Slurm itself where the partition says so. The shell does not send TERM
# on to srun itself: the workers would get it twice, and torchrun treats a second TERM
# during its shutdown as a reason to kill them before they finish the checkpoint.
#
# Requeues, each kind with its own cap, counted in <run dir>/slurm/job-<jobid>/requeues
# (SLURM_RESTART_COUNT counts every kind together):
#   warning  USR1 before the time limit or a preemption, or SIGTERM at the time limit
#            (no warning asked for): requeue while short of train.steps, at most
#            DISTGAN_MAX_REQUEUES (default 50) times
#   failure  the launcher failed (a rank crashed, a collective timed out) after the newest
#            checkpoint advanced during this attempt: at most DISTGAN_MAX_FAILURE_REQUEUES
#            (default 3) times; a failure without progress is not retried
#   slurm    Slurm requeued the job itself (PreemptMode=REQUEUE, node failure): the attempt
#            it ended decides nothing; counted at the start of the next one, never capped here

distgan_die() {
    echo "distgan slurm: error: $*" >&2
    exit 2
}

distgan_log() {
    echo "=== distgan job ${SLURM_JOB_ID:-?}: $*"
}

# distgan_setup CONFIG [OVERRIDES...]. Expects DISTGAN_HOME (the checkout) and
# DEFAULT_LAUNCH (a file in launch/). Sets CONFIG_ARGS: the arguments to train with.
distgan_setup() {
    [ $# -ge 1 ] || distgan_die "usage: sbatch $(basename "${SLURM_JOB_NAME:-script}") CONFIG [key=value ...]"
    cd "$SLURM_SUBMIT_DIR" || distgan_die "cannot cd to the submit dir $SLURM_SUBMIT_DIR"
    [ -z "${DISTGAN_ENV_SCRIPT:-}" ] || source "$DISTGAN_ENV_SCRIPT" \
        || distgan_die "sourcing DISTGAN_ENV_SCRIPT=$DISTGAN_ENV_SCRIPT failed"
    PYTHON=${DISTGAN_PYTHON:-python}
    RESTARTS=${SLURM_RESTART_COUNT:-0}

    # The run dir comes from the config and its overrides, so #SBATCH --output cannot
    # name it: the log is redirected there instead, appending across requeues. This is
    # the only step that imports torch (through the config's game registry).
    local resolved
    resolved=$("$PYTHON" -c 'import sys; from distgan.config import load_config
c = load_config(sys.argv[1], [a for a in sys.argv[2:] if not a.startswith("--")])
print(c.run_dir); print(c.train.steps)' "$@") \
        || distgan_die "cannot resolve the config: $PYTHON -m distgan train $* --dry-run shows why"
    RUN_DIR=$(sed -n 1p <<<"$resolved")
    TOTAL_STEPS=$(sed -n 2p <<<"$resolved")
    mkdir -p "$RUN_DIR" || distgan_die "cannot create the run dir $RUN_DIR"
    RUN_DIR=$(cd "$RUN_DIR" && pwd -P)
    LOG="$RUN_DIR/slurm-$SLURM_JOB_ID.out"
    echo "distgan slurm: job $SLURM_JOB_ID logs to $LOG"
    exec >>"$LOG" 2>&1

    JOB_DIR="$RUN_DIR/slurm/job-$SLURM_JOB_ID"
    mkdir -p "$JOB_DIR" || distgan_die "cannot create $JOB_DIR"
    distgan_log "attempt $((RESTARTS + 1)) on $SLURM_JOB_NODELIST at $(date -Is)"
    distgan_keep_config "$@"
    distgan_count_slurm_requeue

    if [ "${DISTGAN_CPU:-0}" = 1 ]; then
        LAUNCH_CONFIG=${DISTGAN_LAUNCH_CONFIG:-$DISTGAN_HOME/launch/cpu.yaml}
        NPROC=${DISTGAN_NPROC:-2}
        export ACCELERATE_USE_CPU=1
    else
        LAUNCH_CONFIG=${DISTGAN_LAUNCH_CONFIG:-$DISTGAN_HOME/launch/$DEFAULT_LAUNCH}
        NPROC=${DISTGAN_NPROC:-${SLURM_GPUS_ON_NODE:-$(nvidia-smi -L 2>/dev/null | wc -l)}}
        [ "$NPROC" -ge 1 ] 2>/dev/null || distgan_die "no GPU found on $(hostname); set DISTGAN_NPROC, or DISTGAN_CPU=1 for a CPU run"
    fi
    # srun does not inherit --cpus-per-task from sbatch (Slurm 22.05-23.02): without it a
    # node's workers and data loaders share one CPU. Both the flag (on our srun) and the
    # variable (for any srun a site script adds) carry it.
    CPUS_PER_TASK=${SRUN_CPUS_PER_TASK:-${SLURM_CPUS_PER_TASK:-}}
    SRUN_CPUS=()
    if [ -n "$CPUS_PER_TASK" ]; then
        export SRUN_CPUS_PER_TASK=$CPUS_PER_TASK
        SRUN_CPUS=(--cpus-per-task="$CPUS_PER_TASK")
    fi
    local threads=$(( ${CPUS_PER_TASK:-${SLURM_CPUS_ON_NODE:-$NPROC}} / NPROC ))
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(( threads > 0 ? threads : 1 ))}

    distgan_nccl_defaults
    distgan_choose_port
    MAX_REQUEUES=${DISTGAN_MAX_REQUEUES:-50}
    MAX_FAILURE_REQUEUES=${DISTGAN_MAX_FAILURE_REQUEUES:-3}
    export DISTGAN_STOP_FILE="$RUN_DIR/.stop-$SLURM_JOB_ID"
    rm -f "$DISTGAN_STOP_FILE"  # left by the attempt before a requeue
    export PYTHONUNBUFFERED=1 LAUNCH_CONFIG NPROC MASTER_PORT
    distgan_log "run dir $RUN_DIR, launch config $LAUNCH_CONFIG, $NPROC process(es) per node," \
        "${CPUS_PER_TASK:-unset} CPU(s) per task, OMP_NUM_THREADS=$OMP_NUM_THREADS, args: ${CONFIG_ARGS[*]}"
}

# The first attempt keeps the config file in JOB_DIR and trains with that copy. A requeued
# attempt trains with the copy while the file is unchanged; with the file as it is now when it
# was edited: `distgan train` then compares it with the config of the checkpoint it resumes
# and refuses a change of the training trajectory, as for a run resumed by hand (one check,
# distgan/config_change.py; docs/operations.md, "Changing a run's config").
distgan_keep_config() {
    local config=$1 kept="$JOB_DIR/config.yaml" train_with
    shift
    train_with=$kept
    if [ "$RESTARTS" -gt 0 ] || [ -f "$kept" ]; then
        [ -f "$kept" ] || distgan_die "requeued attempt $((RESTARTS + 1)) finds no $kept: the config or" \
            "its overrides now resolve to another run dir ($RUN_DIR) than the one this job started in." \
            "Submit a new job to start that run."
        if ! cmp -s "$config" "$kept"; then
            train_with=$config
            distgan_log "requeued attempt $((RESTARTS + 1)): $config changed since job $SLURM_JOB_ID was" \
                "submitted (kept copy: $kept; diff $kept $config). Training with it as it is now:" \
                "distgan train refuses the changes that alter the training trajectory and says the others"
        fi
        local commit
        commit=$(git -C "$DISTGAN_HOME" rev-parse HEAD 2>/dev/null || echo unknown)
        [ "$commit" = "$(cat "$JOB_DIR/commit" 2>/dev/null)" ] || distgan_log "warning: the checkout" \
            "$DISTGAN_HOME is at $commit, the job was submitted at $(cat "$JOB_DIR/commit" 2>/dev/null);" \
            "resuming with the code as it is now"
        [ "$train_with" != "$kept" ] || distgan_log "requeued attempt: training with the config kept at submission, $kept"
    else
        cp "$config" "$kept.tmp" && mv "$kept.tmp" "$kept" || distgan_die "cannot keep a copy of $config in $JOB_DIR"
        printf '%q ' "$@" >"$JOB_DIR/overrides"
        git -C "$DISTGAN_HOME" rev-parse HEAD >"$JOB_DIR/commit" 2>/dev/null || echo unknown >"$JOB_DIR/commit"
        distgan_log "kept the submitted config as $kept"
    fi
    CONFIG_ARGS=("$train_with" "$@")
}

# Counters live in JOB_DIR/requeues as lines `kind=N` (warning, failure, slurm).
distgan_counter() {
    local value
    value=$(sed -n "s/^$1=//p" "$JOB_DIR/requeues" 2>/dev/null)
    echo "${value:-0}"
}

distgan_count() {
    local kind=$1 warning failure slurm
    warning=$(distgan_counter warning) failure=$(distgan_counter failure) slurm=$(distgan_counter slurm)
    case $kind in
        warning) warning=$((warning + 1)) ;;
        failure) failure=$((failure + 1)) ;;
        slurm) slurm=$((slurm + 1)) ;;
    esac
    printf 'warning=%s\nfailure=%s\nslurm=%s\n' "$warning" "$failure" "$slurm" >"$JOB_DIR/requeues.tmp" \
        && mv "$JOB_DIR/requeues.tmp" "$JOB_DIR/requeues"
}

# A restart this script did not ask for was Slurm's own (preemption in a REQUEUE
# partition, node failure, `scontrol requeue` by hand).
distgan_count_slurm_requeue() {
    local ours=$(( $(distgan_counter warning) + $(distgan_counter failure) + $(distgan_counter slurm) ))
    if [ "$RESTARTS" -gt "$ours" ]; then
        distgan_count slurm
        distgan_log "requeued by Slurm itself (preemption, node failure or by hand): slurm requeues" \
            "$(distgan_counter slurm)"
    fi
}

# Whether Slurm requeued this job while this attempt ran: its restart count moved past
# this attempt's (slurmctld requeues a job on a node failure before it ends its processes).
distgan_requeued_by_slurm() {
    local restarts
    restarts=$(scontrol show job -o "$SLURM_JOB_ID" 2>/dev/null | grep -o 'Restarts=[0-9]*') || return 1
    [ "${restarts#Restarts=}" -gt "$RESTARTS" ]
}

# NCCL settings a cluster team expects; each one the user's environment sets wins.
distgan_nccl_defaults() {
    export NCCL_DEBUG=${NCCL_DEBUG:-WARN}
    # 1: abort the communicators, then end the process: peers blocked in a collective
    # with a dead rank fail too instead of hanging until their own timeout.
    export TORCH_NCCL_ASYNC_ERROR_HANDLING=${TORCH_NCCL_ASYNC_ERROR_HANDLING:-1}
    # Flight recorder: the last collectives of every rank, dumped when one times out.
    export TORCH_NCCL_TRACE_BUFFER_SIZE=${TORCH_NCCL_TRACE_BUFFER_SIZE:-2000}
    export TORCH_NCCL_DUMP_ON_TIMEOUT=${TORCH_NCCL_DUMP_ON_TIMEOUT:-1}
    export TORCH_NCCL_DEBUG_INFO_TEMP_FILE=${TORCH_NCCL_DEBUG_INFO_TEMP_FILE:-$JOB_DIR/nccl_trace_rank_}
    distgan_log "NCCL_DEBUG=$NCCL_DEBUG TORCH_NCCL_ASYNC_ERROR_HANDLING=$TORCH_NCCL_ASYNC_ERROR_HANDLING" \
        "TORCH_NCCL_TRACE_BUFFER_SIZE=$TORCH_NCCL_TRACE_BUFFER_SIZE TORCH_NCCL_DUMP_ON_TIMEOUT=$TORCH_NCCL_DUMP_ON_TIMEOUT" \
        "TORCH_NCCL_DEBUG_INFO_TEMP_FILE=$TORCH_NCCL_DEBUG_INFO_TEMP_FILE"
}

# The rendezvous port, free on this host (the batch step runs on the job's first node,
# the rendezvous host): DISTGAN_MASTER_PORT when set (refused when taken), else the first
# free one of 16 candidates spread by job id over 15000-29999, below the kernel's
# ephemeral range (outgoing connections take ports from there and could hold ours).
distgan_choose_port() {
    MASTER_PORT=$("$PYTHON" - "${DISTGAN_MASTER_PORT:-}" "${SLURM_JOB_ID:-0}" <<'EOF'
import socket, sys
fixed, job = sys.argv[1], int(sys.argv[2])
try:
    low, high = map(int, open("/proc/sys/net/ipv4/ip_local_port_range").read().split())
except OSError:
    low, high = 32768, 60999
def free(port):
    with socket.socket() as s:
        try:
            s.bind(("", port))
        except OSError:
            return False
    return True
if fixed:
    ok = free(int(fixed))
    print(fixed if ok else f"taken {fixed}")
    sys.exit(0)
for k in range(16):
    port = 15000 + (job * 7919 + k * 997) % 15000
    if not low <= port <= high and free(port):
        print(port)
        break
else:
    print("none")
EOF
    )
    case $MASTER_PORT in
        taken*) distgan_die "DISTGAN_MASTER_PORT=${MASTER_PORT#taken } is in use on $(hostname); choose another or unset it" ;;
        none|"") distgan_die "no free rendezvous port found on $(hostname) (16 tried); set DISTGAN_MASTER_PORT" ;;
    esac
    distgan_log "rendezvous port $MASTER_PORT (free on $(hostname) now)"
}

# distgan_guards MULTI_NODE: refuse before launching what would fail later or waste the
# allocation.
distgan_guards() {
    local nodes=${SLURM_JOB_NUM_NODES:-${SLURM_NNODES:-1}} tasks=${SLURM_NTASKS:-1}
    if [ "$1" = 0 ] && [ "$nodes" -gt 1 ]; then
        distgan_die "this script uses one node, the job has $nodes; use slurm/train_multi_node.sbatch"
    fi
    # Each task starts all of its node's processes: 8 tasks per node would start 8x.
    # DISTGAN_TASKS_AS_NODES=1 lets tasks stand in for nodes (the tests: 2 tasks on 1 node).
    if [ "$tasks" -ne "$nodes" ] && [ "${DISTGAN_TASKS_AS_NODES:-0}" != 1 ]; then
        distgan_die "one task per node is required: the job has $tasks tasks on $nodes node(s)" \
            "(SLURM_NTASKS_PER_NODE=${SLURM_NTASKS_PER_NODE:-unset}). Each task starts all $NPROC processes" \
            "of its node; submit with --ntasks-per-node=1."
    fi
    distgan_check_shared_run_dir "$tasks"
}

# Every task must see this shell's run dir: checkpoints, the stop file and the log are
# written there by rank 0 and read by all. A node-local path (/tmp, local scratch) would
# fail at the first checkpoint with a misleading I/O error, or resume from nothing.
distgan_check_shared_run_dir() {
    local tasks=$1 token seen
    token="$(hostname):$$:$RANDOM$RANDOM"
    rm -f "$JOB_DIR"/.seen-*
    printf '%s\n' "$token" >"$JOB_DIR/.shared-check" || distgan_die "cannot write to $JOB_DIR"
    DISTGAN_TOKEN=$token DISTGAN_JOB_DIR=$JOB_DIR srun --ntasks="$tasks" --cpus-per-task=1 --kill-on-bad-exit=0 \
        ${DISTGAN_TASK_PREFIX:-} bash -c '
        if [ "$(cat "$DISTGAN_JOB_DIR/.shared-check" 2>/dev/null)" = "$DISTGAN_TOKEN" ]; then
            echo "$(hostname)" >"$DISTGAN_JOB_DIR/.seen-$SLURM_PROCID"
        else
            echo "distgan slurm: task $SLURM_PROCID on $(hostname) does not see $DISTGAN_JOB_DIR/.shared-check" >&2
        fi'
    seen=$(find "$JOB_DIR" -maxdepth 1 -name '.seen-*' | wc -l)
    rm -f "$JOB_DIR/.shared-check" "$JOB_DIR"/.seen-*
    [ "$seen" -eq "$tasks" ] || distgan_die "the run dir $RUN_DIR is not shared: $seen of $tasks task(s) could" \
        "read a file written there by the batch shell on $(hostname). Put run.dir on a file system every node" \
        "mounts (not /tmp or node-local scratch)."
    distgan_log "run dir visible from all $tasks task(s)"
}

# Newest complete checkpoint step of the run, without torch (the decision after the
# launcher exits must not pay torch's import, nor fail where it cannot import).
distgan_progress() {
    "$PYTHON" "$DISTGAN_HOME/slurm/progress.py" "$RUN_DIR/checkpoints"
}

distgan_on_signal() {
    local why=""
    # Slurm's reason tells a time limit (Reason=TimeLimit, seen on 22.05) from scancel or
    # preemption (both Reason=None while the job completes): ask while the job still runs.
    [ "$1" = TERM ] && why=$(scontrol show job -o "$SLURM_JOB_ID" 2>/dev/null | grep -o 'Reason=[^ ]*')
    distgan_log "SIG$1 at $(date -Is) ${why}; asking the workers to checkpoint and stop"
    STOP_REASON=${STOP_REASON:-$1}
    [ "$why" = Reason=TimeLimit ] && STOP_REASON=TIMELIMIT
    touch "$DISTGAN_STOP_FILE"
}

# distgan_launch: srun one task per node (per task with DISTGAN_TASKS_AS_NODES), each an
# `accelerate launch` of NPROC processes. Output lines carry `<task>: [local<r>]:`
# (srun --label, torchrun's --tee with role `local`); global rank = task * NPROC + r.
# Every worker's stdout/stderr is also in JOB_DIR/ranks/ (torchrun's --log_dir).
distgan_launch() {
    export DISTGAN_RANK_LOGS="$JOB_DIR/ranks/attempt-$((RESTARTS + 1))"
    distgan_log "srun ${SRUN_CPUS[*]} --label: ${SLURM_NTASKS:-1} task(s) x $NPROC process(es)"
    srun --kill-on-bad-exit=1 --label "${SRUN_CPUS[@]}" ${DISTGAN_TASK_PREFIX:-} bash -c '
        mkdir -p "$DISTGAN_RANK_LOGS/task$SLURM_PROCID"
        exec accelerate launch --config_file "$LAUNCH_CONFIG" \
            --num_machines "$SLURM_NTASKS" --machine_rank "$SLURM_PROCID" \
            --num_processes $(( SLURM_NTASKS * NPROC )) \
            --main_process_ip "${DISTGAN_MASTER_ADDR:-$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)}" \
            --main_process_port "$MASTER_PORT" \
            --tee 3 --role local --log_dir "$DISTGAN_RANK_LOGS/task$SLURM_PROCID" \
            -m distgan train "$@"' distgan-task "${CONFIG_ARGS[@]}"
}

# Run distgan_launch, hand signals over, then requeue or not.
distgan_run_with_requeue() {
    STOP_REASON=""
    local start_step
    start_step=$(distgan_progress) || distgan_die "cannot read the checkpoints in $RUN_DIR"
    trap 'distgan_on_signal USR1' USR1
    trap 'distgan_on_signal TERM' TERM
    distgan_launch &
    local pid=$! rc
    while :; do
        wait "$pid"
        rc=$?
        # `wait` returns early (>128) whenever a trapped signal arrives.
        if [ $rc -gt 128 ] && kill -0 "$pid" 2>/dev/null; then continue; fi
        [ $rc -gt 128 ] && { wait "$pid"; rc=$?; }  # exited during the trap: its real status
        break
    done
    # The launcher is gone: a TERM now can only end this shell before it says what it decided.
    # Slurm sends one after a node failure, often just after srun has already exited 0.
    trap - USR1
    trap '' TERM
    rm -f "$DISTGAN_STOP_FILE"
    local step
    step=$(distgan_progress) || distgan_die "cannot read the checkpoints in $RUN_DIR"
    distgan_log "launcher exited with $rc at $(date -Is); newest checkpoint: step $step/$TOTAL_STEPS" \
        "(this attempt started at $start_step)"
    if [ "$step" -lt "$TOTAL_STEPS" ] && distgan_requeued_by_slurm; then
        distgan_log "Slurm requeued job $SLURM_JOB_ID itself during this attempt (node failure, preemption or" \
            "scontrol requeue): nothing to decide here; the next attempt counts it and resumes from the newest" \
            "complete checkpoint"
        return 75
    fi
    [ $rc -eq 0 ] && return 0
    if [ "$step" -ge "$TOTAL_STEPS" ]; then
        distgan_log "the run is complete (step $step/$TOTAL_STEPS)"
        return 0
    fi
    case $STOP_REASON in
        USR1|TIMELIMIT)
            if [ "$(distgan_counter warning)" -ge "$MAX_REQUEUES" ]; then
                distgan_log "stopped at step $step/$TOTAL_STEPS; not requeued: $MAX_REQUEUES warning requeues" \
                    "reached (DISTGAN_MAX_REQUEUES). Submit the same command again to resume."
                return 75
            fi
            distgan_requeue warning "checkpoint at step $step/$TOTAL_STEPS"
            ;;
        TERM)
            distgan_log "stopped by SIGTERM (scancel or preemption)" \
                "at step $step/$TOTAL_STEPS; not requeued by this script. A preempted job in a" \
                "PreemptMode=REQUEUE partition is requeued by Slurm; otherwise submit the same command to resume."
            return 75
            ;;
        *)
            if [ "$step" -le "$start_step" ]; then
                distgan_log "failed (exit $rc) without progress: no newer checkpoint than step $start_step." \
                    "Not requeued (a retry would fail the same way). The rank logs are in $JOB_DIR/ranks/."
                return $rc
            fi
            if [ "$(distgan_counter failure)" -ge "$MAX_FAILURE_REQUEUES" ]; then
                distgan_log "failed (exit $rc) at step $step/$TOTAL_STEPS; not requeued: $MAX_FAILURE_REQUEUES" \
                    "failure requeues reached (DISTGAN_MAX_FAILURE_REQUEUES). The rank logs are in $JOB_DIR/ranks/."
                return $rc
            fi
            distgan_requeue failure "failed (exit $rc) after progress (checkpoint step $start_step -> $step)"
            ;;
    esac
}

distgan_requeue() {
    local kind=$1
    shift
    distgan_count "$kind"
    distgan_log "$*; requeueing job $SLURM_JOB_ID ($kind requeue $(distgan_counter "$kind");" \
        "warning=$(distgan_counter warning) failure=$(distgan_counter failure) slurm=$(distgan_counter slurm))"
    scontrol requeue "$SLURM_JOB_ID" || distgan_die "scontrol requeue $SLURM_JOB_ID failed (is the job --requeue and JobRequeue allowed?)"
    return 0
}
