"""Labelling on a Ray cluster: the run driver's labeller, spread over an actor pool.

With ``ray_address`` set, :func:`samtext.run.driver.iter_run` swaps the action's labeller for a
:class:`RayLabeller`. Each actor builds the action's labeller once (models loaded once per actor, ``num_gpus`` per
actor where the cluster has GPUs) and labels what it is sent; the images are read by the actors (only sample ids
and file paths leave the driver). Everything else stays the driver's: the targets, the run record and its
heartbeat, the writes (one process writes, so every sample is written exactly once), resume after a stop.

Faults: a call whose actor died (killed, or its node lost) is sent again to another actor, and the actor is left
out until it answers again (Ray restarts it, ``max_restarts``; on a lost node it may never come back, and calls
queued on it are sent elsewhere too); labelling is a pure function of the sample, so a repeat gives the same
labels. A sample's own error (an unreadable image) comes back as that error, and the driver reports it as for a
local run.

Order: results are taken in the driver's order; :meth:`RayLabeller.prepare` (called by the driver's loader thread
with the next samples) submits them ahead, round robin, so every actor has work queued.
"""

import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

from ..errors import SamtextError

logger = logging.getLogger(__name__)

RETRIES = 3  # sends of one sample to (other) actors after its actor died
WAIT_S = 1.0  # how often a wait for a result looks whether its actor was seen dead
READY_S = 900  # the most an actor may take to start and load its models
DOWN_S = 600  # the most a sample waits for an actor to come back when every actor is down
LOCAL = "local"  # ray_address for a Ray started in this process (tests, one machine)


class ActorDown(RuntimeError):
    """A result given up because its actor was seen dead (its node lost) while the call waited on it."""


@dataclass(frozen=True)
class ImageRef:
    """What the driver hands a Ray labeller for an image action: the sample, not its pixels."""

    sample_id: str
    filepath: str


def load_ref(sample_id: str, filepath: str) -> ImageRef:
    return ImageRef(sample_id, filepath)


class LabelActor:
    """One Ray actor: the action's labeller, built once, labelling what it is sent."""

    def __init__(self, build: Callable[[], object], info: Optional[Callable[[object], dict]]):
        self.labeller = build()
        self._info = info

    def label(self, item):
        """The labeller's result for ``item``: an :class:`ImageRef` (its image read here, as the driver reads
        one) or the input the driver loaded itself (actions with their own loader)."""
        if isinstance(item, ImageRef):
            from ..images import load_image

            item = load_image(item.filepath)
        return self.labeller(item)

    def info(self) -> dict:
        return self._info(self.labeller) if self._info else {}

    def pid(self) -> int:
        return os.getpid()


def local_actor_pids() -> List[int]:
    """The pids of the samtext actors of a local Ray this process started (its descendants); tests and benchmarks
    kill one."""
    import psutil

    pids = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if "ray::LabelActor" in " ".join(proc.cmdline()):
                pids.append(proc.pid)
        except psutil.Error:  # ended meanwhile
            pass
    return pids


REACH_S = 10  # how long a cluster's address may take to answer before the run is refused


def _check_reachable(address: str) -> None:
    """Refuses, at once and with the reason, an address whose head does not answer: Ray itself retries for many
    minutes before it gives up (a typo in the App's form would hang the run). ``"local"`` and ``"auto"`` are not
    probed; ``host:port`` (a head's GCS) and ``ray://host:port`` (Ray Client) get a TCP connection attempt."""
    import socket

    if address in (LOCAL, "auto"):
        return
    scheme, sep, rest = address.partition("://")
    if sep and scheme != "ray":
        raise SamtextError("ray_address %r is not a Ray address (%s:// is not Ray's; the dashboard's http address is "
                           "not where a run joins): use host:port of the head (e.g. 10.0.0.5:6379) or "
                           "ray://host:port for Ray Client (e.g. ray://10.0.0.5:10001)" % (address, scheme))
    where = rest if sep else address
    host, _, port = where.rpartition(":")
    if not host or not port.isdigit():
        raise SamtextError("ray_address %r is not a Ray address: use 'local', 'auto', host:port of the head (e.g. "
                           "10.0.0.5:6379) or ray://host:port for Ray Client (e.g. ray://10.0.0.5:10001)" % address)
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=REACH_S).close()
    except OSError as e:
        raise SamtextError("cannot reach the Ray cluster at %r (%s): is it running, and is this its head's address "
                           "(host:6379, or ray://host:10001 for Ray Client)?" % (address, e.strerror or e)) from e


