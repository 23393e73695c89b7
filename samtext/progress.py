"""Running a generator of progress events to its end: what every SDK call that also exists as a generator does
(the operators iterate the generator themselves, to report progress to the App). No FiftyOne here."""

from typing import Callable, Iterator, Optional


def run_events(events: Iterator[tuple], on_event: Optional[Callable[..., None]] = None):
    """Runs ``events`` (a generator of tuples, e.g. ``(done, total)``) to its end and returns its return value,
    calling ``on_event(*event)`` for each event. The generator is closed on any exit, so its pending work is
    flushed or recorded even when the callback raises or the user presses Ctrl-C."""
    try:
        while True:
            try:
                event = next(events)
            except StopIteration as stop:
                return stop.value
            if on_event is not None:
                on_event(*event)
    finally:
        events.close()
