"""The requeue caps' defaults, as slurm/common.sh sets them, are the ones README.md, slurm/README.md
and docs/operations.md state (README.md once said 20 where the code said 50)."""

from __future__ import annotations

import re

from tests.helpers import ROOT


def test_caps_are_documented_with_the_code_defaults():
    """README.md, slurm/README.md and docs/operations.md name the defaults slurm/common.sh uses."""
    code = (ROOT / "slurm/common.sh").read_text()
    docs = {d: (ROOT / d).read_text() for d in ("README.md", "slurm/README.md", "docs/operations.md")}
    for var, must in (("DISTGAN_MAX_REQUEUES", ("README.md", "slurm/README.md", "docs/operations.md")),
                      ("DISTGAN_MAX_FAILURE_REQUEUES", ("slurm/README.md", "docs/operations.md"))):
        default = re.search(rf"\${{{var}:-(\d+)}}", code).group(1)
        # "`VAR`, default N" (the READMEs), "at most `VAR`=N" and "| `VAR=N` |" (docs/operations.md)
        pattern = rf"`{var}`, default (\d+)|at most `{var}`=(\d+)|\| `{var}=(\d+)` \|"
        said = {doc: {"".join(m) for m in re.findall(pattern, text)} for doc, text in docs.items()}
        for doc in must:
            assert said[doc] == {default}, f"{doc} says {var} defaults to {said[doc]}, slurm/common.sh {default}"
