"""Stage `tokenize`: domains -> byte-level BPE -> data/tokens/{<domain>.<split>.bin, manifest.json}."""
from sparsecl import stage
from sparsecl.data.tokens import build


def main(params, args):
    build(params, "data/tokens")


if __name__ == "__main__":
    stage.run(main)
