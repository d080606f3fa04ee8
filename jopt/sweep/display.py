"""Rich notebook display of sweep results: an HTML table of the ranked trials and the plots inline.

:func:`html` renders a :class:`~jopt.sweep.results.SweepResult` (or a
:class:`~jopt.sweep.population_based.PBTResult`) as one self-contained HTML fragment: a summary
line, a table of the best ``top`` trials (rank, trial, status, objective, best objective and
step, steps trained, every objective of a multi-objective search, the constraint violation
where some trial has one, rung, exploits in PBT, every hyperparameter and the last value of
each ``eval/<name>`` metric), and the learning curves as an inline PNG (plus the
hyperparameter schedules for PBT). Every value is HTML-escaped. Jupyter calls it through the
results' ``_repr_html_``, so a result on the last line of a cell shows itself.

Example:
  >>> import matplotlib; matplotlib.use("Agg")
  >>> from jopt.sweep.results import SweepResult, TrialResult
  >>> t = TrialResult(0, {"lr": 0.1, "act": abs}, "completed", 0.5, 0.5, 0.5, 10, 10,
  ...                 {"step": [5, 10], "objective": [0.7, 0.5]})
  >>> text = html(SweepResult([t]))
  >>> "<table" in text, "<td>abs</td>" in text, 'src="data:image/png;base64,' in text
  (True, True, True)
"""

from __future__ import annotations

import base64
import html as _html
import io
import math
from typing import Any

import numpy as np

__all__ = ["figure_html", "format_value", "html"]

_STYLE = (
    "<style>.jopt-sweep table{border-collapse:collapse;font-size:12px}"
    ".jopt-sweep th,.jopt-sweep td{padding:2px 8px;text-align:right;border-bottom:1px solid #ddd}"
    ".jopt-sweep th{background:#f4f4f4}.jopt-sweep tr.best td{font-weight:bold}</style>"
)


def format_value(value: Any) -> str:
    """A table cell's text (not yet escaped): floats with 4 significant digits, functions and
    classes by name, everything else ``str``.

    Example:
      >>> format_value(0.000123456), format_value(float("inf")), format_value(round), format_value(64)
      ('0.0001235', 'inf', 'round', '64')
    """
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.4g}"
    name = getattr(value, "__name__", None)
    if callable(value) and isinstance(name, str):
        return name
    return str(value)


def _cell(value: Any, tag: str = "td", style: str = "") -> str:
    attr = f' style="{_html.escape(style)}"' if style else ""
    return f"<{tag}{attr}>{_html.escape(format_value(value))}</{tag}>"


def figure_html(fig: Any, alt: str = "figure", dpi: int = 80) -> str:
    """A matplotlib figure as an ``<img>`` with the PNG inline (base64)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="{_html.escape(alt)}" style="max-width:100%" src="data:image/png;base64,{data}"/>'


def _columns(result: Any) -> tuple[list[str], list[str]]:
    hp: list[str] = []
    evals: list[str] = []
    for t in result.trials:
        hp += [k for k in t.hyperparams if k not in hp]
        evals += [k for k in t.history if k.startswith("eval/") and k not in evals]
    return hp, evals


def _table(result: Any, top: int | None) -> str:
    from jopt.sweep.plots import _COLORS

    ranked = result.ranked()
    shown = ranked if top is None else ranked[:top]
    hp, evals = _columns(result)
    rungs = any(t.rung is not None for t in result.trials)
    lineage = getattr(result, "lineage", None)
    multi = any(getattr(t, "objectives", None) is not None for t in result.trials)
    violated = any(getattr(t, "violation", 0) > 0 for t in result.trials)
    head = ["rank", "trial", "status", "objective", "best objective", "best step", "steps"]
    head += ["objectives"] * multi + ["violation"] * violated
    head += ["rung"] * rungs + ["exploits"] * (lineage is not None) + hp + evals
    rows = []
    for rank, t in enumerate(shown, 1):
        cells = [_cell(rank), _cell(t.trial), _cell(t.status, style=f"color:{_COLORS.get(t.status, 'gray')}")]
        cells += [_cell(v) for v in (t.objective, t.best_objective, t.best_step, t.steps_trained)]
        if multi:
            values = getattr(t, "objectives", None)
            cells.append(_cell("" if values is None else ", ".join(format_value(v) for v in values)))
        if violated:
            cells.append(_cell(getattr(t, "violation", 0.0)))
        if rungs:
            cells.append(_cell("" if t.rung is None else t.rung))
        if lineage is not None:
            cells.append(_cell(len(lineage.get(t.trial, ()))))
        cells += [_cell(t.hyperparams.get(k, "")) for k in hp]
        cells += [_cell(t.history[k][-1] if t.history.get(k) else "") for k in evals]
        rows.append(("<tr class='best'>" if rank == 1 else "<tr>") + "".join(cells) + "</tr>")
    out = f"<table><thead><tr>{''.join(_cell(h, 'th') for h in head)}</tr></thead>"
    out += f"<tbody>{''.join(rows)}</tbody></table>"
    if len(shown) < len(ranked):
        out += f"<p>... and {len(ranked) - len(shown)} more trials (<code>result.table(top=None)</code>)</p>"
    return out


def _summary(result: Any) -> str:
    counts: dict[str, int] = {}
    for t in result.trials:
        counts[t.status] = counts.get(t.status, 0) + 1
    text = f"{len(result.trials)} trials (" + ", ".join(f"{v} {k}" for k, v in counts.items()) + ")"
    b = result.best
    text += f"; best trial {b.trial}: objective {format_value(b.objective)}"
    stats = result.stats or {}
    if isinstance(stats.get("wall_seconds"), (int, float)) and math.isfinite(stats["wall_seconds"]):
        text += f"; {stats['wall_seconds']:.1f} s"
    if "compiles" in stats:
        text += f", {stats['compiles']} compiles"
    return f"<p><b>{_html.escape(type(result).__name__)}</b>: {_html.escape(text)}</p>"


def _plots(result: Any) -> str:
    from jopt.sweep.plots import plot_learning_curves

    out = []
    if any(t.history.get("objective") for t in result.trials):
        out.append(figure_html(plot_learning_curves(result), "learning curves"))
    if getattr(result, "schedules", None) and "steps" in (result.stats or {}):
        out.append(figure_html(result.plot_schedules(), "PBT schedules"))
    return "".join(out)


def html(result: Any, *, top: int | None = 20, plot: bool = True) -> str:
    """An HTML fragment showing ``result`` (see the module docstring): the ``top`` best trials
    (``None``: all) and, with ``plot``, the learning curves (and PBT schedules) as inline PNGs."""
    if top is not None and (isinstance(top, bool) or not isinstance(top, int) or top < 1):
        raise ValueError(f"top must be a positive int or None, got {top!r}")
    if not result.trials:
        return f'<div class="jopt-sweep"><p><b>{_html.escape(type(result).__name__)}</b>: no trials</p></div>'
    parts = [_STYLE, _summary(result), _table(result, top)]
    if plot:
        parts.append(_plots(result))
    return f'<div class="jopt-sweep">{"".join(parts)}</div>'
