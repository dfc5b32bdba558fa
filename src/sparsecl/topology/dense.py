"""Dense: no mask at all (the reference arm); density does not apply."""

SCHEMA: dict = {}


def build(blocks, density, settings, rng):
    return {}
