"""Runs several ``sodec`` command lines one after the other in the same process, for a test that starts this
script under ``accelerate launch`` once instead of once per command (each start costs seconds of imports).

    python tests/launched_commands.py '[["eval", ...], ["compress", ...]]'

Writes the exit status of each command to ``status.<rank>.json`` in the current folder; exits 0.
"""

import json
import os
import sys

from sodec_pipeline.cli import main


if __name__ == "__main__":
    status = [main(argv) for argv in json.loads(sys.argv[1])]
    with open(f"status.{os.environ.get('RANK', '0')}.json", "w") as f:
        json.dump(status, f)
