"""Dense: no mask at all (the reference arm); density does not apply."""

SCHEMA: dict = {}


def build(blocks, density, settings, rng):
    return {}


def kept(blocks, density, settings):
    return {name: n_out * n_in for name, (_, (n_out, n_in)) in blocks.items()}
