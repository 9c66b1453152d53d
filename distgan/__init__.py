"""distgan: classic GAN variants at scale with one Accelerate trainer.

The house has floors. A module imports only from its own floor or below -- imports inside
functions and type-only imports count, since each is an arrow a reader follows -- and no two
modules import each other, directly or around a circle. tests/unit/test_layers.py reads the
table below (longest name first) and checks every import of every module against it.

    floor  modules
    1      errors, typed, argtypes, plugins, log, nn, losses
    2      sections, data, models, step_context, augment
    3      games
    4      config, config_change, sampling, encoding
    5      train, metrics
    6      runs
    7      translate, report, export, bench, metrics.command
    8      cli, __main__

1. The pieces every layer uses: errors, typed YAML -> dataclasses, argparse types, logging, layers,
   losses.
2. The components with their own config sections (distgan.sections: plain dataclasses and pure
   checks, no torch), the data sources, the architectures, the step's seeded randomness
   (step_context) and the augmentation that draws from it.
3. The games: each forms its players' losses and answers for its capabilities (sampling,
   conditions, codes, encoding, directions, truncation).
4. The composition of a run's config from the sections (config), what a resume may change of it
   and the run's config history (config_change), and generation with a game's nets (sampling,
   encoding), which training and evaluation both use.
5. The training engine and loop (train/), and the metrics it evaluates during training.
6. Opening a finished run (run dir, checkpoint, exported safetensors -> config, game, nets).
7. What users run on a finished run: translation, reports, export, benchmarks, `distgan eval`.
8. The command line, the only entry point.
"""

__version__ = "0.1.0"
