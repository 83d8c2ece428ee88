"""The `caeav` command: a thin layer that parses arguments and calls library functions.

Sub-commands import their heavy dependencies (torch, onnx, ...) lazily inside the command function, so that
`caeav infer` works where only the lean runtime extra is installed. Errors a user can cause (`CaeavError`) become one
line on stderr and a non-zero exit code; nothing prints a traceback unless CAEAV_DEBUG=1.
"""

from __future__ import annotations

import os
import sys

import typer

from caeav.cli import model_cmd
from caeav.cli import captions_cmd
from caeav.cli import data_cmd
from caeav.cli import train_cmd
from caeav.cli import export_cmd, parity_cmd
from caeav.cli import infer_cmd
from caeav.cli import bench_cmd
from caeav.errors import CaeavError

app = typer.Typer(
    name="caeav",
    help="CAE-AV: train, export and run the audio-visual model from paper to edge device.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(model_cmd.app, name="model")
app.add_typer(captions_cmd.app, name="captions")
app.add_typer(data_cmd.app, name="data")
app.command(name="train")(train_cmd.train)
app.command(name="eval")(train_cmd.evaluate)
app.command(name="export")(export_cmd.export)
app.command(name="engines")(export_cmd.engines)
app.command(name="parity")(parity_cmd.parity)
app.command(name="infer")(infer_cmd.infer)
app.command(name="bench")(bench_cmd.bench)


@app.command()
def version() -> None:
    """Print the caeav version."""
    from caeav import __version__

    typer.echo(__version__)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `caeav` console script."""
    debug = os.environ.get("CAEAV_DEBUG") == "1"
    try:
        app(args=argv, standalone_mode=False)
    except CaeavError as exc:
        if debug:
            raise
        typer.echo(f"caeav: error: {_one_line(exc)}", err=True)
        return exc.exit_code
    except ModuleNotFoundError as exc:
        if debug:
            raise
        typer.echo(
            f"caeav: error: this command needs the Python package {exc.name!r}, which is not installed "
            "(install the extra that provides it, e.g. pip install 'caeav[train]')",
            err=True,
        )
        return 3
    except KeyboardInterrupt:
        typer.echo("caeav: interrupted", err=True)
        return 130
    except SystemExit as exc:  # typer/click usage errors already printed their message
        return int(exc.code or 0) if not isinstance(exc.code, str) else 2
    except Exception as exc:  # click's own usage errors arrive here in non-standalone mode
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            return exc.exit_code
        if isinstance(exc, click.exceptions.Abort):
            typer.echo("caeav: aborted", err=True)
            return 1
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
