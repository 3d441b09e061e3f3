"""``python -m snnsec``: the command line, also as launched by ``torchrun --nproc-per-node N -m snnsec ...``.

Under torchrun every process joins the others first (:func:`snnsec.distributed.setup`: the process group and,
with GPUs, its own ``cuda:LOCAL_RANK``) before any model is built. Only the main process shows progress bars
and prints results and status lines; the others keep stderr for their errors.
"""
from __future__ import annotations

import os
import sys

from snnsec import distributed, progress
from snnsec.cli import main

if __name__ == "__main__":
    distributed.setup()
    if not distributed.is_main():
        os.environ["SNNSEC_PROGRESS"] = "0"
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the life of the process
        progress.quiet()  # the main process's status lines are everyone's
    try:
        sys.exit(main())
    finally:
        distributed.teardown()
