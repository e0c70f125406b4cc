"""``dispatch report``: usage per provider/model/day and what it would have cost on paid tiers.

The computation (:func:`build_report`) is pure and separate from rendering, so totals and
savings are tested without a terminal. Usage comes from the per-day Redis hashes written by
:mod:`workers.usage`; prices from ``settings.prices`` (USD per million input / output
tokens of an equivalent paid model, by target).

Charts: a terminal bar chart is always printed. ``--chart FILE.svg`` writes an SVG with no
extra dependency; ``--chart FILE.png`` needs matplotlib (an optional install), which the
service itself never needs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from html import escape as xml_escape
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Group
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from dispatcher.cli_support import EXIT_INFRA, fail, require_redis
from dispatcher.commands.config_cmd import ConfigOption, load_or_exit
from dispatcher.config import Config
from dispatcher.config.models import Price
from dispatcher.output import JsonOption, Rows, emit
from workers.usage import Usage, days_back, load_usage

PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1",
           "#ff9da7", "#9c755f", "#bab0ac"]
RICH_COLORS = ["blue", "dark_orange", "red", "cyan", "green", "yellow", "magenta", "pink1",
               "tan", "grey62"]


def paid_cost(u: Usage, price: Price | None) -> float | None:
    """USD the tokens would have cost at ``price``; None when no price is configured."""
    if price is None:
        return None
    return (u.prompt_tokens * price.input_per_million
            + u.completion_tokens * price.output_per_million) / 1e6


@dataclass
class Row:
    day: str
    target: str
    usage: Usage
    cost_usd: float | None
    """Paid-equivalent cost; None when the target has no configured price."""
    paid: bool = False
    """The target is itself a paid one: its cost was real, so it saves nothing."""

    @property
    def provider(self) -> str:
        return self.target.split("/", 1)[0]

    @property
    def model(self) -> str:
        return self.target.split("/", 1)[1] if "/" in self.target else ""

    @property
    def savings_usd(self) -> float:
        return 0.0 if self.paid or self.cost_usd is None else self.cost_usd


@dataclass
class Report:
    days: list[str]
    simulated: bool
    rows: list[Row] = field(default_factory=list)

    @property
    def totals(self) -> Usage:
        total = Usage()
        for r in self.rows:
            total.add(r.usage)
        return total

    @property
    def savings_usd(self) -> float:
        return sum(r.savings_usd for r in self.rows)

    @property
    def unpriced(self) -> list[str]:
        """Targets with usage but no price: their savings are unknown, not zero."""
        return sorted({r.target for r in self.rows if r.cost_usd is None})

    def by_target(self) -> dict[str, tuple[Usage, float]]:
        out: dict[str, tuple[Usage, float]] = {}
        for r in self.rows:
            u, s = out.get(r.target, (Usage(), 0.0))
            u.add(r.usage)
            out[r.target] = (u, s + r.savings_usd)
        return dict(sorted(out.items()))

    def daily_by_provider(self) -> dict[str, dict[str, tuple[int, float]]]:
        """day -> provider -> (tokens, savings USD), every day of the range present."""
        out: dict[str, dict[str, tuple[int, float]]] = {d: {} for d in self.days}
        for r in self.rows:
            tok, usd = out[r.day].get(r.provider, (0, 0.0))
            out[r.day][r.provider] = (tok + r.usage.tokens, usd + r.savings_usd)
        return out

    @property
    def providers(self) -> list[str]:
        return sorted({r.provider for r in self.rows})


def build_report(usage: dict[str, dict[str, Usage]], prices: dict[str, Price],
                 days: list[str], simulated: bool = False,
                 paid_targets: set[str] | frozenset[str] = frozenset()) -> Report:
    """Rows per day and target (days in order, targets sorted), costed at ``prices``."""
    rep = Report(days=list(days), simulated=simulated)
    for day in days:
        for target, u in sorted(usage.get(day, {}).items()):
            rep.rows.append(Row(day, target, u, paid_cost(u, prices.get(target)),
                                target in paid_targets))
    return rep


def usage_json(u: Usage) -> dict[str, Any]:
    return {"requests": u.requests, "ok": u.ok, "prompt_tokens": u.prompt_tokens,
            "completion_tokens": u.completion_tokens, "total_tokens": u.tokens,
            "neurons": u.neurons}


def report_json(rep: Report) -> dict[str, Any]:
    """The machine form of ``--json`` (USD rounded to 1e-6)."""
    def usd(x: float | None) -> float | None:
        return None if x is None else round(x, 6)

    return {
        "days": rep.days,
        "simulated": rep.simulated,
        "rows": [{"day": r.day, "target": r.target, "provider": r.provider, "model": r.model,
                  "simulated": rep.simulated,
                  **usage_json(r.usage), "paid_equivalent_usd": usd(r.cost_usd),
                  "savings_usd": usd(r.savings_usd), "paid_target": r.paid}
                 for r in rep.rows],
        "by_target": {t: {**usage_json(u), "savings_usd": usd(s)}
                      for t, (u, s) in rep.by_target().items()},
        "totals": {**usage_json(rep.totals), "savings_usd": usd(rep.savings_usd)},
        "unpriced_targets": rep.unpriced,
    }


# ------------------------------------------------------------------ rendering
def _usd(x: float | None) -> str:
    if x is None:
        return "-"
    return f"${x:,.4f}" if x < 100 else f"${x:,.2f}"


def _neurons(n: float) -> str:
    return f"{n:,.1f}" if n else "-"


def build_table(rep: Report) -> Table:
    mode = "SIMULATED traffic" if rep.simulated else "live traffic, real providers"
    table = Table(title=f"Usage {rep.days[0]} .. {rep.days[-1]} (UTC, {mode})",
                  show_footer=bool(rep.rows))
    t = rep.totals
    table.add_column("day", footer="total")
    table.add_column("provider", style="bold")
    table.add_column("model", overflow="fold")
    table.add_column("requests", justify="right", footer=f"{t.requests:,}")
    table.add_column("prompt tok", justify="right", footer=f"{t.prompt_tokens:,}")
    table.add_column("completion tok", justify="right", footer=f"{t.completion_tokens:,}")
    table.add_column("neurons", justify="right", footer=_neurons(t.neurons))
    priced = [r.cost_usd for r in rep.rows if r.cost_usd is not None]
    table.add_column("paid-equivalent", justify="right",
                     footer=_usd(sum(priced)) if priced else "-")
    last_day = None
    for r in rep.rows:
        if last_day is not None and r.day != last_day:
            table.add_section()
        cost = _usd(r.cost_usd) + (" (paid)" if r.paid else "")
        table.add_row(r.day if r.day != last_day else "", escape(r.provider), escape(r.model),
                      f"{r.usage.requests:,}", f"{r.usage.prompt_tokens:,}",
                      f"{r.usage.completion_tokens:,}", _neurons(r.usage.neurons), cost)
        last_day = r.day
    return table


def terminal_chart(rep: Report, width: int = 40) -> Group:
    """Daily savings per provider as bars of █ (tokens when nothing is priced)."""
    daily = rep.daily_by_provider()
    by_usd = rep.savings_usd > 0
    idx = 1 if by_usd else 0
    peak = max((v[idx] for d in daily.values() for v in d.values()), default=0) or 1
    colors = {p: RICH_COLORS[i % len(RICH_COLORS)] for i, p in enumerate(rep.providers)}
    pw = max((len(p) for p in rep.providers), default=0)
    what = "savings (paid-equivalent USD)" if by_usd else "tokens"
    lines: list[Text] = [Text(f"Daily {what} per provider", style="bold")]
    for day, provs in daily.items():
        if not provs:
            lines.append(Text(f"{day}  -"))
            continue
        for i, (p, (tok, usd)) in enumerate(sorted(provs.items())):
            value = usd if by_usd else tok
            n = math.ceil(width * value / peak) if value > 0 else 0
            line = Text(f"{day if i == 0 else '':<10}  {p:<{pw}} ")
            line.append("█" * n, style=colors[p])
            line.append(f" {_usd(usd)}  {tok:,} tok" if by_usd else f" {tok:,} tok")
            lines.append(line)
    return Group(*lines)


def chart_svg(rep: Report) -> str:
    """A grouped bar chart (one group per day, one bar per provider) as standalone SVG."""
    daily = rep.daily_by_provider()
    by_usd = rep.savings_usd > 0
    idx = 1 if by_usd else 0
    provs = rep.providers or ["-"]
    peak = max((v[idx] for d in daily.values() for v in d.values()), default=0) or 1
    w_bar, gap, left, top, h = 18, 24, 80, 50, 300
    group_w = w_bar * len(provs) + gap
    width = left + group_w * len(rep.days) + 160
    height = top + h + 70
    title = "Daily savings (paid-equivalent USD)" if by_usd else "Daily tokens"
    title += " per provider" + (" - simulated" if rep.simulated else "")
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="11">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{left}" y="24" font-size="15" font-weight="bold">'
           f'{xml_escape(title)}</text>',
           f'<line x1="{left}" y1="{top + h}" x2="{width - 150}" y2="{top + h}" stroke="#333"/>']
    for k in range(5):
        v = peak * k / 4
        y = top + h - h * k / 4
        label = _usd(v) if by_usd else f"{v:,.0f}"
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">'
                   f'{xml_escape(label)}</text>')
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{width - 150}" y2="{y:.1f}" '
                   'stroke="#ddd"/>')
    for di, day in enumerate(rep.days):
        x0 = left + gap / 2 + di * group_w
        for pi, p in enumerate(provs):
            value = daily[day].get(p, (0, 0.0))[idx]
            bh = h * value / peak
            out.append(f'<rect x="{x0 + pi * w_bar:.1f}" y="{top + h - bh:.1f}" '
                       f'width="{w_bar - 2}" height="{bh:.1f}" '
                       f'fill="{PALETTE[pi % len(PALETTE)]}"><title>{xml_escape(p)} {day}: '
                       f'{value}</title></rect>')
        out.append(f'<text x="{x0 + (group_w - gap) / 2:.1f}" y="{top + h + 16}" '
                   f'text-anchor="middle">{day[5:]}</text>')
    for pi, p in enumerate(provs):
        y = top + 10 + pi * 18
        out.append(f'<rect x="{width - 140}" y="{y - 9}" width="12" height="12" '
                   f'fill="{PALETTE[pi % len(PALETTE)]}"/>')
        out.append(f'<text x="{width - 122}" y="{y + 1}">{xml_escape(p)}</text>')
    out.append("</svg>")
    return "\n".join(out)


def chart_png(rep: Report, path: Path) -> None:
    """The same chart through matplotlib (optional); ImportError when it is absent."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    daily = rep.daily_by_provider()
    by_usd = rep.savings_usd > 0
    idx = 1 if by_usd else 0
    provs = rep.providers
    fig, ax = plt.subplots(figsize=(max(6.0, len(rep.days) * 0.9), 4))
    w = 0.8 / max(1, len(provs))
    for pi, p in enumerate(provs):
        xs = [i + pi * w for i in range(len(rep.days))]
        ax.bar(xs, [daily[d].get(p, (0, 0.0))[idx] for d in rep.days], width=w, label=p,
               color=PALETTE[pi % len(PALETTE)])
    ax.set_xticks([i + 0.4 - w / 2 for i in range(len(rep.days))], [d[5:] for d in rep.days])
    ax.set_ylabel("USD (paid-equivalent)" if by_usd else "tokens")
    ax.set_title("Daily savings per provider" if by_usd else "Daily tokens per provider")
    if provs:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_chart(rep: Report, path: Path) -> None:
    if path.suffix.lower() == ".svg":
        path.write_text(chart_svg(rep), encoding="utf-8")
        return
    if path.suffix.lower() != ".png":
        fail(f"--chart {path}: use a .svg or .png file name")
    try:
        chart_png(rep, path)
    except ImportError:
        fail(f"--chart {path}: PNG charts need matplotlib (pip install matplotlib); "
             "a .svg chart needs nothing extra")


