"""The control plane's view of the host nodes: a mirror of ``/nodes/`` and what changed in it.

Each live host node keeps ``/nodes/<id>`` (:class:`~clustermeta.records.NodeInfo`) under its
lease. The key disappears when the lease does (the node died, hung, or lost etcd), and a node
restarted under the same id writes a new ``incarnation``. :class:`NodeDirectory` follows the
prefix (:class:`~clustermeta.mirror.PrefixMirror`: resumed after errors from the last revision
+ 1, re-read after a compaction) and tells its listeners about every node that appeared
(``UP``), vanished (``GONE``) or came back as a new process (``RESTARTED``).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass

from clustermeta.metastore import MetaStore
from clustermeta.mirror import Change, PrefixMirror
from clustermeta.records import NODES_PREFIX, NodeInfo, node_of_key

__all__ = ["NodeDirectory", "NodeEvent", "NodeEventKind"]

log = logging.getLogger(__name__)


class NodeEventKind(enum.Enum):
    """What happened to a node."""

    UP = "up"
    GONE = "gone"
    #: Same id, new process: its old leaderships are void (docs/cluster.md).
    RESTARTED = "restarted"


@dataclass(frozen=True)
class NodeEvent:
    """A change in the set of live nodes; ``info`` is the node as it now is (as it was for GONE)."""

    kind: NodeEventKind
    node_id: str
    info: NodeInfo


class NodeDirectory:
    """Live host nodes, their addresses and incarnations; ``subscribe`` to hear of changes."""

    def __init__(self, store: MetaStore) -> None:
        self._nodes: dict[str, NodeInfo] = {}
        self._listeners: list[Callable[[NodeEvent], None]] = []
        self._mirror = PrefixMirror(store, NODES_PREFIX, on_change=self._changed)

    async def start(self) -> None:
        """Read the live nodes, then follow them."""
        await self._mirror.start()
        for kv in self._mirror.items.values():
            info = _decode(kv.key, kv.value)
            if info is not None:
                self._nodes[info.id] = info

    async def stop(self) -> None:
        """Stop following."""
        await self._mirror.stop()

    def subscribe(self, listener: Callable[[NodeEvent], None]) -> None:
        """Call ``listener`` (on the loop, must not block) for every node event from now on."""
        self._listeners.append(listener)

    def live(self) -> dict[str, NodeInfo]:
        """Every live node by id."""
        return dict(self._nodes)

    def is_live(self, node_id: str) -> bool:
        """Whether ``node_id`` holds a lease now."""
        return node_id in self._nodes

    def get(self, node_id: str) -> NodeInfo | None:
        """The live node, or None."""
        return self._nodes.get(node_id)

    def address(self, node_id: str) -> str:
        """The node's address, empty when it is not live."""
        info = self._nodes.get(node_id)
        return "" if info is None else info.address

    @property
    def revision(self) -> int:
        """The store revision the directory reflects."""
        return self._mirror.revision

    def _changed(self, changes: list[Change]) -> None:
        for change in changes:
            node_id = node_of_key(change.key)
            before = self._nodes.get(node_id)
            after = None if change.new is None else _decode(change.key, change.new.value)
            if after is None:
                if before is not None:
                    del self._nodes[node_id]
                    self._emit(NodeEvent(NodeEventKind.GONE, node_id, before))
                continue
            self._nodes[node_id] = after
            if before is None:
                self._emit(NodeEvent(NodeEventKind.UP, node_id, after))
            elif before.incarnation != after.incarnation:
                self._emit(NodeEvent(NodeEventKind.RESTARTED, node_id, after))

    def _emit(self, event: NodeEvent) -> None:
        log.info(
            "node %s node=%s address=%s incarnation=%s",
            event.kind.value, event.node_id, event.info.address, event.info.incarnation,
        )
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                log.exception("node directory listener failed")


def _decode(key: bytes, value: bytes) -> NodeInfo | None:
    try:
        info = NodeInfo.from_json(value)
    except (ValueError, KeyError, TypeError) as e:
        log.warning("ignoring malformed node record %s: %s", key.decode(errors="replace"), e)
        return None
    if info.id != node_of_key(key):
        log.warning("ignoring node record %s naming node %r", key.decode(errors="replace"), info.id)
        return None
    return info

