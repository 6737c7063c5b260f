"""`seftgen report WORKDIR`: the rounds as a picture (report.png) and a page to browse (report.html)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from seftgen.evaluation.figure import draw, figure_numbers
from seftgen.evaluation.page import write_page
from seftgen.evaluation.rounds import browse_rows, load_workdir

REPORT_DIR = "report"  # inside the workdir, unless asked otherwise


@dataclass
class Report:
    png: Path
    html: Path
    rounds: int
    rows: int


def write_report(workdir: str | Path, out: str | Path | None = None) -> Report:
    """Read every round of `workdir` (nothing is written there until the input checks out)."""
    work = load_workdir(workdir)
    folder = Path(out) if out is not None else work.root / REPORT_DIR
    rows = browse_rows(work)
    png = draw(work, folder / "report.png")
    page = write_page(folder / "report.html", f"seftgen rounds: {work.root.name}", rows, figure_numbers(work), png)
    return Report(png, page, len(work.rounds), len(rows))
