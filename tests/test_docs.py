"""Generated docs: `mkdocs build --strict` passes, and the diagrams are drawn in a real browser.

Each render is installed with its docs extra and built with no network (a network
namespace): the build needs nothing from outside, the table diagram included. Headless
Chromium, also without network, then loads the built pages from disk, and Mermaid, served
by the site itself, must have turned every diagram into an SVG flowchart.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import LAB_PASSWORD, clean_environment, offline

pytestmark = pytest.mark.slow

DIAMOND = (
    "mouse; rig; scan <- mouse, rig; trace <- scan; spikes <- scan; summary <- trace, spikes, mouse"
)
SPECS = {
    "default": {"package_name": "docsdefault", "project_name": "Docs Default"},
    # PostgreSQL, two roots and a diamond, and the lab's own tables next to the starter ones.
    "lab": {
        "package_name": "docslab",
        "project_name": "Docs Lab",
        "database_backend": "postgresql",
        "object_store": "none",
        "schemas": DIAMOND,
    },
}
LAB_TABLES = '''

@schema
class Strain(dj.Lookup):
    """Mouse strains of the colony."""

    definition = """
    strain : varchar(32)
    ---
    description : varchar(255)
    """
    contents = [("C57BL/6J", "wild type"), ("Thy1-GCaMP6s", "calcium indicator")]


@schema
class Surgery(dj.Manual):
    """One surgery of a mouse."""

    definition = """
    -> Mouse
    surgery_date : date
    ---
    -> Strain
    kind : enum('implant', 'injection')
    notes : json
    """

    class Implant(dj.Part):
        """Each implant placed during the surgery."""

        definition = """
        -> master
        implant_id : int32
        ---
        region : varchar(32)
        """
'''
SCHEMAS = {
    "default": ["subject", "session", "ephys", "imaging", "analysis"],
    "lab": ["mouse", "rig", "scan", "trace", "spikes", "summary"],
}
TABLES = {
    "default": ["Subject", "Session", "Recording", "Scan", "MultiModalAnalysis"],
    "lab": ["Mouse", "Rig", "Scan", "Trace", "Spikes", "Summary", "Strain", "Surgery", "Implant"],
}
FLOWCHART = re.compile(r'<svg[^>]*aria-roledescription="flowchart-v2".*?</svg>', re.DOTALL)


@pytest.fixture(scope="module")
def built(cookies_session, project_env):
    """spec -> (project, site): the render with its docs extra installed, built offline once."""
    builds: dict[str, tuple[Path, Path]] = {}

    def get(spec: str) -> tuple[Path, Path]:
        if spec not in builds:
            builds[spec] = build(cookies_session, project_env, spec)
        return builds[spec]

    return get


LAB_MEMBER = {
    "DJ_BACKEND": "postgresql",
    "DJ_HOST": "db.example.org",
    "DJ_USER": "alice",
    "DJ_PASS": LAB_PASSWORD,
    "DJ_DATABASE_NAME": "alice_lab",
}


def build(cookies_session, venv: Path, spec: str) -> tuple[Path, Path]:
    result = cookies_session.bake(extra_context=SPECS[spec])
    assert result.exit_code == 0, result.exception
    project = Path(result.project_path)
    if spec == "lab":
        with (project / "src" / "docslab" / "mouse.py").open("a", encoding="utf-8") as module:
            module.write(LAB_TABLES)
    python = str(venv / "bin" / "python")
    subprocess.run(
        [shutil.which("uv"), "pip", "install", "-q", "--python", python, "-e", f"{project}[docs]"],
        check=True,
    )
    mkdocs = subprocess.run(
        offline(str(venv / "bin" / "mkdocs"), "build", "--strict"),
        cwd=project,
        # A lab member's settings: the table diagram's throwaway embedded server must honour
        # the database name (and not need the server, unreachable in this namespace).
        env=clean_environment(**LAB_MEMBER),
        capture_output=True,
        text=True,
        check=False,
    )
    assert mkdocs.returncode == 0, mkdocs.stdout[-3000:] + mkdocs.stderr[-5000:]
    return project, project / "site"


def browser_dom(page: Path) -> str:
    """The DOM of a page after headless Chromium, without network, has run its scripts."""
    chromium = shutil.which("chromium") or pytest.fail("needs chromium (apt-get install chromium)")
    result = subprocess.run(
        offline(
            chromium,
            "--headless",
            "--no-sandbox",  # we run as root
            "--disable-gpu",
            "--virtual-time-budget=30000",
            "--dump-dom",
            page.as_uri(),
        ),
        capture_output=True,
        text=True,
        check=False,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def flowcharts(dom: str) -> list[str]:
    """The SVG flowcharts Mermaid drew; a diagram Mermaid could not read fails here."""
    assert "Syntax error" not in dom
    assert 'class="mermaid"' in dom
    assert dom.count('class="mermaid"') == dom.count('data-processed="true"')
    return FLOWCHART.findall(dom)


@pytest.mark.parametrize("spec", list(SPECS))
def test_pages_load_nothing_from_outside(built, spec):
    _, site = built(spec)
    for page in site.rglob("*.html"):
        html = page.read_text(encoding="utf-8")
        assert not re.search(r'<script[^>]+src="(https?:)?//', html), page
        assert not re.search(r'<link[^>]+stylesheet[^>]+href="(https?:)?//', html), page
    assert (site / "assets" / "mermaid.min.js").stat().st_size > 1_000_000


@pytest.mark.parametrize("spec", list(SPECS))
def test_schema_diagram_is_drawn(built, spec):
    _, site = built(spec)
    [svg] = flowcharts(browser_dom(site / "pipeline" / "index.html"))
    for schema in SCHEMAS[spec]:
        assert f">{schema}<" in svg, schema


@pytest.mark.parametrize("spec", list(SPECS))
def test_table_diagram_is_drawn_by_datajoint(built, spec):
    _, site = built(spec)
    [svg] = flowcharts(browser_dom(site / "tables" / "index.html"))
    for table in TABLES[spec]:
        assert f">{table}<" in svg, table


def test_quoted_postgresql_names_are_made_drawable(built, project_env, tmp_path):
    """make_mermaid() without the package's classes quotes PostgreSQL names; Mermaid rejects
    them as written and draws them once diagram.mermaid_safe() has made them plain."""
    project, site = built("lab")
    output = tmp_path / "mermaid.json"
    script = (
        "import functools, json, operator, sys\n"
        "import datajoint as dj\n"
        "from docslab import MODULES\n"
        "from docslab.toolkit import diagram\n"
        "with diagram.declared_pipeline():\n"
        "    raw = functools.reduce(operator.add, (dj.Diagram(m.schema, context={}) "
        "for m in MODULES)).make_mermaid()\n"
        "with open(sys.argv[1], 'w') as file:\n"
        "    json.dump([raw, diagram.mermaid_safe(raw)], file)\n"
    )
    subprocess.run(
        [str(project_env / "bin" / "python"), "-c", script, str(output)],
        cwd=project,
        env=clean_environment(),
        check=True,
    )
    raw, fixed = json.loads(output.read_text(encoding="utf-8"))
    assert '"."' in raw  # DataJoint's quoted names, as the issue reported
    pages = {}
    for name, source in (("raw", raw), ("fixed", fixed)):
        page = tmp_path / f"{name}.html"
        page.write_text(
            f'<script src="{(site / "assets" / "mermaid.min.js").as_uri()}"></script>'
            f'<div class="mermaid">{source.replace("&", "&amp;").replace("<", "&lt;")}</div>'
            "<script>mermaid.initialize({startOnLoad: true});</script>",
            encoding="utf-8",
        )
        pages[name] = browser_dom(page)
    assert "Syntax error" in pages["raw"]
    [svg] = flowcharts(pages["fixed"])
    assert ">Surgery<" not in svg  # no classes given: the boxes carry the full table names
    assert "surgery" in svg
