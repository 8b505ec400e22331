"""A batch of files: a bad file is reported in one line and skipped, the others are still processed, and a
summary line and the exit status say that something failed."""

import traceback
from contextlib import contextmanager

from ..messages import first_line
from .errors import EXIT_BAD_INPUT, EXIT_ERROR, EXIT_OK, CLIError


class Batch:
    """Counts the files of one command run and reports each failure as it happens.

    Exit status (:meth:`finish`): 0 when every file worked, 2 when some failed through bad input (a
    missing or unreadable file, a stream of another model, ...), 1 when something unexpected failed.
    """

    def __init__(self, command: str, total: int, noun: str, verb: str, progress, debug: bool = False, processes=None):
        self.command = command
        self.processes = processes  # a cli.processes.Processes: the counts of every process are summed at the end
        self.total = total
        self.noun = noun
        self.verb = verb
        self.progress = progress
        self.debug = debug
        self.succeeded = 0
        self.failed = 0
        self.unexpected = 0

    def fail(self, message: str, unexpected: bool = False) -> None:
        self.failed += 1
        self.unexpected += unexpected
        self.progress.echo(f"sodec {self.command}: error: {message}", err=True)

    @contextmanager
    def item(self, path: str, final: bool = True):
        """Runs one file's work; its failure is reported and counted instead of ending the batch.
        ``final=False`` for an up-front check: success there does not count the file as done."""
        from ..codec.errors import BitstreamError

        try:
            yield
        except (CLIError, BitstreamError) as e:
            self._show_traceback()
            self.fail(str(e) if isinstance(e, CLIError) else f"{path}: {e}")  # a CLIError names the file
        except Exception as e:  # noqa: BLE001 - one file's crash must not take the others with it
            self._show_traceback()
            hint = "" if self.debug else " (run with --debug for the traceback)"
            self.fail(f"{path}: {type(e).__name__}: {first_line(e)}{hint}", unexpected=True)
        else:
            self.succeeded += final

    def _show_traceback(self) -> None:
        if self.debug:
            self.progress.echo(traceback.format_exc().rstrip(), err=True)

    def finish(self) -> int:
        """Prints the summary line (batches with a failure only) and returns the exit status. Under several
        processes every one of them must call it: the counts of all are summed, the main process prints the
        line, and every process returns the status of the whole batch."""
        succeeded, failed, unexpected = self.succeeded, self.failed, self.unexpected
        if self.processes is not None and self.processes.num_processes > 1:
            counts = self.processes.gather((succeeded, failed, unexpected))
            succeeded, failed, unexpected = (sum(c[i] for c in counts) for i in range(3))
        main = self.processes is None or self.processes.is_main_process
        if failed and self.total > 1 and main:
            self.progress.echo(
                f"sodec {self.command}: {failed} of {self.total} {self.noun}s failed, {succeeded} {self.verb}",
                err=True,
            )
        if unexpected:
            return EXIT_ERROR
        return EXIT_BAD_INPUT if failed else EXIT_OK
