"""`python -m distgan`, for a worker under a launcher, that also writes the code distgan
returned to $DISTGAN_TEST_EXIT_DIR/rank<RANK>.

What `accelerate launch` itself returns when its workers exit is torch's decision (a worker's
non-zero code becomes 1; a launcher that got SIGTERM itself may return 143 or 1, whichever of
its own handling and the workers' exit comes first), so the tests read the workers' codes here.
"""

import os
import sys
from pathlib import Path

from distgan.cli import main

if __name__ == "__main__":
    code = main(sys.argv[1:])
    Path(os.environ["DISTGAN_TEST_EXIT_DIR"], f"rank{os.environ['RANK']}").write_text(str(code))
    raise SystemExit(code)
