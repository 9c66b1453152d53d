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
# is followed by a requeue from here: after scancel the user wants the job over. The shell
# does not send TERM on to srun itself: the workers would get it twice, and torchrun treats
# a second TERM during its shutdown as a reason to kill them before they finish the checkpoint.
#
# Preemption is told from what Slurm says about the job, not from the launcher's exit code
# (preempted workers exit 143 as after scancel, or 1 as after a crash): `scontrol show job`
# shows a PreemptTime once the job is preempted. Slurm 22.05 signals the job steps first (the
# workers checkpoint) and this shell only at the end of GraceTime, and does not requeue a job
# that ends by itself within GraceTime: the shell requeues it (unless Slurm already has).
#
# Requeues, each kind with its own cap, counted in <run dir>/slurm/job-<jobid>/requeues
# (SLURM_RESTART_COUNT counts every kind together):
#   warning    USR1 before the time limit, or SIGTERM at the time limit (no warning asked
#              for): requeue while short of train.steps, at most DISTGAN_MAX_REQUEUES
#              (default 50) times
#   failure    the launcher failed (a rank crashed, a collective timed out) after the newest
#              checkpoint advanced during this attempt: at most DISTGAN_MAX_FAILURE_REQUEUES
#              (default 3) times
#   preempted  Slurm preempted the attempt (PreemptTime): always requeued, never capped, never
#              counted as a failure
#   slurm      Slurm requeued the job itself (node failure, scontrol requeue): the attempt it
#              ended decides nothing; counted at the start of the next one, never capped here
# A warning or a failure without progress (no newer complete checkpoint than at the start of
# the attempt) is not requeued: the next attempt would end the same way.

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
    distgan_count_processes
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
    export DISTGAN_RANK_LOGS="$JOB_DIR/ranks/attempt-$((RESTARTS + 1))"
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

# NODES, TASKS and WORLD from the allocation granted to this attempt, not from the one asked for: a
# job submitted with `--nodes=1-2` may start on 2 nodes, lose one and come back on 1, and the run
# then resumes on fewer processes (distgan train says whether exactly: docs/operations.md,
# "Resuming on another number of processes"). One task per node; DISTGAN_TASKS_AS_NODES=1 lets the
# tasks stand in for nodes (the tests: 2 tasks on 1 node). The previous attempt's count is kept in
# JOB_DIR/processes, for the log to say when it changed.
distgan_count_processes() {
    NODES=${SLURM_JOB_NUM_NODES:-${SLURM_NNODES:-1}}
    TASKS=$NODES
    [ "${DISTGAN_TASKS_AS_NODES:-0}" = 1 ] && TASKS=${SLURM_NTASKS:-$NODES}
    WORLD=$((TASKS * NPROC))
    local before change=""
    before=$(cat "$JOB_DIR/processes" 2>/dev/null)
    if [ -n "$before" ] && [ "$before" != "$WORLD" ]; then
        change=", $before in the previous attempt: the run resumes on another number of processes"
    fi
    echo "$WORLD" >"$JOB_DIR/processes"
    local machines="$NODES node(s)"
    [ "$TASKS" = "$NODES" ] || machines="$TASKS task(s) as nodes on $NODES node(s)"
    distgan_log "$machines x $NPROC process(es): $WORLD process(es)$change"
}

# Counters live in JOB_DIR/requeues as lines `kind=N` (warning, failure, preempted, slurm).
REQUEUE_KINDS="warning failure preempted slurm"
distgan_counter() {
    local value
    value=$(sed -n "s/^$1=//p" "$JOB_DIR/requeues" 2>/dev/null)
    echo "${value:-0}"
}

distgan_count() {
    local kind value
    for kind in $REQUEUE_KINDS; do
        value=$(distgan_counter "$kind")
        [ "$kind" = "$1" ] && value=$((value + 1))
        echo "$kind=$value"
    done >"$JOB_DIR/requeues.tmp" && mv "$JOB_DIR/requeues.tmp" "$JOB_DIR/requeues"
}

distgan_counts() {
    local kind out=""
    for kind in $REQUEUE_KINDS; do out="$out $kind=$(distgan_counter "$kind")"; done
    echo "${out# }"
}

# A restart this script did not count was Slurm's own (node failure, `scontrol requeue` by
# hand, a preemption whose attempt was killed before it could count it).
distgan_count_slurm_requeue() {
    local kind ours=0
    for kind in $REQUEUE_KINDS; do ours=$((ours + $(distgan_counter "$kind"))); done
    if [ "$RESTARTS" -gt "$ours" ]; then
        distgan_count slurm
        distgan_log "requeued by Slurm itself (node failure, preemption or by hand): slurm requeues" \
            "$(distgan_counter slurm)"
    fi
}

