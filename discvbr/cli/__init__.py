"""The ``discvbr`` command line.

Each stage of the pipeline adds its sub-command in a module of this package
(``discvbr/cli/<stage>.py``) that registers itself on :data:`app`; heavy imports
(torch, itk) happen inside the command functions so ``discvbr --help`` stays fast.
User errors (:class:`discvbr.DiscVBRError`) print one line and exit with status 2.

Exit statuses, the same for every sub-command:

* 0 (:data:`EXIT_OK`): done;
* 1: a bug in DiscVBR (the traceback is printed; please report it);
* 2 (:data:`EXIT_USER_ERROR`): bad input or settings, one ``discvbr: error:`` line, before
  any work (nothing written), or an output folder in use by another run;
* 3 (:data:`EXIT_INCOMPLETE`): the command finished but some of its work failed (a session
  of ``run``, a disc of ``register``, no voxel fitted by ``fit``); the rest is complete
  and the summary says what failed and why;
* 130 (:data:`EXIT_INTERRUPTED`): interrupted (Ctrl-C); completed steps are kept and the
  same command resumes.
"""

from __future__ import annotations

import sys

import typer

from discvbr import __version__
from discvbr.errors import EXIT_INCOMPLETE, EXIT_INTERRUPTED, EXIT_OK, EXIT_USER_ERROR, DiscVBRError

app = typer.Typer(
    name="discvbr",
    help="Voxel-based relaxometry of the lumbar intervertebral discs (T1rho/T2): "
    "phantom, segmentation, registration, fitting, statistics and figures.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"discvbr {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", "-V", callback=_version_callback, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Voxel-based relaxometry of the lumbar intervertebral discs."""


# Sub-commands register themselves on `app` when imported, in the order `--help` lists them.
from discvbr.cli import phantom as _phantom  # noqa: E402,F401
from discvbr.cli import segment as _segment  # noqa: E402,F401
from discvbr.cli import train as _train  # noqa: E402,F401
from discvbr.cli import fit as _fit  # noqa: E402,F401
from discvbr.cli import register as _register  # noqa: E402,F401
from discvbr.cli import stats as _stats  # noqa: E402,F401
from discvbr.cli import render as _render  # noqa: E402,F401
from discvbr.cli import run as _run  # noqa: E402,F401


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``discvbr`` script; returns the exit status."""
    try:
        app(args=argv, prog_name="discvbr", standalone_mode=True)
    except SystemExit as exc:
        code = int(exc.code or 0) if not isinstance(exc.code, str) else 1
    except DiscVBRError as exc:
        typer.echo(f"discvbr: error: {exc}", err=True)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:  # before typer runs the command (typer turns it into exit 130 there)
        code = EXIT_INTERRUPTED
    else:
        code = EXIT_OK
    if code == EXIT_INTERRUPTED:
        typer.echo("discvbr: interrupted; completed steps are kept; run the same command again to resume", err=True)
    return code


def run() -> None:
    sys.exit(main())
