"""Every component's config section, with its own pure checks: plain dataclasses, no torch.

One module per component (data, model, augment, games, train, log, eval). Each section checks
what it can see alone (`check(section)`); checks across sections (D packs, so the game must form
packs) live in the composition layer, distgan.config, which assembles the run's Config from
these. Nothing here touches a file: a config is checked on a login node without a GPU stack,
and a finished run's config loads even after its shards moved (file checks run when training
starts: distgan.config.check_files).
"""
