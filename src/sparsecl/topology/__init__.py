"""Fixed sparse topologies, found by name. A topology is one module with:

    SCHEMA: dict                      its settings under params.topology.<name> (checked up front)
    build(blocks, density, settings, rng) -> {layer name: bool mask (n_out, n_in)}   ({} = dense)

`blocks` maps each sparsified layer to (number of logical matrices, (n_out, n_in) of one); fused q,k,v
gets three independent masks stacked along the output dim. Every sparse topology keeps the nnz that
`allocation.allocate` gives each logical matrix, so topologies differ in shape only, never in count;
`narrow` (the capacity control: whole rows and columns) keeps the same total per block within rounding.
`settings` also carries the model's `n_head`, for topologies that shape whole heads.
To add a topology: write one module here and add it to TOPOLOGIES.
"""
from sparsecl.topology import brf, dense, erk, expander, narrow, random_er

TOPOLOGIES = {"dense": dense, "random": random_er, "erk": erk, "brf": brf, "expander": expander,
              "narrow": narrow}
