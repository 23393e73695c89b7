"""The samtext SDK the operators call: the installed package when there is one (so the SDK and the
operators share one module and one model cache), else the copy inside this plugin folder."""

try:
    import samtext
except ImportError:  # a plugin downloaded with `fiftyone plugins download`, not pip-installed
    from .. import samtext  # noqa: F401
