"""Typer options whose default and help come from a job's settings class (`cai.config`)."""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup

from cai.config import REQUIRED, spec
from cai.errors import CaiError, SettingError


class OneLineErrors(TyperGroup):
    """Print a CaiError as one line on stderr and exit 2, never a traceback; a bad setting names its flag."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except SettingError as err:
            command = self.get_command(ctx, ctx.invoked_subcommand) if ctx.invoked_subcommand else None
            _fail(f"{shown(command, err.field)}: {err.message}", err.exit_code)
        except CaiError as err:
            _fail(str(err) or type(err).__name__, err.exit_code)
        except KeyboardInterrupt:
            typer.echo("interrupted: work done so far is saved", err=True)
            raise typer.Exit(130) from None


def _fail(message: str, code: int):
    for line in message.splitlines():
        typer.echo(f"error: {line}", err=True)
    raise typer.Exit(code)


def group(help: str, **kwargs: Any) -> typer.Typer:
    """A command group (`cai data`, `cai train`, ...) with the one-line error handling."""
    return typer.Typer(cls=OneLineErrors, help=help, no_args_is_help=True, **kwargs)


def option(cls: type, name: str, *flags: str, help: str | None = None, **kwargs: Any) -> Any:
    """`typer.Option` for the setting `name` of `cls`: its default and help unless given here."""
    default, text = spec(cls, name)
    default = kwargs.pop("default", default)
    return typer.Option(... if default is REQUIRED else default, *flags, help=help or text, **kwargs)


def renamed(old: str, new: str) -> Any:
    """A hidden option under a flag's old name that refuses it in one line naming the new one."""

    def refuse(value):
        if value is not None:
            raise CaiError(f"{old}: renamed: use {new}")
        return value

    return typer.Option(None, old, hidden=True, callback=refuse)


def argument(cls: type, name: str, **kwargs: Any) -> Any:
    default, text = spec(cls, name)
    return typer.Argument(... if default is REQUIRED else default, help=text, **kwargs)


def shown(command, field: str) -> str:
    """How the user types the setting `field` on `command`: its flag (--batch-size) or argument (RUN)."""
    for param in getattr(command, "params", []):
        if param.name == field:
            longs = [o for o in param.opts if o.startswith("--")]
            return longs[0] if longs else param.name.upper()
    return "--" + field.replace("_", "-")


class BareRay(TyperCommand):
    """A command whose `--ray` may be given without an address: typer options cannot take an optional value,
    so a bare `--ray` becomes `--ray local` before parsing. What follows `--ray` is its address only when it
    looks like one (HOST:PORT, ray://..., auto, local); otherwise it is the next argument."""

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        return super().parse_args(ctx, bare_ray(args))


def bare_ray(args: list[str]) -> list[str]:
    from cai.cluster import LOCAL

    out = []
    for i, arg in enumerate(args):
        out.append(arg)
        if arg == "--ray":
            following = args[i + 1] if i + 1 < len(args) else None
            if following is None or not (":" in following or following in ("auto", LOCAL)):
                out.append(LOCAL)
    return out
