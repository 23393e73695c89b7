"""Delegated operations whose worker died: seen, failed with a message, and queued again.

A samtext operation running on a delegated worker refreshes FiftyOne's ``updated_at`` of its operation every
:data:`samtext.run.records.HEARTBEAT_S` seconds (:class:`OperationHeartbeat`). A RUNNING samtext operation whose
``updated_at`` is older than :func:`samtext.run.records.stale_after` seconds lost its worker (killed, out of
memory, machine gone): :func:`recover_stale_operations` marks it FAILED with a message saying so and queues it
again, and the next worker resumes it (a resumed run labels only what is missing). samtext calls it whenever it
queues runs; ``python -m samtext recover`` calls it by hand or from cron.
"""

import functools
import logging
from datetime import datetime, timedelta, timezone
from typing import List, Optional

from . import records

logger = logging.getLogger(__name__)

OPERATOR_PREFIX = "@samtext/samtext/"


def _repo():
    from fiftyone.factory.repo_factory import RepositoryFactory

    return RepositoryFactory.delegated_operation_repo()


class OperationHeartbeat(records.Beat):
    """Refreshes the delegated operation ``operation_id``'s ``updated_at`` while the block runs
    (``with OperationHeartbeat(op_id):``); nothing when ``operation_id`` is None."""

    def __init__(self, operation_id: Optional[str], interval: float = records.HEARTBEAT_S):
        beat = None
        if operation_id:
            from bson import ObjectId

            beat = functools.partial(_repo().ping, ObjectId(str(operation_id)))
        super().__init__(beat, "delegated operation %s" % operation_id, interval)


def stale_operations(dataset_name: Optional[str] = None, stale_after: Optional[float] = None) -> list:
    """The RUNNING samtext delegated operations (of ``dataset_name``, or of every dataset) whose ``updated_at``
    is older than ``stale_after`` seconds (default :func:`samtext.run.records.stale_after`)."""
    from fiftyone.operators.delegated import DelegatedOperationService

    limit = datetime.utcnow() - timedelta(seconds=records.stale_after() if stale_after is None else stale_after)
    running = DelegatedOperationService().get_running_operations(dataset_name=dataset_name)
    return [op for op in running if str(op.operator).startswith(OPERATOR_PREFIX)
            and (_utc(op.updated_at or op.started_at) or limit) < limit]


def _utc(moment: Optional[datetime]) -> Optional[datetime]:
    """``moment`` as a naive UTC datetime (FiftyOne returns aware ones when ``FIFTYONE_TIMEZONE`` is set)."""
    if moment is not None and moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc).replace(tzinfo=None)
    return moment


def recover_stale_operations(dataset_name: Optional[str] = None, requeue: bool = True,
                             stale_after: Optional[float] = None) -> List[dict]:
    """Fails each stale samtext operation (:func:`stale_operations`) with a message naming what happened and,
    with ``requeue``, queues it again. Each is claimed by a conditional update (only if still RUNNING), so two
    processes recovering at once requeue it once.

    Returns:
        ``[{"operation", "operator", "dataset", "requeued_as"}]``, one per operation recovered.
    """
    from fiftyone.operators.delegated import DelegatedOperationService
    from fiftyone.operators.executor import ExecutionResult, ExecutionRunState

    service = DelegatedOperationService()
    out = []
    for op in stale_operations(dataset_name, stale_after):
        silent = (datetime.utcnow() - _utc(op.updated_at or op.started_at)).total_seconds()
        again_ok = requeue and op.rerunnable and not getattr(op, "parent_id", None)  # pipeline children: FiftyOne's
        message = ("samtext: the worker running this operation stopped answering (no heartbeat for %d s: killed, out "
                   "of memory, or its machine lost)%s" % (silent, "; queued again" if again_ok else ""))
        if service.set_failed(op.id, result=ExecutionResult(error=message),
                              required_state=ExecutionRunState.RUNNING) is None:
            continue  # another process got there first, or it finished after all
        try:
            again = service.rerun_operation(op.id) if again_ok else None
        except Exception:  # failed with its message already; one operation must not stop the others' recovery
            logger.exception("samtext: could not queue operation %s again", op.id)
            again = None
        logger.warning("%s (operation %s, %s)", message, op.id, op.operator)
        out.append(dict(operation=str(op.id), operator=op.operator, dataset=op.dataset_id and str(op.dataset_id),
                        requeued_as=str(again.id) if again is not None else None))
    return out


def recover_quietly(dataset_name: Optional[str] = None) -> None:
    """:func:`recover_stale_operations` as bookkeeping, for a run or a queueing that must not stop over another
    run's operations: a failure is logged, not raised."""
    try:
        recover_stale_operations(dataset_name)
    except Exception:
        logger.exception("samtext: could not check for stale delegated operations")
