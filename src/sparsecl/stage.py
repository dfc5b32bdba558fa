"""What every stage script shares: validated params first, then work; known user errors print cleanly."""
from __future__ import annotations

import argparse
import sys
from typing import Callable

from sparsecl import params as params_mod
from sparsecl.data.sources import EmptyDomainError
from sparsecl.io import IntegrityError
from sparsecl.train.loop import NonFiniteLossError


def run(main: Callable[[dict, argparse.Namespace], None], *args: str) -> None:
    """Parse `--<arg>` options, load and validate params.yaml, call main(params, args)."""
    parser = argparse.ArgumentParser()
    for name in args:
        parser.add_argument(f"--{name}", required=True, type=int if name == "seed" else str)
    ns = parser.parse_args()
    try:
        p = params_mod.load("params.yaml")
        main(p, ns)
    except (params_mod.ParamsError, EmptyDomainError) as e:  # bad settings or data
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except (IntegrityError, NonFiniteLossError) as e:  # a corrupted input, or a run that diverged
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