def collect(cfg: Config, days: int, simulated: bool) -> Report:
    """Read the usage hashes of the last ``days`` UTC days and cost them."""
    import os

    import redis

    from dispatcher.connect import redis_client

    namespace = os.environ.get("DISPATCH_NAMESPACE", "dispatch")
    day_list = days_back(days)
    try:
        usage = load_usage(redis_client(), namespace, day_list, simulated)
    except redis.RedisError as exc:
        fail(f"cannot read usage from Redis: {exc}", EXIT_INFRA)
    paid = {t.key for t in cfg.targets() if t.model.paid or t.provider_config.paid}
    return build_report(usage, cfg.settings.prices, day_list, simulated, paid)


REPORT_HEADER = ["day", "provider", "model", "simulated", "requests", "ok", "prompt_tokens",
                 "completion_tokens", "total_tokens", "neurons", "paid_equivalent_usd",
                 "savings_usd"]


def report_rows(docs: list[dict[str, Any]]) -> Rows:
    """Plain rows of every report document (live and simulated rows labelled)."""
    return Rows(REPORT_HEADER, [[row.get(k, doc["simulated"] if k == "simulated" else None)
                                 for k in REPORT_HEADER]
                                for doc in docs for row in doc["rows"]])


def _render(reps: list[Report], days: int, chart: Path | None) -> Group:
    parts: list[Any] = []
    for rep in reps:
        mode = "simulated" if rep.simulated else "live (real providers)"
        if not rep.rows:
            parts.append(Text(f"No {mode} usage recorded in the last {days} day(s)."))
            continue
        what = " - simulated traffic" if rep.simulated else ""
        parts += [build_table(rep),
                  Text.from_markup(f"Saved about [bold green]{_usd(rep.savings_usd)}[/] "
                                   "against the list prices of equivalent paid models "
                                   f"(settings.prices){what}.")]
        if rep.unpriced:
            parts.append(Text("No price configured (not counted): " + ", ".join(rep.unpriced)))
        parts += [Text(""), terminal_chart(rep), Text("")]
    if chart is not None:
        parts.append(Text(f"chart written to {chart}"))
    return Group(*parts)


