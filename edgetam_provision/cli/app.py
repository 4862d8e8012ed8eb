"""The `provision` command line: parse, call one library function, render. Nothing else.

Heavy libraries (torch, transformers, paramiko) are imported inside the library functions that
use them, so `provision --help` stays fast. Renderings live in `render`; the commands, one module
per subsystem beside this one, register themselves on `cli`.
"""

from __future__ import annotations

import functools
import json
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, overload

import click

from .. import __version__
from ..console import StderrProgress, emit, fail
from ..errors import EXIT_CODES, InternalError, Interrupted, ProvisionError, UsageError
from ..errors import Result as Carried
from .hints import with_options

DEFAULT_BACKUPS = Path("model_backups")
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
R = TypeVar("R", bound=Carried)


@dataclass(frozen=True)
class Output:
    """What a command hands back: the object --json prints (``data``, made only for --json: a
    restore of 100,000 files would build 200,000 dicts for nothing), its words (made when shown),
    and its verdict: a code of the exit-code table, 0 when what it did or found holds."""

    data: Callable[[], dict[str, Any]]
    words: Callable[[], str]
    exit_code: int = 0


Result = Output  # a command's return type


def shown(result: R, render: Callable[[R], str], data: dict[str, Any] | None = None,
          exit_code: int = 0) -> Output:
    """A typed result as a command's `Output`: its JSON (``result.to_dict()`` unless `data` says
    more), `render` for its words, and the verdict the result's own type gives (`exit_code`)."""
    said = result.to_dict if data is None else lambda: data
    return Output(said, functools.partial(render, result), exit_code)


#: words for the result a failure carries (a failed verdict's report): '' when it is not its kind
Failed = Callable[[Carried], str]


def _exit_code_epilog() -> str:
    rows = "\n".join(f"  {code:>3}  {desc.splitlines()[0]}" for code, (_n, desc) in EXIT_CODES.items())
    return "\b\nExit codes:\n" + rows


@click.group(context_settings=CONTEXT, epilog=_exit_code_epilog())
@click.version_option(__version__, prog_name="provision")
@click.option("--debug", is_flag=True, envvar="PROVISION_DEBUG", help="Show tracebacks.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Get Hugging Face models (EdgeTAM by default) onto this machine when the direct download
    fails, and prove the install works."""
    ctx.obj = {"debug": debug}


Command = Callable[..., Output]  # a command's function: its options in, its output out


class SaidProgress(StderrProgress):
    """The library's progress lines as the CLI says them: its words for a setting become the option."""

    def __call__(self, msg: str) -> None:
        super().__call__(with_options(msg))


@overload
def command(fn: Command, *, cache: bool = ..., failed: Failed | None = ...) -> Callable[..., None]: ...


@overload
def command(fn: None = ..., *, cache: bool = ...,
            failed: Failed | None = ...) -> Callable[[Command], Callable[..., None]]: ...


def command(fn: Command | None = None, *, cache: bool = True, failed: Failed | None = None,
            ) -> Callable[..., None] | Callable[[Command], Callable[..., None]]:
    """Wrap a command: --json and --cache-dir options, errors -> one line + hint + exit code.
    ``@command(cache=False)``: a command that uses no cache of this machine has no --cache-dir
    (its function gets None). ``@command(failed=render.X)``: a failure that carries a result (a
    failed verdict's report) prints it that way first, then its one-line error."""
    if fn is None:
        def decorate(f: Command) -> Callable[..., None]:
            return command(f, cache=cache, failed=failed)
        return decorate
    run = fn

    def call(ctx: click.Context, as_json: bool, quiet: bool, debug_here: bool,
             cache_dir: Path | None = None, **kwargs: Any) -> None:
        debug = debug_here or bool(ctx.obj and ctx.obj.get("debug"))
        try:
            out = run(cache_dir=cache_dir, progress=SaidProgress(quiet=as_json or quiet), debug=debug,
                      **kwargs)
            emit(out.data() if as_json else {}, as_json, out.words, ok=out.exit_code == 0)
            # A report whose verdict is a code of the table (doctor's diagnosis, status's integrity,
            # serve stopped by Ctrl-C) exits with it and says no more: it ran, and it says what it found.
            # A command that could not do its work raises instead (with result=, what it reached).
            code = out.exit_code
        except ProvisionError as err:
            if err.result is not None and failed is not None:  # a failed verdict: its report, then why
                if not as_json:  # (with --json the error's object carries the report)
                    emit({}, False, functools.partial(failed, err.result), ok=False)
            elif debug:
                traceback.print_exc()
            # the library's words for a setting become its option
            err.message, err.hint = with_options(err.message), with_options(err.hint)
            fail(err, as_json)
            code = err.exit_code
        except KeyboardInterrupt:
            fail(Interrupted("interrupted", "what was finished is kept (pulls resume, the cache is "
                                            "consistent); run the same command again"), as_json)
            code = Interrupted.exit_code
        except Exception as exc:
            if debug:
                traceback.print_exc()
            fail(InternalError(f"internal error: {type(exc).__name__}: {exc}",
                               "run again with --debug and report the traceback"), as_json)
            code = InternalError.exit_code
        ctx.exit(code)

    cache_dir = click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path),
                             help="Hub cache folder (default: as huggingface_hub resolves it).")
    options = [
        click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object."),
        *([cache_dir] if cache else []),
        click.option("-q", "--quiet", is_flag=True, help="No progress on stderr (errors still are)."),
        click.option("--debug", "debug_here", is_flag=True, help="Show tracebacks (as provision --debug)."),
    ]
    functools.update_wrapper(call, fn)  # click takes the command's name and help from `fn`
    wrapper: Callable[..., None] = click.pass_context(call)
    for option in reversed(options):  # as decorators would: the first one listed first in --help
        wrapper = option(wrapper)
    return wrapper


def cache_folder(cache_dir: Path | None, must_exist: bool = False) -> Path:
    from ..hub.cache import resolve_cache_dir

    loc = resolve_cache_dir(cache_dir)
    if loc.note:
        sys.stderr.write(loc.note + "\n")
    if must_exist and cache_dir is not None and not loc.path.is_dir():
        raise UsageError(f"no such cache folder: {cache_dir}", "pass an existing --cache-dir, or leave it "
                         "out to use huggingface_hub's own")
    return loc.path


def main() -> None:
    """Console-script entry point. A usage error click finds (an unknown option, a bad value) is
    also one JSON object on stdout when --json was given."""
    try:
        code = cli.main(prog_name="provision", standalone_mode=False)
    except click.exceptions.Abort:
        fail(Interrupted("interrupted", "nothing was changed"), as_json=False)
        sys.exit(Interrupted.exit_code)
    except click.ClickException as exc:
        if "--json" in sys.argv[1:]:
            sys.stdout.write(json.dumps({"ok": False, **UsageError(exc.format_message()).to_dict()}) + "\n")
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    sys.exit(code if isinstance(code, int) else 0)
