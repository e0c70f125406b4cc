"""How every reporting command prints (``providers``, ``quota``, ``status``, ``report``,
``config check``): one path, three forms.

- ``--json``: one JSON document on stdout (the contract's fields), nothing else on stdout.
- stdout not a terminal (a pipe, a file): plain tab-separated rows under one header line;
  no cell is ever cut, wrapped or padded, whatever the width, so ``grep``/``cut``/``awk``
  see whole provider names, model ids and batch ids.
- a terminal: the command's rich table, sized to the window.

Notes meant for a person (hints, warnings) go to stderr when stdout is piped, so the rows
stay parseable.

    >>> emit(Rows(["a", "b"], [[1, "x y"]]), doc=[{"a": 1}], as_json=False)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

import typer
from rich.console import Console, RenderableType
from rich.table import Table

JsonOption = Annotated[
    bool, typer.Option("--json", help="One JSON document on stdout (for scripts).")
]


@dataclass
class Rows:
    """The plain form of a report: a header and rows of cells (any value; ``None`` -> "")."""

    header: list[str]
    rows: list[Sequence[Any]] = field(default_factory=list)


def stdout_is_terminal() -> bool:
    """A person is reading: stdout is a TTY. ``TTY_COMPATIBLE=1``/``0`` (rich's variable)
    overrides; ``FORCE_COLOR`` does not (colour is no reason to cut rows for a pipe)."""
    forced = os.environ.get("TTY_COMPATIBLE")
    if forced in ("0", "1"):
        return forced == "1"
    return sys.stdout.isatty()


def cell(value: Any) -> str:
    """One TSV cell: booleans as true/false, None as empty, numbers without exponents,
    no tab or line break inside."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6f}".rstrip("0").rstrip(".") if not value.is_integer() \
            else str(int(value))
    return " ".join(str(value).replace("\t", " ").splitlines())


def tsv(rows: Rows) -> str:
    lines = ["\t".join(rows.header)]
    lines += ["\t".join(cell(v) for v in row) for row in rows.rows]
    return "\n".join(lines) + "\n"


def plain_table(rows: Rows, title: str | None = None) -> Table:
    """A rich table of the plain rows (for commands with no table of their own)."""
    table = Table(title=title)
    for name in rows.header:
        table.add_column(name, overflow="fold")
    for row in rows.rows:
        table.add_row(*(cell(v) for v in row))
    return table


def emit(rows: Rows, doc: Any, as_json: bool,
         rich: Callable[[], RenderableType] | None = None,
         notes: Sequence[str] = ()) -> None:
    """Print one report in the form stdout calls for (see the module docstring)."""
    if as_json:
        sys.stdout.write(json.dumps(doc, indent=2, default=str) + "\n")
        return
    if not stdout_is_terminal():
        sys.stdout.write(tsv(rows))
        for note in notes:
            print(note, file=sys.stderr)
        return
    console = Console()
    console.print(rich() if rich is not None else plain_table(rows))
    for note in notes:
        console.print(note, highlight=False, markup=False)