# Whether the job's partition cancels preempted jobs (PreemptMode=CANCEL): the site's choice, kept.
distgan_preempt_cancels() {
    local partition
    partition=$(scontrol show job -o "$SLURM_JOB_ID" 2>/dev/null | grep -o ' Partition=[^ ]*') || return 1
    scontrol show partition -o "${partition# Partition=}" 2>/dev/null | grep -q 'PreemptMode=[^ ]*CANCEL'
}

# When Slurm preempted this attempt: `scontrol show job` shows PreemptTime (None before) at or
# after the attempt's StartTime (a PreemptTime of an earlier attempt would be before it).
distgan_preempt_time() {
    local info preempt start
    info=$(scontrol show job -o "$SLURM_JOB_ID" 2>/dev/null) || return 1
    preempt=$(grep -o ' PreemptTime=[^ ]*' <<<"$info") start=$(grep -o ' StartTime=[^ ]*' <<<"$info")
    preempt=${preempt# PreemptTime=} start=${start# StartTime=}
    case $preempt in ""|None|Unknown) return 1 ;; esac
    [[ "$preempt" < "$start" ]] && return 1  # ISO times compare as strings
    echo "$preempt"
}

# Whether Slurm requeued this job while this attempt ran: its restart count moved past
# this attempt's (slurmctld requeues a job on a node failure before it ends its processes).
distgan_requeued_by_slurm() {
    local restarts
    restarts=$(scontrol show job -o "$SLURM_JOB_ID" 2>/dev/null | grep -o 'Restarts=[0-9]*') || return 1
    [ "${restarts#Restarts=}" -gt "$RESTARTS" ]
}

# NCCL and torch settings a cluster team expects, for a hang to leave evidence; each one the
# user's environment sets wins.
distgan_nccl_defaults() {
    export NCCL_DEBUG=${NCCL_DEBUG:-WARN}
    # 3 (torch's documented default, torchtitan's choice): on an error or a timeout end the
    # process without aborting the communicators. 1 aborts them first, and the flight recorder
    # then has nothing left to dump (pytorch issue 121055).
    export TORCH_NCCL_ASYNC_ERROR_HANDLING=${TORCH_NCCL_ASYNC_ERROR_HANDLING:-3}
    # Flight recorder: the last collectives of every rank (NCCL and gloo), dumped when one times
    # out, under the names torch 2.13 reads first (the TORCH_NCCL_ ones are deprecated and warned
    # about on every rank; a value the user gave under them is kept).
    export TORCH_FR_BUFFER_SIZE=${TORCH_FR_BUFFER_SIZE:-${TORCH_NCCL_TRACE_BUFFER_SIZE:-2000}}
    export TORCH_NCCL_DUMP_ON_TIMEOUT=${TORCH_NCCL_DUMP_ON_TIMEOUT:-1}
    # Each rank's Python stacks on a collective timeout or a lost peer (distgan/train/hang.py)
    # and the flight-recorder dumps: one directory per attempt.
    export DISTGAN_STACKS_DIR=${DISTGAN_STACKS_DIR:-$JOB_DIR/hangs/attempt-$((RESTARTS + 1))}
    export TORCH_FR_DUMP_TEMP_FILE=${TORCH_FR_DUMP_TEMP_FILE:-${TORCH_NCCL_DEBUG_INFO_TEMP_FILE:-$DISTGAN_STACKS_DIR/flight_recorder_rank_}}
    # Python's stacks on a fatal signal (the NCCL watchdog's abort, a segfault), to each rank's stderr.
    export PYTHONFAULTHANDLER=${PYTHONFAULTHANDLER:-1}
    mkdir -p "$DISTGAN_STACKS_DIR" || distgan_die "cannot create $DISTGAN_STACKS_DIR"
    distgan_log "NCCL_DEBUG=$NCCL_DEBUG TORCH_NCCL_ASYNC_ERROR_HANDLING=$TORCH_NCCL_ASYNC_ERROR_HANDLING" \
        "TORCH_FR_BUFFER_SIZE=$TORCH_FR_BUFFER_SIZE TORCH_NCCL_DUMP_ON_TIMEOUT=$TORCH_NCCL_DUMP_ON_TIMEOUT" \
        "TORCH_FR_DUMP_TEMP_FILE=$TORCH_FR_DUMP_TEMP_FILE PYTHONFAULTHANDLER=$PYTHONFAULTHANDLER" \
        "DISTGAN_STACKS_DIR=$DISTGAN_STACKS_DIR"
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
    local asked=${SLURM_NTASKS:-$NODES}
    if [ "$1" = 0 ] && [ "$NODES" -gt 1 ]; then
        distgan_die "this script uses one node, the job has $NODES; use slurm/train_multi_node.sbatch"
    fi
    # Each task starts all of its node's processes: 8 tasks per node would start 8x.
    if [ "$asked" -ne "$NODES" ] && [ "${DISTGAN_TASKS_AS_NODES:-0}" != 1 ]; then
        distgan_die "one task per node is required: the job has $asked tasks on $NODES node(s)" \
            "(SLURM_NTASKS_PER_NODE=${SLURM_NTASKS_PER_NODE:-unset}). Each task starts all $NPROC processes" \
            "of its node; submit with --ntasks-per-node=1."
    fi
    distgan_check_shared_run_dir
}

