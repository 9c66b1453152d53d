"""The engine (floor 5 of docs' layers): trainer.py (the step and the loop), distributed.py (processes,
DDP, collectives, stops, timeouts), optimizers.py (construction, lr schedule, skipped steps), phases.py
(the phase plan), state.py (what a checkpoint holds, resume), checkpoint.py (atomic files), ema.py,
meter.py (time split, FLOPs), devices.py (device, precision, compilation), samples.py (the logged grid)."""