# (the address asked for, the session's GCS address) of the Ray session connect() started or joined
_connected_to: Optional[tuple] = None


def connect(address: str, num_cpus: Optional[int] = None) -> None:
    """Joins (or, for ``"local"``, starts) Ray; a no-op when this process is already connected there (or the
    caller's own ``ray.init`` connected it).

    Raises:
        SamtextError: the address does not answer, Ray cannot join it, or this process already joined another
            cluster through samtext (Ray joins one cluster per process).
    """
    global _connected_to
    import ray

    address = address.strip()
    _check_reachable(address)
    if ray.is_initialized():
        live = ray.get_runtime_context().gcs_address
        ours = _connected_to is not None and _connected_to[1] == live  # else the caller's own ray.init
        if ours and address not in (_connected_to[0], "auto", live):
            raise SamtextError("this process already runs on the Ray cluster at %r; one process joins one cluster "
                               "(start another process for %r)" % (_connected_to[0], address))
        return
    if address == LOCAL:  # its session folder goes when this process ends (atexit: after Ray's own shutdown)
        import atexit
        import shutil
        import tempfile

        folder = tempfile.mkdtemp(prefix="samtext-ray-")
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                 configure_logging=False, _temp_dir=folder)
    else:
        try:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
        except (ConnectionError, RuntimeError, ValueError) as e:  # e.g. Ray or Python versions differ (all lines)
            raise SamtextError("could not join the Ray cluster at %r: %s" % (address, " ".join(
                str(e).split()) or type(e).__name__)) from e
    _connected_to = (address, ray.get_runtime_context().gcs_address)