# Every task must see this shell's run dir: checkpoints, the stop file and the log are
# written there by rank 0 and read by all. A node-local path (/tmp, local scratch) would
# fail at the first checkpoint with a misleading I/O error, or resume from nothing.
distgan_check_shared_run_dir() {
    local token seen
    token="$(hostname):$$:$RANDOM$RANDOM"
    rm -f "$JOB_DIR"/.seen-*
    printf '%s\n' "$token" >"$JOB_DIR/.shared-check" || distgan_die "cannot write to $JOB_DIR"
    DISTGAN_TOKEN=$token DISTGAN_JOB_DIR=$JOB_DIR srun --nodes="$NODES" --ntasks="$TASKS" --cpus-per-task=1 --kill-on-bad-exit=0 \
        ${DISTGAN_TASK_PREFIX:-} bash -c '
        if [ "$(cat "$DISTGAN_JOB_DIR/.shared-check" 2>/dev/null)" = "$DISTGAN_TOKEN" ]; then
            echo "$(hostname)" >"$DISTGAN_JOB_DIR/.seen-$SLURM_PROCID"
        else
            echo "distgan slurm: task $SLURM_PROCID on $(hostname) does not see $DISTGAN_JOB_DIR/.shared-check" >&2
        fi'
    seen=$(find "$JOB_DIR" -maxdepth 1 -name '.seen-*' | wc -l)
    rm -f "$JOB_DIR/.shared-check" "$JOB_DIR"/.seen-*
    [ "$seen" -eq "$TASKS" ] || distgan_die "the run dir $RUN_DIR is not shared: $seen of $TASKS task(s) could" \
        "read a file written there by the batch shell on $(hostname). Put run.dir on a file system every node" \
        "mounts (not /tmp or node-local scratch)."
    distgan_log "run dir visible from all $TASKS task(s)"
}

# Newest complete checkpoint step of the run, without torch (the decision after the
# launcher exits must not pay torch's import, nor fail where it cannot import).
distgan_progress() {
    "$PYTHON" "$DISTGAN_HOME/slurm/progress.py" "$RUN_DIR/checkpoints"
}

distgan_on_signal() {
    local why="" preempted
    # Slurm's reason tells a time limit (Reason=TimeLimit, seen on 22.05) from scancel (Reason=None
    # while the job completes): ask while the job still runs. A preemption shows its PreemptTime.
    [ "$1" = TERM ] && why=$(scontrol show job -o "$SLURM_JOB_ID" 2>/dev/null | grep -o 'Reason=[^ ]*')
    preempted=$(distgan_preempt_time) && why="$why preempted at $preempted"
    distgan_log "SIG$1 at $(date -Is) ${why}; asking the workers to checkpoint and stop"
    STOP_REASON=${STOP_REASON:-$1}
    [ "$why" = Reason=TimeLimit ] && STOP_REASON=TIMELIMIT
    touch "$DISTGAN_STOP_FILE"
}

