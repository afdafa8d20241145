"""KubeEtcdStore on the real API server, under EtcdService: segments roll over at their
size limit, compaction removes records and empty segments, a reload sees the same
store, the space limit is a clear error, and a second writer is fenced out."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from pdcore.adapters.kube.client import KubeClient
from pdcore.adapters.kube.etcd_store import KubeEtcdStore
from pdcore.adapters.storage.memory import MemoryStore
from pdcore.domain.errors import NotLeader
from pdcore.domain.etcd_errors import EtcdError, EtcdErrorKind
from pdcore.domain.etcd_ops import PutOp
from pdcore.domain.mvcc import RangeQuery
from pdcore.service.etcd import EtcdService
from pdcore.service.node import Member, PdNode
from tests.support.clocks import SteppedClock

VALUE = b"v" * 1000


@pytest.fixture
async def node() -> AsyncIterator[PdNode]:
    n = PdNode(
        meta=MemoryStore(),
        region_storage=None,
        clock=SteppedClock(),
        member=Member("pd", 7, ("http://127.0.0.1:2379",)),
    )
    await n.start()
    yield n
    await n.stop()


async def service(node: PdNode, store: KubeEtcdStore) -> EtcdService:
    svc = EtcdService(node, store, node.clock)
    await svc.start()
    return svc


async def segments(kube: KubeClient, ns: str) -> list[str]:
    cms = await kube.list(
        f"/api/v1/namespaces/{ns}/configmaps",
        label_selector="kubepd.io/cluster=c,kubepd.io/etcd=segment",
    )
    return sorted(cm["metadata"]["name"] for cm in cms)


async def record_count(kube: KubeClient, ns: str) -> int:
    cms = await kube.list(
        f"/api/v1/namespaces/{ns}/configmaps",
        label_selector="kubepd.io/cluster=c,kubepd.io/etcd=segment",
    )
    return sum(1 for cm in cms for name in cm.get("data") or {} if name.startswith("r"))


async def test_segments_compaction_reload_and_limits(
    kube: KubeClient, namespace: str, node: PdNode
) -> None:
    store = KubeEtcdStore(
        kube, namespace, "c", write_bytes=12 * 1024, segment_bytes=12 * 1024, max_segments=4
    )
    svc = await service(node, store)
    try:
        for i in range(20):  # the segments roll over
            await svc.write(PutOp(b"/k/%02d" % (i % 5), VALUE + b"%d" % i))
        names = await segments(kube, namespace)
        assert len(names) == 3, names  # 21 records of ~1.4 KB (base64), 8 a segment
        rev = svc.mvcc.revision
        with pytest.raises(EtcdError) as e:  # one write larger than a segment
            await svc.write(PutOp(b"/big", b"x" * 13000))
        assert e.value.kind == EtcdErrorKind.REQUEST_TOO_LARGE and "12 KiB" in str(e.value)
        assert svc.mvcc.revision == rev
        await svc.compact(rev)  # only each key's latest record stays
        assert await record_count(kube, namespace) == 6  # five keys and alloc_id
        for i in range(20, 40):  # fill up to the space limit
            try:
                await svc.write(PutOp(b"/k/%02d" % (i % 5), VALUE + b"%d" % i))
            except EtcdError as err:
                assert err.kind == EtcdErrorKind.NO_SPACE and "at most 4 segments" in str(err)
                break
        else:
            raise AssertionError("the space limit was never reached")
        full_rev = svc.mvcc.revision
        full = await segments(kube, namespace)
        assert len(full) == 4
    finally:
        await svc.stop()

    again = await service(node, KubeEtcdStore(kube, namespace, "c"))
    stale = await service(node, KubeEtcdStore(kube, namespace, "c"))
    try:
        assert again.mvcc.revision == full_rev and again.mvcc.compact_revision == rev
        want = svc.range(RangeQuery(b"/k/", b"/k0"))
        assert again.range(RangeQuery(b"/k/", b"/k0")) == want
        with pytest.raises(EtcdError) as e:
            again.range(RangeQuery(b"/k/00", revision=rev - 1))
        assert e.value.kind == EtcdErrorKind.COMPACTED
        await again.compact(again.mvcc.revision)  # frees space: emptied segments go
        assert len(await segments(kube, namespace)) < len(full)
        assert await record_count(kube, namespace) == 6
        await again.write(PutOp(b"/k/00", b"new"))
        # `stale` loaded the same state but another writer moved on: it is fenced out.
        with pytest.raises(NotLeader):
            await stale.write(PutOp(b"/k/01", b"from a deposed leader"))
        assert stale.mvcc.revision == full_rev
        reread = await service(node, KubeEtcdStore(kube, namespace, "c"))
        assert reread.mvcc.revision == full_rev + 1
        assert [kv.value for kv in reread.range(RangeQuery(b"/k/01")).kvs] != [
            b"from a deposed leader"
        ]
        await reread.stop()
    finally:
        await again.stop()
        await stale.stop()
