"""Fixed sparse topologies, found by name. A topology is one module with:

    SCHEMA: dict                      its settings under params.topology.<name> (checked up front)
    build(blocks, density, settings, rng) -> {layer name: bool mask (n_out, n_in)}   ({} = dense)
    kept(blocks, density, settings) -> {layer name: weights one logical matrix keeps}   (optional: the
                                      default is `allocation.allocate` with the topology's `allocation`)

`blocks` maps each sparsified layer to (number of logical matrices, (n_out, n_in) of one); fused q,k,v
gets three independent masks stacked along the output dim. Every sparse topology keeps the nnz that
`allocation.allocate` gives each logical matrix, so topologies differ in shape only, never in count;
`narrow` (the capacity control: whole rows and columns) keeps the same total per block within rounding.
`settings` also carries the model's `n_head`, for topologies that shape whole heads.
To add a topology: write one module here and add it to TOPOLOGIES.
"""
from sparsecl.topology import brf, dense, erk, expander, narrow, random_er
from sparsecl.topology.allocation import allocate

TOPOLOGIES = {"dense": dense, "random": random_er, "erk": erk, "brf": brf, "expander": expander,
              "narrow": narrow}


def kept_per_matrix(topology: str, blocks, density: float, settings: dict) -> dict[str, int]:
    """The weights each logical matrix keeps under `topology`, counted without building a mask (so the
    params check can ask it at any model shape); equal to the built masks' row sums (tests/test_topologies.py)."""
    module = TOPOLOGIES[topology]
    if hasattr(module, "kept"):
        return module.kept(blocks, density, settings)
    return allocate(blocks, density, settings["allocation"])
