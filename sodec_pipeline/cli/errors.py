"""How the CLI reports a problem: one line on stderr and an exit status."""

#: Everything worked.
EXIT_OK = 0
#: Something unexpected (a bug, out of memory): the line says so, ``--debug`` shows the traceback.
EXIT_ERROR = 1
#: A user mistake (arguments, input files, model, output folder): the line says what to do.
EXIT_BAD_INPUT = 2
#: Interrupted with Ctrl-C.
EXIT_INTERRUPTED = 130


class CLIError(Exception):
    """A user mistake, reported as one line with exit status 2. The message says what is wrong and,
    where there is one, what to do about it."""
