"""The ``movierec`` command line: thin click commands over the pipeline functions.

Heavy libraries are imported inside the commands that need them: ``movierec --help``
and ``movierec recommend`` import neither TensorFlow nor torch. One module per command
group (``recommend``, ``evaluate``, ``refresh``, ``models``, ``data``, ``stages``, ``serve``); this one
registers them and holds :func:`main`, which maps movierec's errors to the exit codes.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback

import click

from movierec.cli import data, evaluate, models, recommend, refresh, serve, stages  # noqa: F401  (registers)
from movierec.cli._app import cli
from movierec.errors import EXIT_FAILURE, MovieRecError

__all__ = ["cli", "main"]


_NATIVE_CAPTURED = False


def _capture_native_stderr() -> None:
    """Route what native libraries write straight to file descriptor 2 (TensorFlow's and
    absl's C++ lines, CUDA probes) into the log at debug level, so that stderr holds only
    movierec's log lines (one JSON document each with --log-format json). Python's own
    sys.stderr keeps the real stream. Once per process, for the console command only."""
    global _NATIVE_CAPTURED
    if _NATIVE_CAPTURED:
        return
    import threading

    try:
        real = os.dup(2)
        sys.stderr.flush()
        sys.stderr = os.fdopen(real, "w", buffering=1, encoding=sys.stderr.encoding or "utf-8",
                               errors="backslashreplace")
        for h in logging.getLogger().handlers:
            if isinstance(h, logging.StreamHandler):
                h.setStream(sys.stderr)
        r, w = os.pipe()
        os.dup2(w, 2)
        os.close(w)
    except (OSError, ValueError):  # no usable stderr: leave it as it is
        return
    _NATIVE_CAPTURED = True
    native = logging.getLogger("movierec.native")

    def pump() -> None:
        with os.fdopen(r, "rb") as fh:
            for raw in fh:
                line = raw.decode("utf-8", errors="replace").rstrip()
                if line:
                    native.debug("%s", line)

    threading.Thread(target=pump, name="native-stderr", daemon=True).start()


def main(argv: list[str] | None = None) -> None:
    """Entry point: runs the CLI and maps movierec errors to the documented exit codes.

    As the console command (``argv`` None) the process then ends at once (:func:`_end`)."""
    if argv is not None:
        _run(argv)
    _capture_native_stderr()
    try:
        _run(None)
    except SystemExit as exc:
        _end(exc.code)


def _end(code) -> None:
    """End the process without the interpreter's teardown: freeing every module (numba's
    compiled code, pandas, scipy) takes 0.2 s of a one-second command. What the teardown would
    do that matters is done first: other threads joined, atexit handlers run (logging's flush,
    Ray's shutdown, MLflow), the standard streams flushed."""
    import atexit
    import threading

    if code is None:
        code = 0
    elif not isinstance(code, int):  # sys.exit("message"): printed, status 1
        print(code, file=sys.stderr)
        code = EXIT_FAILURE
    for t in threading.enumerate():
        if t is not threading.current_thread() and not t.daemon:
            t.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a reader that went away, a closed stream: nothing left to lose
            pass
    os._exit(code)


def _run(argv: list[str] | None) -> None:
    """The CLI; always ends in SystemExit with the documented code."""
    try:
        cli.main(args=argv, prog_name="movierec", standalone_mode=False)
        sys.stdout.flush()  # a closed pipe shows here, not as a traceback at exit
    except SystemExit:
        from click.utils import PacifyFlushWrapper

        if isinstance(sys.stdout, PacifyFlushWrapper):  # click met a closed stdout (EPIPE) and exits 1
            sys.exit(0)
        raise
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort as exc:
        if isinstance(exc.__cause__, KeyboardInterrupt):  # Ctrl-C inside a command: click made it Abort
            sys.exit(130)
        click.echo("aborted", err=True)
        sys.exit(EXIT_FAILURE)
    except MovieRecError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        # the reader of stdout went away (`movierec ... | head`): that is not a failure
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(0)
    except OSError as exc:  # a file that cannot be read or written, named
        where = f"{exc.filename}: " if exc.filename else ""
        click.echo(f"error: {where}{exc.strerror or exc}", err=True)
        sys.exit(EXIT_FAILURE)
    except Exception as exc:  # noqa: BLE001 - last resort: a message, not a bare traceback
        if logging.getLogger().level <= logging.DEBUG:
            traceback.print_exc()
        click.echo(f"error: unexpected {exc.__class__.__name__}: {exc} (run with -v for the traceback)", err=True)
        sys.exit(EXIT_FAILURE)
    sys.exit(0)
