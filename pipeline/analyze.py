"""Stage `analyze`: forgetting, BWT, FWT, crossover, plots and report.md over all arms."""
from sparsecl import stage
from sparsecl.report.analyze import analyze


def main(params, args):
    analyze(params, "metrics/eval", "metrics", "plots", "report.md")


if __name__ == "__main__":
    stage.run(main)
