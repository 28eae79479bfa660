"""Wiring a :class:`~hostnode.subscriptions.manager.SubscriptionManager` to a Database.

:func:`writer_view` is the read view the manager's methods need on the writer thread;
:func:`attach` registers an ``on_commit`` callback that evaluates each commit and hands the
result to the protocol layer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from hostnode.subscriptions.manager import CommitUpdates, SubscriptionManager

if TYPE_CHECKING:
    from hostnode.database import Database, ReducerOutcome


@contextmanager
def writer_view(db: Database) -> Iterator[Any]:
    """The database's latest committed state, including commits not yet checkpointed.

    Writer thread only, between transactions (it is a ``MutTx`` that is always rolled back).
    Subscribe requests evaluated here are consistent with the commit updates: every commit
    already delivered is in the rows, none still to come is.
    """
    tx = db.datastore.begin_mut()
    try:
        yield tx
    finally:
        tx.rollback()


Deliver = Callable[["ReducerOutcome", CommitUpdates | None], None]
#: The result of a commit no query reads, shared by all of them (``deliver`` only reads it).
_NO_UPDATES = CommitUpdates()


def attach(manager: SubscriptionManager, db: Database, deliver: Deliver) -> Callable[[ReducerOutcome], None]:
    """Evaluate every commit of ``db`` for ``manager``'s subscribers and pass the result to
    ``deliver(outcome, updates)`` (``updates`` None when the transaction did not commit: the
    caller's failure notice is all there is to send). Returns the registered callback."""

    def on_commit(outcome: ReducerOutcome) -> None:
        if not outcome.committed or outcome.txdata is None:
            deliver(outcome, None)
            return
        if not manager.affected_by(outcome.txdata):
            deliver(outcome, _NO_UPDATES)  # the hot path with nobody watching: no read view
            return
        with writer_view(db) as tx:
            updates = manager.on_commit(tx, outcome.txdata)
        deliver(outcome, updates)

    db.on_commit.append(on_commit)
    return on_commit
