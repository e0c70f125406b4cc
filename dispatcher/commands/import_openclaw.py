"""``dispatch import-openclaw PATH [-o FILE]``: OpenClaw providers → ``providers.yaml``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
import yaml

from dispatcher.cli_support import fail

STANDARD_TAGS = ("fast", "reasoning", "bulk", "vision")


def register(app: typer.Typer) -> None:
    @app.command("import-openclaw")
    def import_openclaw(
        path: Path = typer.Argument(..., metavar="PATH", help="openclaw.json (JSON5)."),
        output: Path = typer.Option(None, "--output", "-o",
                                    help="Write the providers here (default: stdout)."),
        port: int = typer.Option(8000, "--port", help="Port of `dispatch serve` for the "
                                 "OpenClaw snippet."),
        config: str = typer.Option(None, "--config", help="Configuration directory whose "
                                   "tags the snippet lists."),
    ) -> None:
        """Turn an openclaw.json's providers into providers.yaml entries (keys never copied)."""
        from dispatcher.openclaw import OpenClawError, convert, read_openclaw

        if not path.is_file():
            fail(f"{path}: no such file")
        try:
            imported = convert(read_openclaw(path.read_text(encoding="utf-8")))
        except UnicodeDecodeError:
            fail(f"{path}: not UTF-8 text")
        except OpenClawError as exc:
            fail(f"{path}: {exc}")
        if not imported.providers:
            fail(f"{path}: no OpenAI-compatible provider to import ("
                 + "; ".join(imported.skipped) + ")")
        text = _yaml(imported, path)
        if output:
            output.write_text(text)
        else:
            sys.stdout.write(text)
        _report(imported, output, port, config)


def _yaml(imported, source: Path) -> str:
    head = (f"# Imported from {source.name} by `dispatch import-openclaw`. Keys are NOT here:\n"
            "# set each api_key_env variable in the environment. Add each provider's rate\n"
            "# limits under `limits:` (OpenClaw does not know them); see docs/configuration.md.\n")
    body = yaml.safe_dump({"providers": imported.providers}, sort_keys=False, width=100)
    if imported.routes:
        body += "# Your OpenClaw primary + fallbacks, as a routes.yaml entry:\n"
        body += "".join(f"#   {line}\n" for line in yaml.safe_dump(
            {"routes": imported.routes}, sort_keys=False).splitlines())
    return head + body


def _report(imported, output: Path | None, port: int, config: str | None) -> None:
    from dispatcher.openclaw import dispatch_snippet, tag_capabilities

    err = sys.stderr
    if output:
        print(f"wrote {len(imported.providers)} provider(s) to {output}", file=err)
    for line in imported.skipped:
        print(f"skipped {line}", file=err)
    print("\nSet these environment variables (values are never printed or copied):", file=err)
    for var, how in imported.env.items():
        note = {"reference": "named in openclaw.json",
                "literal": "openclaw.json held a literal key: put it in this variable and "
                           "replace it there with ${" + var + "}",
                "missing": "no apiKey in openclaw.json"}[how]
        print(f"  {var}    ({note})", file=err)
    try:
        from dispatcher.config import load_config

        tags = tag_capabilities(load_config(config))
    except Exception:  # no usable configuration here: the standard tags, capabilities unknown
        tags = {t: {} for t in STANDARD_TAGS}
    print("\nOpenClaw snippet (openclaw.json) to use `dispatch serve` as one provider whose "
          "models are the tags (set DISPATCH_API_KEY to one of DISPATCH_API_KEYS):", file=err)
    print(json.dumps(dispatch_snippet(tags, port), indent=2), file=err)
