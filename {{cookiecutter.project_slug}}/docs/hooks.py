"""MkDocs hooks: Mermaid diagrams drawn in the browser from a local copy of Mermaid.

- ```mermaid fences become <div class="mermaid"> elements (pymdownx.superfences);
- Mermaid itself (mermaid.min.js, from the mmdc package of the docs extra) is copied into
  the site's assets, so the pages draw their diagrams with no network and no CDN;
- the <!-- table-diagram --> marker of tables.md becomes the table-level diagram that
  DataJoint draws from the declared schemas ({{ cookiecutter.package_name }}.toolkit.diagram,
  which importing builds the lab's pipeline from {{ cookiecutter.package_name }}/__init__.py).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from mkdocs.exceptions import PluginError
from pymdownx.superfences import fence_div_format

MERMAID = "assets/mermaid.min.js"
MERMAID_INIT = "assets/mermaid-init.js"
TABLE_DIAGRAM = "<!-- table-diagram -->"


def mermaid_script() -> Path:
    """Mermaid's browser bundle, as the mmdc package ships it."""
    spec = importlib.util.find_spec("mmdc")
    if spec is None or not spec.submodule_search_locations:
        raise PluginError("Mermaid is missing: install the docs extra (pip install -e '.[docs]')")
    return Path(next(iter(spec.submodule_search_locations)), "assets", "mermaid.js")


def on_config(config):
    fences = config.mdx_configs.setdefault("pymdownx.superfences", {})
    fences.setdefault("custom_fences", []).append(
        {"name": "mermaid", "class": "mermaid", "format": fence_div_format}
    )
    config.extra_javascript.extend([MERMAID, MERMAID_INIT])
    return config


def on_files(files, config):
    from mkdocs.structure.files import File

    files.append(File.generated(config, MERMAID, abs_src_path=str(mermaid_script())))
    files.append(
        File.generated(config, MERMAID_INIT, content="mermaid.initialize({startOnLoad: true});\n")
    )
    return files


def on_page_markdown(markdown, page, config, files):
    if TABLE_DIAGRAM not in markdown:
        return markdown
    from {{ cookiecutter.package_name }}.toolkit.diagram import pipeline_markdown

    return markdown.replace(TABLE_DIAGRAM, pipeline_markdown())
