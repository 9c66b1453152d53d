"""Command line: `distgan train | sample | encode | translate | export | report | data | bench`.

The entry point stays small: parse, build, run, close. Errors a user can fix
(config, data, checkpoints: `DistganError`) are printed as one line naming the
problem, with exit code 2; any other exception keeps its traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from distgan.argtypes import at_least

# `distgan train` stopped early by SIGTERM, SIGUSR1 or the stop file after writing a
# checkpoint: run it again to resume (sysexits' EX_TEMPFAIL, "try again later").
# Every worker returns it; `accelerate launch` then returns 1 or, when it got the SIGTERM
# itself, 143 or 1 by timing: torch's codes, which no caller should read (docs/operations.md).
EXIT_STOPPED = 75
# `distgan train` stopped by Ctrl-C (SIGINT) after writing a checkpoint, or interrupted outside the
# training loop: 128 + SIGINT, as a shell reports a command ended by Ctrl-C. Every worker returns it
# (distgan.train.distributed.EXIT_INTERRUPTED, the same); `accelerate launch` returns torch's code.
EXIT_INTERRUPTED = 130


def _interruptible(command):
    """A KeyboardInterrupt outside the training loop (imports, start-up, resume), where Ctrl-C has
    nothing of the run's to save, as one line and EXIT_INTERRUPTED instead of a traceback; the other
    SIGINTs of the same Ctrl-C (the launcher forwards its own) end the process silently."""
    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except KeyboardInterrupt:
            import signal

            signal.signal(signal.SIGINT, lambda *_: os._exit(EXIT_INTERRUPTED))
            if os.environ.get("RANK", "0") == "0":
                print(f"distgan {args.command}: interrupted (Ctrl-C) outside the training loop: no checkpoint "
                      f"written; run the same command again to start or resume", file=sys.stderr, flush=True)
            return EXIT_INTERRUPTED
    return run


@_interruptible
def _cmd_train(args: argparse.Namespace) -> int:
    from distgan.config import check_files, dump_yaml, load_config, unreachable_files

    cfg = load_config(args.config, args.overrides)
    if args.dry_run:  # every check without importing torch; the file checks where the files are here
        unreachable = unreachable_files(cfg)
        for problem in unreachable:  # e.g. a login node that does not mount the data: training would stop
            print(f"distgan train: warning: not checked here: {problem}", file=sys.stderr)
        if not unreachable:
            check_files(cfg)
        print(dump_yaml(cfg), end="")
        return 0
    from distgan.errors import DistganError
    from distgan.train.trainer import Trainer

    fresh = not cfg.run_dir.exists()
    try:
        trainer = Trainer(cfg, allow_config_change=args.allow_config_change)
    except DistganError:
        if fresh:  # refused before it wrote anything: leave no empty run dir behind either
            _remove_if_empty(cfg.run_dir)
        raise
    step = trainer.fit()
    stopped = step < cfg.train.steps
    with trainer.comm.catching_stop_signals(trainer.ckpt_root):  # one Ctrl-C's later SIGINTs count once here too
        if trainer.interrupted:
            if trainer.is_main:
                from distgan.train.checkpoint import find_latest
                from distgan.train.distributed import launch_command

                print(f"interrupted (Ctrl-C) at step {step}/{cfg.train.steps}: checkpoint "
                      f"{find_latest(trainer.ckpt_root)} written; resume with: {launch_command(sys.argv[1:])}",
                      flush=True)
        elif trainer.is_main:
            print(f"{'stopped' if stopped else 'done'}: step {step}/{cfg.train.steps}, run dir {cfg.run_dir}",
                  flush=True)
        trainer.acc.end_training()
    return EXIT_INTERRUPTED if trainer.interrupted else EXIT_STOPPED if stopped else 0


def _remove_if_empty(path: Path) -> None:
    try:
        path.rmdir()  # only an empty directory; every rank may try, one wins
    except OSError:
        pass


def _sample_conditions(args: argparse.Namespace, game, nets):
    """Conditions from `distgan sample`'s flags (None: the game draws them), and the grid's row length.
    The game answers whether it takes each (its CapabilityError names the flag and the run's variant)."""
    import torch

    from distgan.errors import ConfigError
    from distgan.games import Conditions

    codes = _sample_codes(args, game)
    if args.label is not None:
        game.check_labels(flag="--label")
        classes = game.info.num_classes
        if args.label == "all":  # --num per class, class-major: one grid row per class
            labels = torch.arange(classes).repeat_interleave(args.num)
            return Conditions(labels=labels, codes={k: v.repeat(classes) for k, v in codes.items()}), args.num
        try:
            labels = torch.full((args.num,), int(args.label), dtype=torch.long)
        except ValueError:
            raise ConfigError(f"--label {args.label!r}: expected a class index or all") from None
        game.check_labels(labels, "--label")
        return Conditions(labels=labels, codes=codes), 0
    if args.encode:  # G(E(x)): the noise of each sample is the code of one image
        from distgan.encoding import load_images, reconstruction_conditions

        game.check_encoder("--encode")
        if codes or args.inputs:
            raise ConfigError("--encode: the codes come from the images; give no --code or --inputs with it")
        images = load_images(args.encode, game, "--encode")
        return reconstruction_conditions(game, nets, images, device=torch.device("cpu")), 0
    if codes:
        return Conditions(codes=codes), 0
    if args.inputs:
        game.check_inputs(True, "--inputs")
        images = torch.from_numpy(np.load(args.inputs)).float()
        if images.dim() != 4 or tuple(images.shape[1:]) != tuple(game.info.shape):
            raise ConfigError(f"--inputs {args.inputs}: expected (N, {', '.join(map(str, game.info.shape))}) "
                              f"images in [-1, 1], got {tuple(images.shape)}")
        return Conditions(images=images), 0
    return None, 0


def _data_preview(cfg, num: int):
    """The first `num` samples of the run's own data set (its data.split), for `sample` of an
    image-input run without --inputs (read only when the game asks for them)."""
    from distgan.data import build_source
    from distgan.errors import ConfigError

    source = build_source(cfg, global_batch=1, rank=0, world_size=1)
    if not hasattr(source, "preview"):
        raise ConfigError(f"data.name={cfg.data.name}: give the images to translate with --inputs (or use "
                          f"distgan translate on a folder)")
    return source.preview(num)


def _sample_codes(args: argparse.Namespace, game) -> dict:
    """`--code NAME=VALUE` flags -> {name: (--num,) tensor}: a class index for a categorical code, a
    number for a continuous one (InfoGAN: cat=3, cont0=-1.5)."""
    import torch

    from distgan.errors import ConfigError

    known, codes = game.latent_codes(), {}
    for item in args.code or []:
        name, sep, raw = item.partition("=")
        game.check_codes([name if sep else ""], "--code", repr(item))
        try:
            value = int(raw) if known[name] else float(raw)
        except ValueError:
            kind = "a class index" if known[name] else "a number"
            raise ConfigError(f"--code {item!r}: {name} takes {kind}") from None
        if known[name] and not 0 <= value < known[name]:
            raise ConfigError(f"--code {item!r}: {name} has values 0..{known[name] - 1}")
        codes[name] = torch.full((args.num,), value, dtype=torch.long if known[name] else torch.float32)
    return codes


def _cmd_sample(args: argparse.Namespace) -> int:
    import torch

    from distgan.errors import ConfigError
    from distgan.log import save_png
    from distgan.runs import open_run
    from distgan.sampling import generate, sheet

    run = open_run(Path(args.source), use_ema=not args.no_ema)
    game, nets, _cfg = run.game, run.nets, run.cfg
    out = Path(args.out)
    if out.suffix not in (".npy", ".png"):
        raise ConfigError(f"--out {out}: use a .npy (raw array) or .png (grid) file name")
    game.set_truncation(args.truncation, "--truncation")
    game.set_canvases(args.canvases, "--canvases")
    if args.labels_out:
        game.check_labels(flag="--labels-out")
    conditions, nrow = _sample_conditions(args, game, nets)
    if conditions is None:  # a translation run takes the first --num inputs of its data; others none
        conditions = game.data_inputs(lambda n: _data_preview(_cfg, n), args.num)
    num = len(conditions) if conditions is not None else args.num
    samples = generate(game, nets, num, seed=args.seed, device=torch.device("cpu"), policy=args.bn,
                       conditions=conditions, truncation=args.truncation)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".npy":
        np.save(out, samples.x.numpy())
    elif samples.x.dim() == 2:
        from distgan.data.builtin import mixture
        from distgan.log import scatter_image

        modes, _ = mixture(_cfg.data.name)
        save_png(scatter_image(samples.x, float(modes.abs().max()) * 1.25, reference=modes), out)
    else:
        if args.canvases:  # a grid row of T canvases per sample
            samples, nrow = _canvas_cells(samples, game.info.shape[-1])
        save_png(sheet(samples, nrow), out)
    if args.labels_out:
        np.save(args.labels_out, samples.labels.numpy())
    print(f"wrote {num} samples to {out}")
    return 0


def _canvas_cells(samples, width: int):
    """`--canvases` samples (N, C, H, T * W) as N * T cells, sample-major: a grid row of T canvases per sample."""
    from dataclasses import replace

    steps = samples.x.shape[-1] // width
    frames = samples.x.unflatten(-1, (steps, width)).movedim(-2, 1).flatten(0, 1)  # (N * T, C, H, W)
    return replace(samples, x=frames), steps


def _cmd_encode(args: argparse.Namespace) -> int:
    import torch

    from distgan.encoding import encode, load_images
    from distgan.errors import ConfigError
    from distgan.runs import open_run

    out = Path(args.out)
    if out.suffix != ".npy":
        raise ConfigError(f"--out {out}: the codes are written as a .npy array")
    run = open_run(Path(args.source), use_ema=not args.no_ema)
    run.game.check_encoder("encode")
    codes = encode(run.game, run.nets, load_images(args.images, run.game, "IMAGES"), device=torch.device("cpu"))
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, codes.numpy())
    print(f"wrote {len(codes)} codes of {codes.shape[1]} dimensions to {out}")
    return 0