# distgan_launch: srun one task per node (per task with DISTGAN_TASKS_AS_NODES), each an
# `accelerate launch` of NPROC processes. Every line a task writes names its node and the global
# rank: `[<node> rank<R>]:` for a worker's (torchrun's --tee with a prefix template), `[<node>
# launcher]:` for the node's launcher's own. Every worker's stdout/stderr is also in
# JOB_DIR/ranks/attempt-<n>/task<t>/ (torchrun's --log_dir).
# The task's shell stays until the launcher is done (slurmstepd ends what is left of a step when
# its task exits) and ignores SIGTERM, as the label filter does: the launcher and the workers
# get Slurm's TERM themselves and must not lose their output while they checkpoint.
distgan_launch() {
    distgan_log "srun ${SRUN_CPUS[*]}: $TASKS task(s) x $NPROC process(es), lines labelled" \
        "[<node> rank<global rank>]"
    # --nodes and --ntasks said, from this attempt's allocation: srun would otherwise follow
    # SLURM_NTASKS where the submission set one and a default where it did not. Inside the step
    # SLURM_NTASKS is the step's own: the number of machines.
    srun --nodes="$NODES" --ntasks="$TASKS" --kill-on-bad-exit=1 "${SRUN_CPUS[@]}" ${DISTGAN_TASK_PREFIX:-} bash -c '
        node=$(hostname -s)
        mkdir -p "$DISTGAN_RANK_LOGS/task$SLURM_PROCID"
        export TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE="[$node rank\${rank}]:"
        trap : TERM
        accelerate launch --config_file "$LAUNCH_CONFIG" \
            --num_machines "$SLURM_NTASKS" --machine_rank "$SLURM_PROCID" \
            --num_processes $(( SLURM_NTASKS * NPROC )) \
            --main_process_ip "${DISTGAN_MASTER_ADDR:-$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)}" \
            --main_process_port "$MASTER_PORT" \
            --tee 3 --role local --log_dir "$DISTGAN_RANK_LOGS/task$SLURM_PROCID" \
            -m distgan train "$@" 2>&1 \
            | (trap "" TERM; exec sed -u "/^\[$node rank[0-9]*\]:/!s/^/[$node launcher]:/")
        exit "${PIPESTATUS[0]}"' distgan-task "${CONFIG_ARGS[@]}"
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
    local preempted
    if [ "$step" -lt "$TOTAL_STEPS" ] && preempted=$(distgan_preempt_time); then
        if distgan_preempt_cancels; then
            distgan_log "preempted at $preempted (Slurm's PreemptTime for this job), newest checkpoint step" \
                "$step/$TOTAL_STEPS; not requeued: the partition's PreemptMode is CANCEL. Submit the same command" \
                "to resume."
            return 75
        fi
        distgan_count preempted
        distgan_log "preempted at $preempted (Slurm's PreemptTime for this job), newest checkpoint step" \
            "$step/$TOTAL_STEPS: requeued (preemption $(distgan_counter preempted), not a failure; $(distgan_counts))"
        # Slurm 22.05 requeues a preempted job only if it still runs at the end of GraceTime.
        distgan_requeued_by_slurm || scontrol requeue "$SLURM_JOB_ID" || distgan_requeued_by_slurm \
            || distgan_die "scontrol requeue $SLURM_JOB_ID failed after a preemption (is the job --requeue?)"
        return 0
    fi
    if [ "$step" -lt "$TOTAL_STEPS" ] && distgan_requeued_by_slurm; then
        distgan_log "Slurm requeued job $SLURM_JOB_ID itself during this attempt (node failure or scontrol" \
            "requeue): nothing to decide here; the next attempt counts it and resumes from the newest" \
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
            if [ "$step" -le "$start_step" ]; then
                distgan_stop 75 "stopped by SIG${STOP_REASON/TIMELIMIT/TERM at the time limit} without progress (no" \
                    "newer checkpoint than step $start_step): a requeued attempt would stop the same way." \
                    "Give the job a longer --time or an earlier --signal"
            fi
            if [ "$(distgan_counter warning)" -ge "$MAX_REQUEUES" ]; then
                distgan_stop 75 "stopped at step $step/$TOTAL_STEPS, $MAX_REQUEUES warning requeues reached" \
                    "(DISTGAN_MAX_REQUEUES). Submit the same command again to resume"
            fi
            distgan_requeue warning "checkpoint at step $step/$TOTAL_STEPS"
            ;;
        TERM)
            distgan_log "stopped by SIGTERM (scancel: Slurm shows no PreemptTime, no time limit)" \
                "at step $step/$TOTAL_STEPS; not requeued by this script. Submit the same command to resume."
            return 75
            ;;
        *)
            if [ "$step" -le "$start_step" ]; then
                distgan_stop "$rc" "failed (exit $rc) without progress (no newer checkpoint than step $start_step):" \
                    "a retry would fail the same way"
            fi
            if [ "$(distgan_counter failure)" -ge "$MAX_FAILURE_REQUEUES" ]; then
                distgan_stop "$rc" "failed (exit $rc) at step $step/$TOTAL_STEPS, $MAX_FAILURE_REQUEUES failure" \
                    "requeues reached (DISTGAN_MAX_FAILURE_REQUEUES)"
            fi
            distgan_requeue failure "failed (exit $rc) after progress (checkpoint step $start_step -> $step)"
            ;;
    esac
}

# distgan_stop CODE WHY...: the one line of a job that stops for good (a crash-loop cap), with where
# its logs are; ends the batch shell with CODE.
distgan_stop() {
    local code=$1
    shift
    distgan_log "not requeued: $*. Logs: $LOG; each rank's: $DISTGAN_RANK_LOGS/; stacks of a hang:" \
        "$DISTGAN_STACKS_DIR/ ($(distgan_counts))"
    exit "$code"
}

distgan_requeue() {
    local kind=$1
    shift
    distgan_count "$kind"
    distgan_log "$*; requeueing job $SLURM_JOB_ID ($kind requeue $(distgan_counter "$kind"); $(distgan_counts))"
    scontrol requeue "$SLURM_JOB_ID" || distgan_die "scontrol requeue $SLURM_JOB_ID failed (is the job --requeue and JobRequeue allowed?)"
    return 0
}
