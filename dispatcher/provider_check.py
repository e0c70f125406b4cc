"""``dispatch providers --test``: a tiny request to every usable model, under quota.

The test requests are real traffic, so each takes quota like any job (an embedded Redis
keeps the counters when ``REDIS_URL`` is unset): testing never breaks a limit either.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from rich.markup import escape
from rich.table import Table

from dispatcher.config.secrets import redact

PROMPT = {"messages": [{"role": "user", "content": "Reply with the single word: OK"}],
          "max_tokens": 16}
MAX_WAIT_S = 5.0


@dataclass
class CheckRow:
    target: str
    status: str
    latency_ms: float | None
    detail: str


def _answer(body: dict) -> str:
    try:
        return str(body["choices"][0]["message"].get("content") or "")[:60]
    except (KeyError, IndexError, TypeError):
        return str(body)[:60]


def check_target(rt, target, simulated: bool) -> CheckRow:
    import time

    from workers import attempt
    from workers.providers.outcomes import Success

    ready = attempt.prepare(rt, target, PROMPT, simulated)
    if ready.base_url is None or ready.api_key is None:
        return CheckRow(target.key, "skipped", None, "no URL or key")
    quota = rt.quota(simulated)
    deadline = time.monotonic() + MAX_WAIT_S
    while True:
        res = quota.reserve(target, ready.cost)
        if res.granted:
            break
        if res.never or time.monotonic() + res.wait_s > deadline:
            return CheckRow(target.key, "no quota", None,
                            f"{res.limit} (free again in {res.wait_s:.0f}s)")
        time.sleep(res.wait_s)
    outcome, latency = attempt.send(rt, ready, res.reservation_id)
    if isinstance(outcome, Success):
        return CheckRow(target.key, "ok", latency * 1000, _answer(outcome.body))
    status = getattr(outcome, "status", None)
    return CheckRow(target.key, f"{type(outcome).__name__} {status or ''}".strip(),
                    latency * 1000, redact(getattr(outcome, "message", ""))[:120])


def check_all(rt, cfg, simulated: bool) -> list[CheckRow]:
    """Check every target ``cfg`` (loaded for live or simulated use) says is usable."""
    targets = [t for t in cfg.targets() if cfg.usable(t)]
    if not targets:
        return []
    with ThreadPoolExecutor(max_workers=min(16, len(targets))) as pool:
        return list(pool.map(lambda t: check_target(rt, t, simulated), targets))


def check_table(rows: list[CheckRow], simulated: bool) -> Table:
    table = Table(title="provider test" + (" (SIMULATED)" if simulated else ""))
    for col in ("target", "result", "latency ms", "answer / error"):
        table.add_column(col)
    for row in rows:
        style = "green" if row.status == "ok" else "red"
        table.add_row(row.target, f"[{style}]{row.status}[/]",
                      f"{row.latency_ms:.0f}" if row.latency_ms is not None else "-",
                      row.detail, )
    return table


# ------------------------------------------------------------ dispatch providers --check


def simulator_url() -> str | None:
    """A running simulator: ``DISPATCH_SIMULATOR_URL``, else the one registered in Redis
    (``REDIS_URL``, ``DISPATCH_NAMESPACE``) by ``dispatch run``/``up --simulate``."""
    import os

    env = os.environ.get("DISPATCH_SIMULATOR_URL")
    if env:
        return env.rstrip("/")
    if not os.environ.get("REDIS_URL"):
        return None
    try:
        from dispatcher.connect import redis_client
        from workers.runtime import SIM_KEY

        ns = os.environ.get("DISPATCH_NAMESPACE", "dispatch")
        url = redis_client().get(f"{ns}:{SIM_KEY}")
    except Exception:  # noqa: BLE001 - no registered simulator: start one instead
        return None
    return url.rstrip("/") if url else None


def check_catalog(cfg, simulated: bool):
    """Compare every enabled provider's list with ``cfg``; the simulator's when simulated
    (a running one, else one started here for the check). Returns a CheckReport."""
    from workers.providers.listing import check

    if not simulated:
        found = {name: (cfg.status(name).base_url, cfg.api_key(name))
                 for name in cfg.providers if cfg.status(name).enabled}
        return check(cfg, found, simulated=False)
    url, sim = simulator_url(), None
    if url is None:
        from workers.simulator import Simulator

        sim = Simulator(cfg).start()
        url = sim.url
    try:
        found = {name: (f"{url}/{name}/v1", "simulated") for name in cfg.providers}
        return check(cfg, found, simulated=True)
    finally:
        if sim is not None:
            sim.stop()


CATALOG_COLUMNS = ("provider", "finding", "model")


def catalog_rows(report) -> list[tuple[str, str, str]]:
    """One row per finding (routed ones first): ``gone_routed``, ``gone``, ``new_free``, or
    ``unfetched`` with the reason; a provider with nothing to say gets an ``ok`` row."""
    rows: list[tuple[str, str, str]] = []
    for p in report.providers:
        rows += [(p.provider, "gone_routed", m) for m in p.gone_routed]
    for p in report.providers:
        if not p.fetched:
            rows.append((p.provider, "unfetched", p.error or ""))
            continue
        rows += [(p.provider, "gone", m) for m in p.gone_unrouted]
        rows += [(p.provider, "new_free", m) for m in p.new_free]
        if not (p.gone_routed or p.gone_unrouted or p.new_free):
            rows.append((p.provider, "ok", f"{p.listed} listed"))
    return rows


def catalog_tsv(report) -> str:
    """Tab-separated rows with a header line (stdout that is not a terminal)."""
    def clean(v: str) -> str:
        return v.replace("\t", " ").replace("\n", " ")

    lines = ["\t".join(CATALOG_COLUMNS)]
    lines += ["\t".join(clean(v) for v in row) for row in catalog_rows(report)]
    return "\n".join(lines) + "\n"


def catalog_table(report) -> Table:
    """One row per provider: what is gone (routed loudly), what is new and free."""
    title = "catalog check" + (" (SIMULATED)" if report.simulated else "")
    table = Table(title=title)
    for col in ("provider", "listed", "routed, no longer listed", "configured, no longer listed",
                "free, not in the catalog"):
        table.add_column(col, overflow="fold")
    for p in report.providers:
        if not p.fetched:
            table.add_row(escape(p.provider), "[yellow]?[/]",
                          f"[yellow]list not fetched: {escape(p.error or '')}[/]", "", "")
            continue
        new = ", ".join(p.new_free[:12]) + (f" (+{len(p.new_free) - 12})"
                                            if len(p.new_free) > 12 else "")
        table.add_row(escape(p.provider), str(p.listed),
                      f"[bold red]{escape(', '.join(p.gone_routed))}[/]" if p.gone_routed
                      else "[green]-[/]",
                      escape(", ".join(p.gone_unrouted)) or "-", escape(new) or "-")
    return table


def closed_models(cfg, simulated: bool) -> list[str]:
    """Models the catalog check closed ("not listed upstream"), read from Redis; empty
    when no cluster is configured or reachable (the listing must work without one)."""
    import os

    if not os.environ.get("REDIS_URL"):
        return []
    try:
        from dispatcher.catalog_check import NOT_LISTED
        from dispatcher.connect import redis_client
        from workers.quota.engine import QuotaEngine

        engine = QuotaEngine(redis_client(), cfg,
                             namespace=os.environ.get("DISPATCH_NAMESPACE") or "dispatch",
                             simulated=simulated)
        return [t.key for t in cfg.targets() if engine.cooldown_of(t)[1] == NOT_LISTED]
    except Exception:  # noqa: BLE001 - a listing never fails for want of Redis
        return []
