"""Fixed sparse topologies, found by name. A topology is one module with:

    SCHEMA: dict                      its settings under params.topology.<name> (checked up front)
    build(blocks, density, settings, rng) -> {layer name: bool mask (n_out, n_in)}   ({} = dense)

`blocks` maps each sparsified layer to (number of logical matrices, (n_out, n_in) of one); fused q,k,v
gets three independent masks stacked along the output dim. To add a topology: write one module here and
add it to TOPOLOGIES.
"""
from sparsecl.topology import dense, random_er

TOPOLOGIES = {"dense": dense, "random": random_er}