def _cmd_translate(args: argparse.Namespace) -> int:
    from distgan.errors import ConfigError
    from distgan.translate import translate

    out_dir = args.out_dir or args.out
    if not out_dir or (args.out_dir and args.out and args.out_dir != args.out):
        raise ConfigError("give the output folder once: distgan translate RUN INPUT_DIR OUT_DIR (or --out OUT_DIR)")
    outputs = translate(Path(args.source), Path(args.input_dir), Path(out_dir), direction=args.direction,
                        use_ema=not args.no_ema, seed=args.seed)
    print(f"translated {len(outputs)} images into {out_dir}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from distgan.export import export_safetensors

    out = export_safetensors(Path(args.source), Path(args.out), use_ema=not args.no_ema)
    print(f"wrote the generator to {out}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from distgan.report import write_report

    html = write_report(Path(args.run_dir), Path(args.out) if args.out else None)
    print(f"wrote {html}")
    return 0


def _cmd_data_pack(args: argparse.Namespace) -> int:
    from distgan.data.manifest import manifest_summary
    from distgan.data.pack import pack

    man = pack(args.source, args.out_dir, shard_size=args.shard_size, shard_bytes=args.shard_bytes,
               resolution=args.resolution, fmt=args.format, layout=args.layout, prefix=args.prefix,
               seed=args.seed, channels=args.channels, background=args.background, on_error=args.on_error,
               max_pixels=args.max_pixels, progress=not args.quiet)
    summary = manifest_summary(man)
    print(f"packed {summary['samples']} samples into {summary['shards']} shards in {args.out_dir} "
          f"({summary['kind']}, {summary['format']}, {summary['channels']} channel{'s' * (man.channels > 1)}, "
          f"{summary['resolution']}, "
          f"classes: {summary['classes']}); skipped files: {summary['skipped files']}")
    return 0


_SKIPPED_SHOWN = 20  # source files left out by `data pack`, listed by `data inspect`


def _cmd_data_inspect(args: argparse.Namespace) -> int:
    from distgan.data.manifest import DataError, Manifest, manifest_summary
    from distgan.data.verify import first_samples, verify
    from distgan.log import save_png

    man = Manifest.load(Path(args.out_dir))
    for key, value in manifest_summary(man).items():
        print(f"{key:>14}: {value}")
    problems = verify(args.out_dir, progress=not args.quiet)
    grid_path = Path(args.grid or Path(args.out_dir) / "inspect.png")
    save_png(first_samples(args.out_dir, args.num), grid_path)
    print(f"{'grid':>14}: {grid_path}")
    for skipped in man.skipped[:_SKIPPED_SHOWN]:
        print(f"{'skipped':>14}: {skipped.path}: {skipped.reason} ({skipped.detail})")
    if len(man.skipped) > _SKIPPED_SHOWN:
        print(f"{'skipped':>14}: ... {len(man.skipped) - _SKIPPED_SHOWN} more (all in manifest.json)")
    if problems:
        for p in problems:
            print(f"problem: {p}")
        raise DataError(f"{len(problems)} of {len(man.shards)} shards failed the check (listed above)")
    print(f"{'check':>14}: all {len(man.shards)} shards match their sha256 and sample counts")
    return 0


def _add_data_commands(sub) -> None:
    data = sub.add_parser("data", help="pack data sets into WebDataset shards and check them")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    pack = data_sub.add_parser("pack", help="write shards + manifest.json from a folder, .npz or built-in set")
    pack.add_argument("source", help="image folder (class sub-folders, or A/ and B/), .npz file, or digits")
    pack.add_argument("out_dir", help="output folder (new, or without a pack in it); written all at once")
    size = pack.add_mutually_exclusive_group()
    size.add_argument("--shard-size", type=at_least(1), default=10_000, help="samples per shard (default 10000)")
    size.add_argument("--shard-bytes", type=at_least(1), default=None, help="bytes per shard instead of a count")
    pack.add_argument("--resolution", type=at_least(1), default=None,
                      help="resize (shorter side) and center-crop to this size; default: keep")
    pack.add_argument("--format", choices=["png", "jpg", "npy"], default="png", help="image encoding")
    pack.add_argument("--layout", choices=["auto", "classes", "images", "paired", "unpaired"], default="auto",
                      help="how to read a folder (auto: A/+B/ with equal names = paired, sub-folders = classes)")
    pack.add_argument("--prefix", default="train", help="shard file prefix: PREFIX-000000.tar")
    pack.add_argument("--seed", type=at_least(0), default=0, help="seed of the sample shuffle before writing")
    pack.add_argument("--channels", choices=["auto", "1", "3"], default="auto",
                      help="channels of every packed image (auto: 3 if any source image is colour, else 1)")
    pack.add_argument("--background", default="white",
                      help="colour transparent pixels are composited onto (name or #rrggbb; default white)")
    pack.add_argument("--on-error", choices=["skip", "fail"], default="skip",
                      help="unreadable files (truncated, not an image, empty, too large): skip with a warning "
                           "and list them in the manifest (default), or stop and leave OUT_DIR as it was")
    pack.add_argument("--max-pixels", type=at_least(1), default=None,
                      help="images with more pixels are skipped as possible decompression bombs "
                           "(default: PIL's limit, 89478485)")
    pack.add_argument("--quiet", action="store_true", help="no progress bar")
    pack.set_defaults(func=_cmd_data_pack)
    inspect = data_sub.add_parser("inspect", help="summary, checksum and count check, grid of first samples")
    inspect.add_argument("out_dir", help="folder with manifest.json and shards")
    inspect.add_argument("--num", type=at_least(1), default=64, help="samples in the grid")
    inspect.add_argument("--grid", default="", help="grid path (default OUT_DIR/inspect.png)")
    inspect.add_argument("--quiet", action="store_true", help="no progress bar")
    inspect.set_defaults(func=_cmd_data_inspect)
    from distgan.data import index as index_command

    index = data_sub.add_parser("index", help=index_command.HELP)
    index_command.add_arguments(index)
    index.set_defaults(func=index_command.run)


class _Parser(argparse.ArgumentParser):
    """argparse with the CLI's one-line errors: `distgan sample: error: argument --num: ...`, exit 2,
    as a DistganError is printed (argparse's default puts the whole usage text above it)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="distgan", description="Train and use GANs at scale.")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a GAN from a YAML config")
    train.add_argument("config", help="YAML config file (see configs/)")
    train.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.steps=100 run.dir=runs/x")
    train.add_argument("--dry-run", action="store_true",
                       help="check the config (and the files it names) and print it resolved, without torch")
    train.add_argument("--allow-config-change", action="store_true",
                       help="resume even with changes that alter the training trajectory (model, game, data, "
                            "optimizers, seed, global batch, ...); they are recorded in the run's config_history/")
    train.set_defaults(func=_cmd_train)

    sample = sub.add_parser("sample", help="generate samples from a run or checkpoint")
    sample.add_argument("source", help="run directory, checkpoint directory or exported .safetensors file")
    sample.add_argument("--num", type=at_least(1), default=64,
                        help="number of samples (with --label all: per class)")
    sample.add_argument("--out", required=True, help=".npy for the raw array, .png for a grid")
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--no-ema", action="store_true", help="use the trained G, not its EMA")
    sample.add_argument("--bn", choices=["standing", "running", "train"], default="standing",
                        help="BatchNorm policy for the generator (see distgan.sampling)")
    sample.add_argument("--label", default=None,
                        help="conditional games: class L for every sample, or all (--num per class, class-major)")
    sample.add_argument("--labels-out", default="", help="conditional games: write the samples' labels (.npy)")
    sample.add_argument("--code", action="append", default=[], metavar="NAME=VALUE",
                        help="games with latent codes (InfoGAN): fix a code for every sample, e.g. cat=3 or "
                             "cont0=-1.5 (repeatable)")
    sample.add_argument("--truncation", type=at_least(0, float), default=0.0, metavar="T",
                        help="truncation trick (BigGAN): redraw noise values with |z| > T (default 0: none)")
    sample.add_argument("--inputs", default="",
                        help="image-input games: (N, C, H, W) .npy in [-1, 1] to translate (default: the first "
                             "--num inputs of the run's data set; a folder of images: distgan translate)")
    sample.add_argument("--encode", default="", metavar="IMAGES.npy",
                        help="games with an encoder (bigan, vaegan, draw, aae): reconstruct (N, C, H, W) images in "
                             "[-1, 1] as G(E(x)), one sample per image")
    sample.add_argument("--canvases", action="store_true",
                        help="games that draw in steps (draw): each sample as its canvas after every step, left "
                             "to right, (N, C, H, steps * W); a .png has one sample per row")
    sample.set_defaults(func=_cmd_sample)

    encode = sub.add_parser("encode",
                            help="games with an encoder (bigan, vaegan, draw, aae): latent codes E(x) of images")
    encode.add_argument("source", help="run directory, checkpoint directory or exported .safetensors file")
    encode.add_argument("images", help="(N, C, H, W) .npy in [-1, 1] at the run's resolution")
    encode.add_argument("--out", required=True, help=".npy for the (N, z_dim) codes")
    encode.add_argument("--no-ema", action="store_true", help="use the trained encoder, not its EMA")
    encode.set_defaults(func=_cmd_encode)
    _add_data_commands(sub)

    trans = sub.add_parser("translate", help="apply an image-to-image run (pix2pix, cyclegan) to a folder of images")
    trans.add_argument("source", help="run directory, checkpoint directory or exported .safetensors file")
    trans.add_argument("input_dir", help="folder of image files (any size or colour mode: converted)")
    trans.add_argument("out_dir", nargs="?", default="", help="output folder: one <name>.png per input")
    trans.add_argument("--out", default="", help="the output folder, as a flag")
    trans.add_argument("--direction", choices=["AB", "BA"], default="",
                       help="AB: domain A -> B, BA: B -> A (default: the run's game.direction)")
    trans.add_argument("--seed", type=int, default=0)
    trans.add_argument("--no-ema", action="store_true", help="use the trained generators, not their EMA")
    trans.set_defaults(func=_cmd_translate)

    export = sub.add_parser("export", help="write the (EMA) generator and its config as safetensors")
    export.add_argument("source", help="run directory or checkpoint directory")
    export.add_argument("--out", required=True, help="output file, e.g. G.safetensors")
    export.add_argument("--no-ema", action="store_true", help="export the trained G, not its EMA")
    export.set_defaults(func=_cmd_export)

    report = sub.add_parser("report", help="loss/metric curves and the latest samples as PNG + HTML")
    report.add_argument("run_dir", help="run directory (reads metrics.jsonl and samples/)")
    report.add_argument("--out", help="output directory (default RUN_DIR/report)")
    report.set_defaults(func=_cmd_report)

    from distgan.metrics import command as eval_command

    evaluate = sub.add_parser("eval", help="FID/KID/IS/precision-recall/modes of a run, the same on 1 or N processes")
    eval_command.add_arguments(evaluate)
    evaluate.set_defaults(func=eval_command.run)
    bench = sub.add_parser("bench", help="benchmarks (results go to docs/benchmarks.md)")
    bench_sub = bench.add_subparsers(dest="bench", required=True)
    from distgan.bench import BENCHMARKS

    for name, (help_text, add_arguments, run) in BENCHMARKS.items():
        p = bench_sub.add_parser(name, help=help_text)
        add_arguments(p)
        p.set_defaults(func=run)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, with a command's dotted overrides anywhere among its options:
    `distgan train CONFIG --dry-run a=1` as `distgan train CONFIG a=1 --dry-run`. (argparse ends a
    `nargs="*"` positional at the first option; parse_intermixed_args does not take subcommands.)"""
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    extras = [e for e in extras if e != "--"]
    takes_overrides = isinstance(getattr(args, "overrides", None), list)  # train, bench mixtures/overhead
    unknown = [e for e in extras if e.startswith("-") or not takes_overrides]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if extras:
        args.overrides += extras  # in the order given: a later value of the same key wins
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from distgan.errors import DistganError

    try:
        return args.func(args)
    except DistganError as exc:
        # Only errors a user can fix (config, data, checkpoints) become one line; anything else
        # is a bug or an environment failure and keeps its traceback.
        if os.environ.get("DISTGAN_DEBUG"):
            raise
        print(f"distgan {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
