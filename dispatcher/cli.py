"""The ``dispatch`` command. Each module in ``dispatcher.commands`` adds its commands."""

from __future__ import annotations

import importlib
import pkgutil

import typer

import dispatcher.commands
from dispatcher.cli_support import plain_help

app = typer.Typer(
    name="dispatch",
    help="Run LLM chat-completion jobs across free-tier providers within their rate limits.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

plain_help()
for _mod in sorted(pkgutil.iter_modules(dispatcher.commands.__path__), key=lambda m: m.name):
    importlib.import_module(f"dispatcher.commands.{_mod.name}").register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
