"""`report.html`: one self-contained file (no network assets: the chart is inlined as a data
URI, the rows as JSON, the script and styles inline) where a researcher browses a workdir's rows,
filtered by round, table, label, kept and reason. Model text is only ever set as text, never
parsed as HTML."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from seftgen.evaluation.benchmark import round_headline
from seftgen.evaluation.stats import headline

_HERE = Path(__file__).parent  # report.css and report.js ship beside this module


def _json_for_script(value: Any) -> str:
    """JSON that cannot close its <script> element early, whatever the model wrote."""
    return json.dumps(value, ensure_ascii=False, default=str).replace("</", "<\\/").replace("<!--", "<\\!--")


def write_page(
    path: Path, title: str, rows: list[dict[str, Any]], numbers: list[dict[str, Any]], png: Path | None
) -> Path:
    """The page, written to `path`: the evaluation table, the chart, and the rows to browse."""

    def benchmarks(n: dict[str, Any]) -> str:
        return "; ".join(f"{name}: {round_headline(name, b)}" for name, b in n["benchmarks"].items()) or "-"

    summary = "".join(
        f"<tr><td>{n['round']}</td><td>{html.escape(headline(n['vs_start']) if n['vs_start'] else '-')}</td>"
        f"<td>{html.escape(headline(n['vs_previous']) if n['vs_previous'] else '-')}</td>"
        f"<td>{html.escape(benchmarks(n))}</td></tr>"
        for n in numbers
    )
    chart = ""
    if png is not None and png.is_file():
        data = base64.b64encode(png.read_bytes()).decode()
        chart = f'<img id="chart" alt="rounds chart" src="data:image/png;base64,{data}">'
    filters = ("round", "table", "label", "kept", "reason")
    selects = "".join(f'<label>{k} <select id="f-{k}"></select></label>' for k in filters)
    style, script = (_HERE / "report.css").read_text(), (_HERE / "report.js").read_text()
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{style}</style></head>
<body>
<h1>{html.escape(title)}</h1>
<h2>Evaluation per round</h2>
<table id="summary"><thead>
<tr><th>round</th><th>vs round 0</th><th>vs previous round</th><th>benchmarks</th></tr></thead>
<tbody>{summary}</tbody></table>
{chart}
<h2>Rows</h2>
<p class="filters">{selects} <span id="count"></span></p>
<table id="rows"><thead><tr><th>round</th><th>table</th><th>prompt</th>
<th>response (revision as a word diff; pairs: A, B, the winner in bold)</th>
<th>label</th><th>kept</th><th>reason</th><th>scores / probabilities</th></tr></thead><tbody></tbody></table>
<script type="application/json" id="data">{_json_for_script(rows)}</script>
<script>{script}</script>
</body></html>
"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path
