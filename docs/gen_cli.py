"""Generate docs/cli.md, the CLI reference, from the click commands themselves.

    .venv/bin/python docs/gen_cli.py          # rewrite docs/cli.md
    .venv/bin/python docs/gen_cli.py --check  # exit 1 if docs/cli.md is stale

tests/ops/test_cli_docs.py runs the check and fails when a command or option lacks help.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Iterator
from pathlib import Path

import click

OUT = Path(__file__).with_name("cli.md")

HEADER = """\
# CLI reference

Generated from the click commands by `docs/gen_cli.py`; do not edit by hand (regenerate with
`.venv/bin/python docs/gen_cli.py`; `tests/ops/test_cli_docs.py` fails when this file is stale).

Every option can also be set in the configuration file (see
[deploy.md](deploy.md#configuration)): a top-level key for the options of `netledger` itself,
a table named after the command for the others (`[serve]`, `[projector.run]`), the key being
the long option name without the dashes. Precedence: **flag > environment variable > file >
default**. The *env* column names the environment variable an option reads; the *default*
column says **required** for an option a command cannot run without.
"""


def walk(
    cmd: click.Command, path: list[str]
) -> Iterator[tuple[list[str], click.Command, click.Context]]:
    ctx = click.Context(cmd, info_name=path[-1] if path else "netledger")
    yield path, cmd, ctx
    if isinstance(cmd, click.Group):
        for name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                yield from walk(sub, [*path, name])


def help_text(cmd: click.Command) -> str:
    text = inspect.cleandoc(cmd.help or "")
    return text.replace("\b\n", "")


def auto_env(root: click.Command) -> bool:
    return bool(root.context_settings.get("auto_envvar_prefix"))


def envvar(param: click.Option, path: list[str], root: click.Command) -> str:
    if param.envvar:
        return param.envvar if isinstance(param.envvar, str) else ", ".join(param.envvar)
    if not auto_env(root) or not param.allow_from_autoenv or param.name is None:
        return ""
    prefix = root.context_settings["auto_envvar_prefix"]
    parts = [prefix, *(p.upper().replace("-", "_") for p in path), param.name.upper()]
    return "_".join(parts)


def default_of(param: click.Option) -> str:
    if param.required:  # said where the default would be, as --help says "[required]"
        return "**required**"
    if not param.show_default or (param.is_flag and not param.secondary_opts):
        return ""
    d = param.default
    if d is None or callable(d):
        return ""
    if isinstance(d, bool) and param.secondary_opts:
        return param.opts[0] if d else param.secondary_opts[0]
    return f"`{d}`"


def cell(s: str) -> str:
    return " ".join(s.split()).replace("|", "\\|")


def missing_help(root: click.Command) -> list[str]:
    """Commands or options without help text (the test fails on any)."""
    out = []
    for path, cmd, _ in walk(root, []):
        name = " ".join(["netledger", *path])
        if not (cmd.help or cmd.short_help):
            out.append(f"{name}: no help")
        for p in cmd.params:
            if isinstance(p, click.Option) and not p.hidden and not p.help:
                out.append(f"{name} {p.opts[0]}: no help")
    return out


def render(root: click.Command) -> str:
    lines = [HEADER]
    for path, cmd, ctx in walk(root, []):
        name = " ".join(["netledger", *path])
        lines.append(f"\n{'#' * min(2 + len(path), 4)} `{name}`\n")
        usage = " ".join(cmd.collect_usage_pieces(ctx))
        lines.append(f"```\n{name} {usage}\n```\n")
        text = help_text(cmd)
        if text:
            lines.append(text + "\n")
        if isinstance(cmd, click.Group):
            subs = [(n, cmd.get_command(ctx, n)) for n in cmd.list_commands(ctx)]
            listed = [(n, c) for n, c in subs if c is not None and not c.hidden]
            if listed:
                lines.append("| command | what it does |\n|---|---|")
                for n, c in listed:
                    lines.append(f"| `{name} {n}` | {cell(c.get_short_help_str(200))} |")
                lines.append("")
        args = [p for p in cmd.params if isinstance(p, click.Argument)]
        if args:
            lines.append(
                "Arguments: " + ", ".join(f"`{a.human_readable_name}`" for a in args) + "\n"
            )
        opts = [p for p in cmd.params if isinstance(p, click.Option) and not p.hidden]
        if opts:
            lines.append("| option | env | default | help |\n|---|---|---|---|")
            for p in opts:
                flags = ", ".join(f"`{o}`" for o in [*p.opts, *p.secondary_opts])
                if not p.is_flag and p.metavar:
                    flags += f" `{p.metavar}`"
                elif not p.is_flag and not p.count:
                    flags += f" `{p.make_metavar(ctx)}`"
                env = envvar(p, path, root) if p.name not in ("help", "version") else ""
                lines.append(
                    f"| {cell(flags)} | {f'`{env}`' if env else ''} | {default_of(p)} | {cell(p.help or '')} |"
                )
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str]) -> int:
    from netledger.cli import cli

    text = render(cli)
    if "--check" in argv:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT} is stale: run .venv/bin/python docs/gen_cli.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
