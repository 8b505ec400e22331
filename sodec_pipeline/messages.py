"""How a problem is told in one line: the CLI, ``sodec eval``, the demo and the image loader all cut an
exception's message the same way."""


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (its class name when it has none)."""
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
