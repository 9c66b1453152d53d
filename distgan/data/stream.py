"""Streaming WebDataset shards to many ranks and workers: never hang, never duplicate, resume in
place on any number of processes.

`ShardSource` is the data source of `data.name=shards`. Its parts, each in the
module named for it:

- `distgan.data.split`: which shards each canonical stream reads per epoch, and which part of
  every global batch each rank and worker makes (even split, remainder dropped: every rank
  yields the same number of batches);
- `distgan.data.pipeline`: what each loader worker runs (in-shard shuffle, decoding into uint8
  batches, bad samples skipped and named, the streams' positions);
- `distgan.data.decode`: one image field's bytes -> uint8 pixels;
- `distgan.data.reference`: in-order reads (metrics' real side, sample grids).

The global batches are a function of (shards, seed, data.streams, global batch) alone, so the
data position is too: (epoch, global batches consumed in it, the position of every canonical
stream). Each rank knows the positions of the streams it reads; a checkpoint gathers them
(`state_dict(gather)`), so every rank file holds the whole position and a run resumed on any
number of processes continues with the same global batches. N steps + resume + N steps == 2N
steps bitwise, on the same or another number of processes and workers.

Skipped samples are counted as `data/skipped`. Above `data.max_skipped_fraction`
of skipped samples (measured once a rank has seen 256) the run stops with a
DataError.

A loader worker that stops answering (a deadlock after fork, a stuck C call, a stopped process)
would leave this process waiting for its next batch forever. The loader waits at most
`loader_timeout(policy)` seconds for one; then a worker that shows no sign of life since the last
such wait (or is stopped) is killed and the run stops with a DataError naming it. A worker that
is slow but still reading or waking (a big shard downloading slowly) is waited for, with a warning.
"""

from __future__ import annotations

import sys
from typing import Any, Callable, Optional

import torch
from torch.utils.data import DataLoader

from distgan.data.base import Batch, DataInfo
from distgan.data.decode import shard_decode
from distgan.data.manifest import DataError, Manifest, resolve_shards
from distgan.data.pipeline import ShardStream, keep_whole
from distgan.data.reading import ReadPolicy
from distgan.data.reference import read_in_order
from distgan.data.split import batches_per_epoch, chunk_sizes, rank_parts, slot_capacity, worker_groups

MIN_SEEN_FOR_FRACTION = 256
DECODE_ALLOWANCE_S = 10.0  # a batch's decoding on a busy machine (a second or two unloaded)


def loader_timeout(policy: ReadPolicy) -> float:
    """Seconds the main process waits for a loader worker's next batch before it checks on them.

    A worker's longest silence that is not a hang: a shard whose read stalls on every attempt sends
    nothing for (retries + 1) x read_timeout plus the backoffs before the worker skips it; one more
    read_timeout covers the next shard's first read (a chunk can span shards), and
    DECODE_ALLOWANCE_S the batch's decoding. Defaults: 5 x 60 + 3.5 + 10 = 313.5 s."""
    backoffs = sum(policy.pause(retry) for retry in range(1, policy.retries + 1))
    return (policy.retries + 2) * policy.timeout + backoffs + DECODE_ALLOWANCE_S


def shards_info(man: Manifest, data_cfg) -> DataInfo:
    r = data_cfg.resolution
    return DataInfo(kind="images", shape=(man.channels, r, r), num_classes=len(man.classes))


def data_info_from_config(data_cfg) -> DataInfo:
    return shards_info(resolve_shards(data_cfg.shards, data_cfg.manifest).manifest, data_cfg)


