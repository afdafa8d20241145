"""The etcd `KV` service (Range, Put, DeleteRange, Txn, Compact): decode, run, encode."""

from __future__ import annotations

from typing import Any

from pdcore.adapters.grpc.errors import Ctx
from pdcore.adapters.grpc.etcd_common import EtcdServicer, etcd_unary
from pdcore.domain.etcd_ops import (
    Compare,
    CompareTarget,
    DeleteOp,
    DeleteResult,
    Op,
    OpResult,
    PutOp,
    PutResult,
    TxnOp,
    TxnResult,
)
from pdcore.domain.mvcc import KeyValue, RangeQuery, RangeResult, range_end
from pdcore.proto import etcdserverpb_pb2 as pb
from pdcore.proto import etcdserverpb_pb2_grpc, mvccpb_pb2


def kv_pb(kv: KeyValue, out: mvccpb_pb2.KeyValue | None = None) -> mvccpb_pb2.KeyValue:
    out = out if out is not None else mvccpb_pb2.KeyValue()
    out.key = kv.key
    out.create_revision = kv.create_revision
    out.mod_revision = kv.mod_revision
    out.version = kv.version
    out.value = kv.value
    out.lease = kv.lease
    return out


def range_query(r: pb.RangeRequest) -> RangeQuery:
    return RangeQuery(
        key=r.key,
        end=range_end(r.range_end),
        revision=r.revision,
        limit=r.limit,
        sort_order=r.sort_order,
        sort_target=r.sort_target,
        keys_only=r.keys_only,
        count_only=r.count_only,
        min_mod_revision=r.min_mod_revision,
        max_mod_revision=r.max_mod_revision,
        min_create_revision=r.min_create_revision,
        max_create_revision=r.max_create_revision,
    )


def put_op(r: pb.PutRequest) -> PutOp:
    return PutOp(r.key, r.value, r.lease, r.prev_kv, r.ignore_value, r.ignore_lease)


def delete_op(r: pb.DeleteRangeRequest) -> DeleteOp:
    return DeleteOp(r.key, range_end(r.range_end), r.prev_kv)


_OPERAND = {
    CompareTarget.VERSION: "version",
    CompareTarget.CREATE: "create_revision",
    CompareTarget.MOD: "mod_revision",
    CompareTarget.VALUE: "value",
    CompareTarget.LEASE: "lease",
}


def compare(c: pb.Compare) -> Compare:
    field = _OPERAND.get(c.target)  # type: ignore[call-overload]
    operand = getattr(c, field) if field else 0
    return Compare(c.key, c.target, c.result, operand, range_end(c.range_end))


def txn_op(r: pb.TxnRequest) -> TxnOp:
    return TxnOp(
        tuple(compare(c) for c in r.compare),
        tuple(request_op(o) for o in r.success),
        tuple(request_op(o) for o in r.failure),
    )


def request_op(o: pb.RequestOp) -> Op:
    which = o.WhichOneof("request")
    if which == "request_range":
        return range_query(o.request_range)
    if which == "request_put":
        return put_op(o.request_put)
    if which == "request_delete_range":
        return delete_op(o.request_delete_range)
    if which == "request_txn":
        return txn_op(o.request_txn)
    return TxnOp()  # an empty op: etcd answers it with an empty response


def fill_range(out: pb.RangeResponse, res: RangeResult) -> None:
    out.count = res.count
    out.more = res.more
    for kv in res.kvs:
        kv_pb(kv, out.kvs.add())


def fill_put(out: pb.PutResponse, res: PutResult) -> None:
    if res.prev_kv is not None:
        kv_pb(res.prev_kv, out.prev_kv)


def fill_delete(out: pb.DeleteRangeResponse, res: DeleteResult) -> None:
    out.deleted = res.deleted
    for kv in res.prev_kvs:
        kv_pb(kv, out.prev_kvs.add())


def fill_txn(out: pb.TxnResponse, res: TxnResult, header: Any) -> None:
    out.header.CopyFrom(header)
    out.succeeded = res.succeeded
    for sub in res.responses:
        op = out.responses.add()
        fill_result(op, sub, header)


def fill_result(op: pb.ResponseOp, res: OpResult, header: Any) -> None:
    if isinstance(res, RangeResult):
        op.response_range.header.CopyFrom(header)
        fill_range(op.response_range, res)
    elif isinstance(res, PutResult):
        op.response_put.header.CopyFrom(header)
        fill_put(op.response_put, res)
    elif isinstance(res, DeleteResult):
        op.response_delete_range.header.CopyFrom(header)
        fill_delete(op.response_delete_range, res)
    else:
        fill_txn(op.response_txn, res, header)


class KvService(EtcdServicer, etcdserverpb_pb2_grpc.KVServicer):  # type: ignore[misc]
    @etcd_unary
    async def Range(self, request: pb.RangeRequest, context: Ctx) -> pb.RangeResponse:
        res = self.etcd.range(range_query(request))
        resp = pb.RangeResponse()
        self.header(resp.header)
        fill_range(resp, res)
        return resp

    @etcd_unary
    async def Put(self, request: pb.PutRequest, context: Ctx) -> pb.PutResponse:
        res, rev = await self.etcd.write(put_op(request))
        resp = pb.PutResponse()
        self.header(resp.header, rev)
        assert isinstance(res, PutResult)
        fill_put(resp, res)
        return resp

    @etcd_unary
    async def DeleteRange(
        self, request: pb.DeleteRangeRequest, context: Ctx
    ) -> pb.DeleteRangeResponse:
        res, rev = await self.etcd.write(delete_op(request))
        resp = pb.DeleteRangeResponse()
        self.header(resp.header, rev)
        assert isinstance(res, DeleteResult)
        fill_delete(resp, res)
        return resp

    @etcd_unary
    async def Txn(self, request: pb.TxnRequest, context: Ctx) -> pb.TxnResponse:
        res, rev = await self.etcd.write(txn_op(request))
        header = pb.ResponseHeader()
        self.header(header, rev)
        resp = pb.TxnResponse()
        assert isinstance(res, TxnResult)
        fill_txn(resp, res, header)
        return resp

    @etcd_unary
    async def Compact(self, request: pb.CompactionRequest, context: Ctx) -> pb.CompactionResponse:
        rev = await self.etcd.compact(request.revision)
        resp = pb.CompactionResponse()
        self.header(resp.header, rev)
        return resp
