"""Loading ahead: while one sample is labelled, the next ones are read and prepared on a background thread.

The run driver labels samples one by one on its own thread; a :class:`Prefetcher` hands it each sample's input
already loaded (an image decoded from disk, or what an action's loader reads) and, where the labeller can use
it, already prepared (SAM's resizing and normalisation; on CUDA the encoder pass of a whole batch). Image
decoding, resizing and torch's kernels release the GIL, so this overlaps the encoder of the sample before.
"""

import logging
import queue
import threading
from typing import Callable, Iterator, Optional, Sequence, Tuple

logger = logging.getLogger(__name__)

_END = object()


class Prefetcher:
    """Iterates ``(sample_id, filepath, input, error)`` for ``items`` in their order; ``error`` is the exception
    that loading that sample raised (``input`` is then None), for the caller to report as the sample's.

    Arguments:
        items: ``(sample_id, filepath)`` pairs.
        load: ``(sample_id, filepath) -> input``.
        prepare: optional ``(inputs) -> None``, called on the loader thread with each batch of loaded inputs
            before they are handed out (its failure is logged once as a warning and otherwise ignored: the
            labeller does the work itself).
        discard: optional ``() -> None``, called by :meth:`close` once the thread has stopped, to drop what
            ``prepare`` made for inputs that were never handed out.
        batch: inputs per ``prepare`` call.
        depth: batches loaded ahead at most.

    Use it as a context manager, or call :meth:`close`, so that the thread stops when the caller stops early.
    """

    def __init__(self, items: Sequence[Tuple[str, str]], load: Callable[[str, str], object],
                 prepare: Optional[Callable[[list], None]] = None, batch: int = 1, depth: int = 2,
                 discard: Optional[Callable[[], None]] = None):
        self.items = list(items)
        self.load, self.prepare, self.discard = load, prepare, discard
        self.prepare_failed = False
        self.batch = max(1, int(batch))
        self._queue = queue.Queue(maxsize=max(1, int(depth)) * self.batch)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, name="samtext-prefetch", daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _work(self):
        try:
            for start in range(0, len(self.items), self.batch):
                loaded = []
                for sid, path in self.items[start:start + self.batch]:
                    if self._stop.is_set():
                        return
                    try:
                        loaded.append((sid, path, self.load(sid, path), None))
                    except Exception as e:  # the sample's own error, reported in its turn
                        loaded.append((sid, path, None, e))
                inputs = [value for _, _, value, error in loaded if error is None]
                if self.prepare is not None and inputs and not self._stop.is_set():
                    try:
                        self.prepare(inputs)
                    except Exception as e:  # only a head start: the labeller does the work itself
                        if not self.prepare_failed:
                            logger.warning("samtext: preparing images ahead failed (%s: %s); they are prepared "
                                           "one by one instead", type(e).__name__, e)
                        self.prepare_failed = True
                for item in loaded:
                    if not self._put(item):
                        return
        finally:
            self._put(_END)

    def __iter__(self) -> Iterator[Tuple[str, str, object, Optional[BaseException]]]:
        while True:
            item = self._queue.get()
            if item is _END:
                return
            yield item

    def close(self, timeout: float = 30.0):
        """Stops the loader thread (it finishes the sample it is loading) and drops what it loaded."""
        self._stop.set()
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._thread.join(timeout)
        if self.discard is not None and not self._thread.is_alive():
            self.discard()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
