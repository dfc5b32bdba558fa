"""What every stage script shares: validated params first, then work; known user errors print cleanly."""
from __future__ import annotations

import argparse
import errno
import sys
from typing import Callable

from sparsecl import params as params_mod
from sparsecl.device import resolve_device
from sparsecl.errors import (DataSourceError, DistributedSetupError, IntegrityError, NonFiniteError,
                             NonFiniteLossError, ParamsError)
from sparsecl.train import distributed


def run(main: Callable[[dict, argparse.Namespace], None], *args: str, data_parallel: bool = False) -> None:
    """Parse `--<arg>` options, load and validate params.yaml, call main(params, args). A `data_parallel`
    stage runs under torchrun with distributed.nproc_per_node processes."""
    parser = argparse.ArgumentParser()
    for name in args:
        parser.add_argument(f"--{name}", required=True, type=int if name == "seed" else str)
    ns = parser.parse_args()
    try:
        p = params_mod.load("params.yaml")
        if data_parallel:
            distributed.launch_if_asked(p["distributed"]["nproc_per_node"])
            distributed.init(resolve_device(p["device"]))
        main(p, ns)
        distributed.barrier()  # every rank is done before any leaves
    except (ParamsError, DataSourceError) as e:  # bad settings or data
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except (IntegrityError, NonFiniteLossError, NonFiniteError, DistributedSetupError) as e:
        # a corrupted input, a run that diverged, a non-finite result, or ranks that disagree
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        # a full disk: the message names the file (sparsecl.io); the rerun resumes as after a kill
        print(f"error: {e}; free some space and rerun", file=sys.stderr)
        sys.exit(1)
    finally:
        distributed.close()
