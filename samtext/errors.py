"""samtext's error type: what the caller gave it is wrong (a parameter, a field, a file), and the message says
which, what was given, and what to do. A subclass of ``ValueError``, so code that catches that keeps working."""


class SamtextError(ValueError):
    """A bad argument or input, named in the message; raised before anything is created or written."""
