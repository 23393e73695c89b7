"""samtext FiftyOne plugin entry point (FiftyOne's plugin loader imports this file as a package)."""

if __package__:  # pytest may import this file bare, without its package; there is nothing to register then
    from .operators import register  # noqa: F401