def report(
    config: ConfigOption = None,
    days: Annotated[int, typer.Option("--days", min=1, max=400,
                                      help="UTC days to show, ending today.")] = 7,
    simulated: Annotated[bool | None, typer.Option(
        "--simulated/--live", show_default=False,
        help="Only the simulator's traffic / only real traffic (default: both, each "
             "labelled).")] = None,
    as_json: JsonOption = False,
    chart: Annotated[Path | None, typer.Option(
        "--chart", metavar="FILE", help="Also write a bar chart (.svg; .png with matplotlib).",
        show_default=False)] = None,
) -> None:
    """Usage per provider/model/day and what it would have cost at paid list prices.

    Real and simulated traffic are counted apart and shown apart, each labelled; --json
    prints a list of report documents, one per kind shown, each with ``simulated``.
    """
    cfg = load_or_exit(config)
    require_redis()
    reps = [collect(cfg, days, m) for m in ([False, True] if simulated is None else [simulated])]
    if chart is not None:
        write_chart(next((r for r in reps if r.rows), reps[0]), chart)
    docs = [report_json(rep) for rep in reps]
    emit(report_rows(docs), docs, as_json, rich=lambda: _render(reps, days, chart))


def register(app: typer.Typer) -> None:
    """Add ``dispatch report`` to the CLI."""
    app.command("report")(report)
