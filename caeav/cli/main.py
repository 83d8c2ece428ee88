"""The `caeav` command: a thin layer that parses arguments and calls library functions.

Sub-commands import their heavy dependencies (torch, onnx, ...) lazily inside the command function, so that
`caeav infer` works where only the lean runtime extra is installed. Errors a user can cause (`CaeavError`) become one
line on stderr and a non-zero exit code; nothing prints a traceback unless CAEAV_DEBUG=1.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

import typer

from caeav.cli import model_cmd
from caeav.cli import captions_cmd
from caeav.cli import data_cmd
from caeav.cli import train_cmd
from caeav.cli import export_cmd, parity_cmd
from caeav.cli import infer_cmd
from caeav.cli import bench_cmd
from caeav.cli import import_cmd
from caeav.errors import CaeavError, Terminated

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
app.command(name="import")(import_cmd.import_official)
app.command(name="export-official")(import_cmd.export_official)


@app.command()
def version() -> None:
    """Print the caeav version."""
    from caeav import __version__

    typer.echo(__version__)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text


def _usage_errors() -> tuple:
    """(ClickException classes, Abort classes) typer may raise: typer >= 0.26 vendors click as `typer._click` and
    has its own Abort; older typer raises plain click's."""
    found, aborts = [], []
    try:
        from typer import _click as vendored

        found.append(vendored.exceptions.ClickException)
    except ImportError:
        pass
    try:
        import typer.exceptions as typer_exc

        aborts.append(typer_exc.Abort)
    except (ImportError, AttributeError):
        pass
    try:
        import click

        found.append(click.exceptions.ClickException)
        aborts.append(click.exceptions.Abort)
    except ImportError:
        pass
    return tuple(found), tuple(aborts)


_SIGNALS = {"SIGINT": 130, "SIGTERM": 143}
_received: list[str] = []


def _on_sigterm(signum, frame) -> None:
    """SIGTERM becomes the same clean stop as Ctrl-C (every command saves what it has on KeyboardInterrupt)."""
    _received.append("SIGTERM")
    raise Terminated()


def _interrupted() -> int:
    name = _received[-1] if _received else "SIGINT"
    typer.echo(f"caeav: interrupted by {name}; stopped", err=True)
    return _SIGNALS[name]


def _usage_hint(argv: list[str] | None) -> str:
    """'caeav CMD [SUB] --help' for the (sub)command of `argv`, for errors click raises without a usage line."""
    words = []
    for arg in (sys.argv[1:] if argv is None else argv):
        if arg.startswith("-") or len(words) == 2:
            break
        words.append(arg)
    return f"caeav {' '.join(words + ['--help'])} lists the options"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `caeav` console script.

    Exit codes: 0 done, 1 failed checks (e.g. parity), 2 a usage error or a user error (`CaeavError`), 3 a missing
    package, 130 interrupted (SIGINT), 143 terminated (SIGTERM). A usage error prints click's usage line and one
    message; every other error prints one line; CAEAV_DEBUG=1 shows tracebacks instead.
    """
    debug = os.environ.get("CAEAV_DEBUG") == "1"
    usage_errors, aborts = _usage_errors()
    _received.clear()
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        rv = app(args=argv, standalone_mode=False, prog_name="caeav")
        # typer turns KeyboardInterrupt (and our SIGTERM) into `Exit(130)` and returns its code here
        if rv == 130 or _received:
            return _interrupted()
        return rv if isinstance(rv, int) and not isinstance(rv, bool) else 0
    except KeyboardInterrupt:
        return _interrupted()
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
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 2
    except usage_errors as exc:  # usage errors: usage line + one message, exit 2
        if getattr(exc, "ctx", True) is None:  # click raised it before a command context existed: no usage line
            typer.echo(f"Usage: {_usage_hint(argv)}", err=True)
        exc.show()
        return exc.exit_code
    except aborts:
        typer.echo("caeav: aborted", err=True)
        return 1
    except Exception as exc:  # a bug or an input nothing checked: still one line, the traceback on request
        if debug:
            raise
        typer.echo(f"caeav: internal error: {type(exc).__name__}: {_one_line(exc)} (this is a bug or an unchecked "
                   "input; CAEAV_DEBUG=1 shows the traceback)", err=True)
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
