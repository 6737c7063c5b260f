"""Entry point: builds the Typer app and owns error handling and exit codes.

Exit codes: 0 done; 1 the run finished but some rows failed (rerun the same command to retry
them); 2 a user error (one line naming the file, row and field); 130 interrupted (rerun resumes).
"""

from __future__ import annotations

import os
import signal
import sys
from typing import NoReturn

import typer

from seftgen.cli import admin, data, export, generate
from seftgen.cli.errors import show as show_error
from seftgen.console import warn
from seftgen.errors import UserError

app = typer.Typer(
    name="seftgen",
    help=(
        "Alignment training data for self-improvement rounds (SEFT, SELF-JUDGE, SRT).\n\n"
        "Typical round: [bold]sample[/] policy responses, [bold]revise[/] them (SEFT reviser or "
        "SRT critic) or [bold]judge[/] them (SELF-JUDGE), [bold]export-axolotl[/] the training "
        "config, train, then [bold]release[/] the data. [bold]round[/] runs a whole recipe."
    ),
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
for module in (generate, data, export, admin):
    module.register(app)

# Commands that run models or axolotl: their tools' chatter goes to a log file unless --verbose.
NOISY = {"sample", "revise", "judge", "best-of", "evaluate", "benchmark", "round", "validate", "export-axolotl"}


@app.callback()
def _options(
    ctx: typer.Context,
    verbose: bool = typer.Option(
        False, "--verbose", "-v", help="Show what vLLM, Ray and axolotl print (default: a log file)."
    ),
) -> None:
    if ctx.invoked_subcommand not in NOISY or (ctx.obj or {}).get("help"):
        return  # --help must reach the terminal
    from datetime import datetime

    from seftgen.console import tools_to_log
    from seftgen.models import cache_dir

    log = cache_dir() / "logs" / f"{datetime.now():%Y%m%d-%H%M%S}-{ctx.invoked_subcommand}-{os.getpid()}.log"
    ctx.with_resource(tools_to_log(log, enabled=not verbose))


INTERRUPTED = 130  # the shell's exit code for a process stopped by SIGINT


def _terminate(signum: int, frame: object) -> NoReturn:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    # vLLM and the tokenizers print a lot on import; keep the user's terminal for our output.
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    signal.signal(signal.SIGTERM, _terminate)
    args = sys.argv[1:] if argv is None else [str(a) for a in argv]
    try:
        code = app(args=args, standalone_mode=False, obj={"help": bool({"-h", "--help"} & set(args))})
        if code == INTERRUPTED:  # Typer turns a KeyboardInterrupt inside a command into Exit(130)
            raise KeyboardInterrupt
        if isinstance(code, int) and code:  # without standalone mode, click returns typer.Exit's code
            sys.exit(code)
    except UserError as err:
        show_error(err)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        warn("interrupted: finished parts are kept; rerun the same command to resume")
        sys.exit(INTERRUPTED)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(INTERRUPTED)
    except typer.TyperException as exc:  # usage: a bad option value, a missing argument (click's, vendored)
        show = getattr(exc, "show", None)
        if show is None:
            raise
        show()
        sys.exit(getattr(exc, "exit_code", 2))


if __name__ == "__main__":
    main()
