"""The offline page `dvc plots show` fills (src/sparsecl/report/vendor/plots.html, named in .dvc/config)."""
import configparser
from pathlib import Path

from sparsecl.report.offline_page import PAGE, build, bundle

REPO = Path(__file__).resolve().parents[1]


def test_the_committed_page_is_the_one_built_from_the_pinned_bundle():
    assert PAGE.read_text(encoding="utf-8") == build(bundle())


def test_dvc_config_names_the_page_and_the_page_keeps_out_dvcs_cdn_scripts():
    config = configparser.ConfigParser()
    config.read(REPO / ".dvc" / "config")
    assert (REPO / ".dvc" / config["plots"]["html_template"]).resolve() == PAGE
    page = PAGE.read_text(encoding="utf-8")
    assert "{plot_divs}" in page and "{scripts}" not in page  # DVC puts its CDN script tags at {scripts}
