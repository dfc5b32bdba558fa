"""Every error the package raises on purpose, in one place: what a stage reports as one line (and its exit
code: 2 for bad input, 1 for a failed run; `sparsecl.stage`) instead of a traceback. It imports nothing of
the package, so every layer may raise them."""


class ParamsError(ValueError):
    """params.yaml is invalid; the message lists every problem, one per line."""


class DataSourceError(ValueError):
    """A domain's source cannot give its documents; the message names `data.domains.<name>` and what to fix."""


class EmptyDomainError(DataSourceError):
    """A domain (or one of its splits) has too little text to train or evaluate on."""


class IntegrityError(ValueError):
    """A file does not match its recorded hash, or cannot be read at all (corrupted or truncated)."""


class NonFiniteError(ValueError):
    """A result to be written holds NaN or infinity: never evidence, never written."""


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss (a diverged run)."""


class DistributedSetupError(RuntimeError):
    """The processes of a torchrun launch disagree (masks, data) or the batch does not split over them."""