class ShardSource:
    """DataSource over packed shards: this rank's batches, uint8 from the workers, float here."""

    def __init__(self, data_cfg, *, global_batch: int, rank: int, world_size: int, seed: int, device=None,
                 cuda_loader: Optional[bool] = None):
        if global_batch % world_size:
            raise DataError(f"global batch {global_batch} does not split over {world_size} processes")
        shardset = resolve_shards(data_cfg.shards, data_cfg.manifest)
        man = shardset.manifest
        self.info = shards_info(man, data_cfg)
        self.kind = man.kind
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.global_batch, self.local_batch = global_batch, global_batch // world_size
        self.rank, self.world = rank, world_size
        self.num_workers = data_cfg.num_workers
        self.workers = max(1, data_cfg.num_workers)
        self.max_skipped_fraction = data_cfg.max_skipped_fraction
        self.policy = ReadPolicy.of(data_cfg)  # data.retries, data.read_timeout
        self.shards, self.seed, self.bufsize = shardset.shards, seed, data_cfg.shuffle_buffer
        self.shards_key = [len(self.shards), shardset.total]
        self.explicit_streams = data_cfg.streams  # 0: processes x workers, or the checkpoint's
        streams = data_cfg.streams or world_size * self.workers
        what = (f"data.streams={streams}" if data_cfg.streams else
                f"{world_size} processes x {self.workers} workers = {streams}")
        lower = "data.streams" if data_cfg.streams else "data.num_workers, or set data.streams"
        if len(self.shards) < streams:
            raise DataError(
                f"data.shards={data_cfg.shards!r} has {len(self.shards)} shards, fewer than {what}: every stream "
                f"needs a shard of its own (repack with a smaller --shard-size, or lower {lower})")
        if streams > global_batch:
            raise DataError(f"{what}: more streams than the global batch of {global_batch} samples; every stream "
                            f"gives at least one sample to each batch (lower {lower})")
        self._configure(streams)
        self.spec = shard_decode(man, data_cfg)
        self.epoch, self.batch = 0, 0
        self.positions: list[Optional[list[int]]] = [[0, 0, 0] for _ in range(self.streams)]
        self.resume_note = ""  # what a resume could not carry over (empty: exact)
        self.resume_info = ""  # what else a resume should say (loader workers left idle)
        # The CUDA loader (default on CUDA; `cuda_loader=True` runs it on CPU for the
        # tests): persistent workers, which keep their dataset copy across epochs and
        # read the epoch from this shared counter, and batches as tensors (pinned
        # when the device is CUDA).
        self.persistent = self.device.type == "cuda" if cuda_loader is None else cuda_loader
        self._epoch_box = torch.zeros(1, dtype=torch.int64).share_memory_()
        self._loader: Optional[DataLoader] = None
        self._it = None
        self._skipped = 0  # since the last metrics() call
        self._seen_total = self._skipped_total = 0
        self._last_skip = ""  # the latest skipped sample's or shard's warning, for the error below
        self._life: dict[int, Optional[tuple]] = {}  # loader worker pid -> _worker_life at the last wait

    def _configure(self, streams: int) -> None:
        """The plan for `streams` canonical streams: chunk sizes, this rank's parts, its workers' groups."""
        self.streams = streams
        self.sizes = chunk_sizes(self.global_batch, streams)
        self.per_epoch = batches_per_epoch([s.count for s in self.shards], self.global_batch, streams)
        if self.per_epoch == 0:
            raise DataError(
                f"data.shards: {self.shards_key[1]} samples in {len(self.shards)} shards give some of the {streams} "
                f"streams {slot_capacity([s.count for s in self.shards], streams)} samples per epoch, less than one "
                f"batch's share of {max(self.sizes)} (a global batch of {self.global_batch} over {streams} streams); "
                f"lower train.batch_size, data.streams or data.num_workers, or repack with more, evener shards")
        self.parts = rank_parts(self.sizes, self.rank, self.local_batch)
        self.groups = worker_groups(self.parts, self.workers)

    def preview(self, count: int) -> Batch:
        """The first `count` samples of the shards (in shard and file order, centre crop, no
        augmentation), without moving the stream: the fixed inputs of a translation game's sample
        grid. On the CPU, as TensorSource.preview."""
        (x, *rest), y = read_in_order(self.shards, self.spec.in_order(), 0, count, "the sample grid's inputs",
                                      policy=self.policy)
        return Batch(x=x, y=y, x_b=rest[0] if rest else None)

    # ------------------------------------------------------------------ iteration

    def _open(self) -> None:
        self._epoch_box[0] = self.epoch
        if self._loader is None:
            self._life.clear()  # new workers
            resume = ({"epoch": self.epoch, "batch": self.batch,
                       "positions": [list(p) if p is not None else None for p in self.positions]}
                      if self.batch else None)
            dataset = ShardStream(self.shards, self.spec, seed=self.seed, bufsize=self.bufsize, sizes=self.sizes,
                                  groups=self.groups, per_epoch=self.per_epoch, epoch_box=self._epoch_box,
                                  resume=resume, as_tensors=self.persistent, policy=self.policy)
            if self.num_workers == 0:
                self._loader = dataset  # iterated in this process
            else:
                # Never handed to accelerator.prepare: the split by rank and worker is ours.
                # The generator keeps DataLoader from drawing its base seed from the
                # global torch RNG (part of the trainer's checkpointed state).
                self._loader = DataLoader(dataset, batch_size=None, num_workers=len(self.groups),
                                          collate_fn=keep_whole, pin_memory=self.device.type == "cuda",
                                          persistent_workers=self.persistent, prefetch_factor=4,
                                          timeout=loader_timeout(self.policy),
                                          generator=torch.Generator().manual_seed(self.seed))
        # Persistent workers answer a new epoch's start at once (they finished the last epoch), so
        # a timeout there is a hang: no second wait.
        self._it = self._from_loader(lambda: iter(self._loader), wait_again=False)

    def _close(self) -> None:
        self._it = None
        if not isinstance(self._loader, DataLoader) or not self.persistent:
            self._loader = None

    def _from_loader(self, call: Callable[[], Any], wait_again: bool = True) -> Any:
        """call() on the loader, with torch's timeout (`loader_timeout`) turned into waiting on while
        every worker shows signs of life, and into a DataError once one does not."""
        while True:
            try:
                return call()
            except RuntimeError as exc:
                if not str(exc).startswith("DataLoader timed out after"):
                    raise
            it = self._it if self._it is not None else self._loader._iterator  # persistent: the reset one
            pin = getattr(it, "_pin_memory_thread", None)  # checked by torch only without a timeout
            if pin is not None and not pin.is_alive():
                raise RuntimeError("Pin memory thread exited unexpectedly")
            pids = [w.pid for w in it._workers if w.is_alive()]
            hung = self._hung(pids)  # also notes each one's state for the message
            if not wait_again:
                hung = pids
            waited = f"{loader_timeout(self.policy):g} s"
            if pids and not hung:
                print(f"distgan data: warning: rank {self.rank}: no batch from the loader workers for {waited}, "
                      f"but they are still reading; waiting on", file=sys.stderr, flush=True)
                continue
            _kill_workers(it)
            self._it = self._loader = None
            named = ", ".join(f"{pid} (stopped)" if (self._life.get(pid) or "?")[0] == "T" else str(pid)
                              for pid in hung)
            raise DataError(
                f"rank {self.rank}: a loader worker sent nothing for {waited} and shows no sign of life "
                f"(pid{'s' if len(hung) > 1 else ''} {named}); killed the loader workers. The wait follows "
                f"data.read_timeout and data.retries: (retries + 2) x read_timeout + backoffs + "
                f"{DECODE_ALLOWANCE_S:g} s. Raise data.read_timeout if a shard read can legitimately stall "
                f"longer; a worker hung on its own (a deadlock after fork, a stuck C call) is a bug of the data "
                f"pipeline, and data.num_workers=0 reads in this process instead")

    def _hung(self, pids: list[int]) -> list[int]:
        """The workers that are stopped, or whose main thread neither woke nor read since the last
        wait (a legitimate one wakes at least every read_timeout); at the first wait, the stopped
        ones only. Where /proc cannot tell (not Linux), all: the timeout alone decides."""
        hung = []
        for pid in pids:
            now = _worker_life(pid)
            if now is None or now[0] == "T" or now == self._life.get(pid):
                hung.append(pid)
            self._life[pid] = now
        return hung

    def _next_item(self) -> dict:
        item = self._from_loader(lambda: next(self._it, None))
        if item is None:
            raise DataError(f"rank {self.rank}: the stream ended after {self.batch} of {self.per_epoch} "
                            f"batches of epoch {self.epoch}")
        if "error" in item:
            raise DataError(item["error"])
        return item

    def next_batch(self) -> Batch:
        if self._it is None:
            self._open()
        # One item per worker, in worker order (the DataLoader takes them round-robin): the
        # parts of this rank's slice of global batch `self.batch`, in stream order.
        items = [self._next_item() for _ in self.groups]
        for item in items:
            if item["batch"] != self.batch:  # the workers' parts must come in step
                raise DataError(f"rank {self.rank}: a loader worker sent batch {item['batch']}, expected {self.batch}")
            for s, pos in item["pos"].items():
                self.positions[s] = [int(v) for v in pos]
            self._skipped += item["skipped"]
            self._skipped_total += item["skipped"]
            self._last_skip = item.get("last_skip") or self._last_skip
            self._seen_total += item["seen"]
        self.batch += 1
        if (self._seen_total >= MIN_SEEN_FOR_FRACTION
                and self._skipped_total > self.max_skipped_fraction * self._seen_total):
            raise DataError(
                f"{self._skipped_total} of {self._seen_total} samples read on rank {self.rank} were unusable "
                f"(more than data.max_skipped_fraction={self.max_skipped_fraction}); the latest: {self._last_skip}; "
                f"see the warnings above and run `distgan data inspect` on the shards")
        if self.batch == self.per_epoch:
            if self._from_loader(lambda: next(self._it, None)) is not None:  # lets the workers finish
                raise DataError("the stream yielded more batches than its epoch plan")
            self._close()
            self._start_epoch(self.epoch + 1)
        # Each part to the device as it came (pinned on CUDA), then one concatenation there.
        x, *rest = (self._to_device([item["images"][k] for item in items]).float().div_(127.5).sub_(1.0)
                    for k in range(len(self.spec.image_fields)))  # (B, C, H, W) in [-1, 1]
        y = self._to_device([item["y"] for item in items]) if self.spec.labelled else None
        return Batch(x=x, y=y, x_b=rest[0] if rest else None)

    def _to_device(self, parts: list) -> torch.Tensor:
        on_device = [torch.as_tensor(p).to(self.device, non_blocking=self.device.type == "cuda") for p in parts]
        return on_device[0] if len(on_device) == 1 else torch.cat(on_device)

    def _start_epoch(self, epoch: int) -> None:
        self.epoch, self.batch = epoch, 0
        self.positions = [[0, 0, 0] for _ in range(self.streams)]

    # ------------------------------------------------------------------ state

    def state_dict(self, gather: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> dict[str, Any]:
        """The position, the same on every rank: (epoch, global batches consumed, every stream's
        position). A rank knows the positions of the streams it reads; `gather` (an all-gather over
        the ranks, every rank calls it) fills in the others."""
        mine = {s for s, _, _ in self.parts}
        # Mid-epoch, the streams this rank does not read are somewhere it does not know.
        positions = [p if self.batch == 0 or s in mine else None for s, p in enumerate(self.positions)]
        if gather is not None:
            known = torch.tensor([[1, *p] if p is not None else [0, 0, 0, 0] for p in positions], dtype=torch.int64,
                                 device=self.device)  # (streams, 4): known, shard index, raw consumed, wraps
            everyone = gather(known).view(-1, self.streams, 4).cpu().tolist()  # (ranks, streams, 4)
            positions = merge_positions([[row[1:] if row[0] else None for row in rank] for rank in everyone])
        return {"epoch": self.epoch, "batch": self.batch, "streams": self.streams,
                "global_batch": self.global_batch, "shards": list(self.shards_key),
                "positions": [list(p) if p is not None else None for p in positions]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._close()
        self._loader = None
        if "positions" not in state:
            raise DataError("the checkpoint's data position is not from a shard stream (data.name changed?)")
        epoch, batch = int(state["epoch"]), int(state["batch"])
        why = None
        if "streams" not in state:
            why = "an earlier distgan wrote it, with positions per process and worker"
        elif list(state["shards"]) != self.shards_key:
            why = (f"its shards were (files, samples) = {list(state['shards'])}, now {self.shards_key}")
        elif int(state["global_batch"]) != self.global_batch:
            why = f"its global batch was {int(state['global_batch'])}, now {self.global_batch}"
        elif self.explicit_streams and int(state["streams"]) != self.explicit_streams:
            why = f"it was read by data.streams={int(state['streams'])}, now {self.explicit_streams}"
        elif batch and any(p is None for p in state["positions"]):
            why = "it lacks the position of some streams"
        if why is not None:
            # The positions do not carry over. Start the next epoch rather than repeat this one.
            self.resume_note = (f"shards: the data position does not carry over ({why}); continuing at the "
                                f"start of epoch {epoch + 1}")
            print(f"distgan data: warning: rank {self.rank}: {self.resume_note}", file=sys.stderr, flush=True)
            self._start_epoch(epoch + 1)
            return
        if int(state["streams"]) != self.streams:  # the run's streams, kept from its first start
            self._configure(int(state["streams"]))
        self._start_epoch(epoch)
        self.batch = batch
        if batch:
            self.positions = [[int(v) for v in p] for p in state["positions"]]
        if len(self.groups) < self.workers and self.num_workers:
            self.resume_info = (f"shards: this process reads {len(self.parts)} of the run's {self.streams} streams "
                                f"(data.streams, fixed at its first start), so {len(self.groups)} of its "
                                f"{self.workers} loader workers are used")

    def metrics(self) -> dict[str, float]:
        skipped, self._skipped = self._skipped, 0
        return {"data/skipped": float(skipped)}


def _worker_life(pid: int) -> Optional[tuple]:
    """(state letter, voluntary context switches, bytes read) of a worker's main thread: any wait
    that ends (a read, a select() that times out, a sleep) counts a switch, any read adds bytes; a
    thread hung in a lock, in a spinning C call or stopped changes neither. None if /proc cannot say."""
    try:
        with open(f"/proc/{pid}/task/{pid}/status") as f:
            status = dict(line.split(":", 1) for line in f if ":" in line)
        with open(f"/proc/{pid}/task/{pid}/io") as f:
            rchar = next(line.split()[1] for line in f if line.startswith("rchar:"))
    except (OSError, StopIteration):
        return None
    return status["State"].split()[0], int(status["voluntary_ctxt_switches"]), int(rchar)


def _kill_workers(it) -> None:
    """SIGKILL a torch DataLoader iterator's workers, then shut it down (torch 2.x internals). A hung
    worker may ignore the SIGTERM of torch's shutdown (a stopped one keeps it pending) after its 5 s
    join, and multiprocessing's exit handler joins daemonic children without a limit: the process
    would hang on exit instead."""
    from torch.utils.data._utils.signal_handling import _remove_worker_pids

    if it._worker_pids_set:  # else torch's SIGCHLD handler reports the kills as worker failures
        _remove_worker_pids(id(it))
        it._worker_pids_set = False
    for w in it._workers:
        if w.is_alive():
            w.kill()
    for w in it._workers:
        w.join(timeout=10)  # reaped, so neither torch's shutdown nor multiprocessing waits for it
    it._shutdown_workers()


def merge_positions(per_rank: list[list[Optional[list[int]]]]) -> list[Optional[list[int]]]:
    """Every stream's position from the ranks' partial views (None: not known to that rank). Ranks
    that read the same stream know the same position."""
    return [next((p[s] for p in per_rank if p[s] is not None), None) for s in range(len(per_rank[0]))]
