"""Exceptions raised by caffe_py.formats; every message names the file."""


class FormatError(ValueError):
    """A model/solver/data file could not be read, written or upgraded.

    ``path`` is the file (or a ``<...>`` label for in-memory text),
    ``line``/``column`` are 1-based when known.
    """

    def __init__(self, message, path=None, line=None, column=None):
        super().__init__(message)
        self.path = path
        self.line = line
        self.column = column


class ProtoParseError(FormatError):
    """Text or binary protobuf that does not parse as the expected message."""


class UpgradeError(FormatError):
    """A legacy definition that Caffe itself refuses to upgrade."""


def shown(name):
    """`name` (a path, a record key) as a message shows it: as is, or quoted when it holds
    line breaks or other control characters, so the message stays on one line."""
    if isinstance(name, bytes):
        name = name.decode("utf-8", "backslashreplace")
    return name if name.isprintable() else repr(name)


class MissingFileError(FormatError, FileNotFoundError):
    """A file that does not exist; ``named_by`` says which setting named it."""

    def __init__(self, path, named_by=None):
        msg = "file not found: %s" % shown(path)
        if named_by:
            msg += " (named by %s)" % named_by
        FormatError.__init__(self, msg, path=path)
        # OSError's fields, so generic handlers print "<strerror>: <path>"
        self.filename = path
        self.strerror = "file not found" + (" (named by %s)" % named_by if named_by else "")
        self.named_by = named_by

    def __str__(self):
        return self.args[0]
