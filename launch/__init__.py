"""The ``tether`` command line and what runs behind it (see ``cli.py``)."""


class UsageError(ValueError):
    """A command-line value that parses but makes no sense (printed as one line, exit code 2)."""
