"""MkDocs hook: put the figures under `results/` on the site.

Each figure lives next to the results.json it was drawn from
(`results/<run>/<figure>.png`), outside `docs/`. RESULTS.md links one as
`../results/<run>/<figure>.png`, which resolves in the repository; this hook
registers the figures under that same path so the link resolves on the site
too (and `mkdocs build --strict` checks it), copying them to
`results/<run>/<figure>.png` in the built site.
"""

import pathlib

from mkdocs.structure.files import File
from mkdocs.structure.files import InclusionLevel


def on_files(files, config):
    repo = pathlib.Path(config.docs_dir).resolve().parent
    for figure in sorted((repo / "results").rglob("*.png")):
        site_path = figure.relative_to(repo).as_posix()
        # docs/ sits one level below the repository root, so a page at the
        # top of docs/ reaches the figure as "../<site_path>".
        file = File.generated(
            config, f"../{site_path}", abs_src_path=str(figure), inclusion=InclusionLevel.INCLUDED
        )
        file.dest_uri = site_path  # inside the site, not above it
        files.append(file)
    return files
