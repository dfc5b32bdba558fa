"""The HTML page `dvc plots show` fills, with Vega, Vega-Lite and Vega-Embed inside it, so the plots draw
with no network (DVC's own page loads the three from a CDN).

    python -m sparsecl.report.offline_page      # rewrite src/sparsecl/report/vendor/plots.html

`.dvc/config` names the page (`plots.html_template`), so a plain `dvc plots show` uses it. The page is
committed, as vendored JavaScript is: it is built from vl-convert-python's bundle (a test dependency,
pinned in pyproject.toml), and a test checks that the committed page is what this module builds from it.
The page leaves out DVC's `{scripts}` placeholder, where DVC would put the CDN script tags; DVC puts each
plot (a `vegaEmbed` call) at `{plot_divs}`.
"""
from __future__ import annotations

from pathlib import Path

from sparsecl.io import write_text

PAGE = Path(__file__).parent / "vendor" / "plots.html"  # vendored JavaScript inside: generated, committed
VEGA_LITE = "5.21"  # the newest Vega-Lite 5 the bundle offers: DVC's templates are Vega-Lite 5 specs

HEAD = """<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <meta charset="utf-8">
    <title>sparsecl plots</title>
    <style>table { border-spacing: 15px; }</style>
    <script>
"""
TAIL = """
    </script>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def build(bundle: str) -> str:
    """The page around a JavaScript bundle that defines `vegaEmbed`, `vega` and `vegaLite` globally."""
    if "</script" in bundle or "{plot_divs}" in bundle:
        raise ValueError("the bundle would end the page's script element or hold DVC's placeholder")
    return HEAD + bundle + TAIL


def bundle() -> str:
    import vl_convert  # a test dependency: only rebuilding the page needs it

    return vl_convert.javascript_bundle(vl_version=VEGA_LITE)


if __name__ == "__main__":
    write_text(PAGE, build(bundle()))
    print(f"wrote {PAGE} ({PAGE.stat().st_size / 1e6:.2f} MB)")