class RayLabeller:
    """The driver's labeller, backed by ``actors`` Ray actors (see the module docstring).

    Arguments:
        build: the action's ``() -> labeller`` (run in each actor).
        info: the action's ``labeller -> dict`` of what the run record keeps (asked of one actor).
        address: the Ray address ("local", "auto", "ray://host:10001", ...).
        actors: how many actors (default: the cluster's GPUs when it has some, else its CPUs).
        gpus_per_actor: GPUs each actor holds (default: 1 when the cluster has GPUs, else 0).
    """

    def __init__(self, build, info=None, address: str = LOCAL, actors: Optional[int] = None,
                 gpus_per_actor: Optional[float] = None):
        import ray

        address = address.strip()
        connect(address, num_cpus=actors if address == LOCAL else None)
        resources = ray.cluster_resources()
        gpus, cpus_there = float(resources.get("GPU", 0)), int(resources.get("CPU", 0))
        if gpus_per_actor is None:
            gpus_per_actor = 1.0 if gpus >= 1 else 0.0
        if actors is None:
            actors = max(1, int(gpus // gpus_per_actor)) if gpus_per_actor else max(1, cpus_there)
        actors = int(actors)
        # CPU actors share the machine's cores (Ray sets each actor's torch/OMP threads to its num_cpus)
        cpus = 1 if gpus_per_actor else max(1, cpus_there // max(actors, 1))
        if actors < 1 or actors * gpus_per_actor > gpus or actors * cpus > max(cpus_there, 1):
            raise SamtextError(
                "the Ray cluster at %r has %d CPUs and %g GPUs: it cannot hold %d actor(s) of %d CPU(s) and %g GPU(s) "
                "each; lower ray_actors or ray_gpus_per_actor" % (address, cpus_there, gpus, actors, cpus,
                                                                  gpus_per_actor))
        self.gpus_per_actor = gpus_per_actor
        self.address = address
        remote = ray.remote(num_cpus=cpus, num_gpus=gpus_per_actor, max_restarts=-1, max_task_retries=0)(LabelActor)
        self.actors = [remote.remote(build, info) for _ in range(actors)]
        self._next = 0
        self._pending: Dict[int, tuple] = {}  # id(item) -> (item, ObjectRef, actor index)
        self._lock = threading.RLock()  # prepare runs on the driver's loader thread, __call__ on its main thread
        self._down: Dict[int, object] = {}  # actor index -> probe ObjectRef, for actors seen dead
        self._ready()

    def _ready(self) -> None:
        """Waits until every actor has built its labeller (loaded its models); raises a :class:`SamtextError` with
        the cause when one cannot, or when they are not all up within :data:`READY_S` (before the run creates
        anything)."""
        import ray
        from ray.exceptions import RayActorError

        probes = [a.pid.remote() for a in self.actors]
        ready, waiting = ray.wait(probes, num_returns=len(probes), timeout=READY_S)
        try:
            ray.get(ready)
        except RayActorError as e:
            self.close()
            cause = getattr(e, "cause", None) or e
            raise SamtextError("a Ray actor could not load the models: %s" % str(cause).strip().splitlines()[-1]) from e
        if waiting:
            self.close()
            raise SamtextError("%d of %d Ray actors did not start within %d s (the cluster has no room for them, "
                               "or loading the models hangs)" % (len(waiting), len(probes), READY_S))

    @property
    def prepare_batch(self) -> int:
        return 2 * len(self.actors)

    def _back(self, index: int) -> bool:
        """Whether actor ``index``, marked down, answers its probe again (Ray restarted it); re-probes if not."""
        import ray
        from ray.exceptions import RayActorError

        probe = self._down.get(index)
        if probe is None:
            return True
        if not ray.wait([probe], timeout=0)[0]:
            return False
        try:
            ray.get(probe)
        except RayActorError:
            self._down[index] = self.actors[index].pid.remote()
            return False
        del self._down[index]
        return True

    def _mark_down(self, index: int) -> None:
        with self._lock:
            if index not in self._down:
                self._down[index] = self.actors[index].pid.remote()  # answered once Ray has restarted it

    def _submit(self, item):
        """Sends ``item`` to the next actor that is up (waiting for one to come back when none is)."""
        import ray

        deadline = time.monotonic() + DOWN_S
        while True:
            with self._lock:
                for index in list(self._down):
                    self._back(index)
                up = [i for i in range(len(self.actors)) if i not in self._down]
                if up:
                    index = min(up, key=lambda i: (i - self._next) % len(self.actors))
                    self._next = index + 1
                    return self.actors[index].label.remote(item), index
                probes = list(self._down.values())
            if time.monotonic() > deadline:
                raise ActorDown("every Ray actor is down and none came back within %d s" % DOWN_S)
            ray.wait(probes, num_returns=1, timeout=1.0)  # every actor is down: wait for a restart
            time.sleep(0.2)  # a probe that fails at once is renewed at once: do not spin

    def _get(self, ref, index: int):
        """``ray.get(ref)``, giving up (:class:`ActorDown`) when its actor is marked down meanwhile: a call queued
        on an actor whose node is gone would wait for a restart that may never come."""
        import ray

        while True:
            if ray.wait([ref], timeout=WAIT_S)[0]:
                return ray.get(ref)
            with self._lock:
                down = index in self._down and not self._back(index)
            if down:
                ray.cancel(ref)
                raise ActorDown("Ray actor %d was seen dead while this sample waited on it" % index)

    def prepare(self, items: List[object]) -> None:
        for item in items:
            submitted = (item,) + self._submit(item)
            with self._lock:
                self._pending[id(item)] = submitted

    def __call__(self, item):
        from ray.exceptions import ObjectLostError, RayActorError, RayTaskError

        with self._lock:
            entry = self._pending.pop(id(item), None)
        ref, index = entry[1:] if entry is not None and entry[0] is item else self._submit(item)
        for attempt in range(RETRIES + 1):
            try:
                return self._get(ref, index)
            except RayTaskError as e:  # the labeller's own error for this sample
                cause = getattr(e, "cause", None)
                raise cause if isinstance(cause, Exception) else e
            except (RayActorError, ActorDown, ObjectLostError) as e:  # the actor or its node (and the result) died
                if attempt == RETRIES:
                    raise
                logger.warning("samtext: a Ray actor died (%s); its sample goes to another actor", type(e).__name__)
                self._mark_down(index)
                ref, index = self._submit(item)

    def info(self) -> dict:
        """What an actor's labeller learnt, plus where the run ran: ``ray`` = the address, the actors and the
        GPUs each held."""
        import ray

        return dict(ray.get(self.actors[0].info.remote()),
                    ray=dict(address=self.address, actors=len(self.actors), gpus_per_actor=self.gpus_per_actor))

    def discard_prepared(self) -> None:
        import ray

        with self._lock:
            pending, self._pending = list(self._pending.values()), {}
        for _, ref, _ in pending:
            ray.cancel(ref)

    def close(self) -> None:
        """Ends the actors (the models they hold go with them); never raises (a lost connection is logged)."""
        import ray

        try:
            self.discard_prepared()
            for actor in self.actors:
                ray.kill(actor)
        except Exception as e:  # the run's outcome matters more than the actors' goodbye
            logger.warning("samtext: could not end the Ray actors (%s: %s)", type(e).__name__, e)
        self.actors = []
