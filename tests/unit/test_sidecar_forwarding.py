"""The sidecar's forwarded RPCs are declared in its class body (not patched in): a
follower sends each to the pd-leader unchanged, the pd-leader answers it itself."""

from __future__ import annotations

from typing import Any

from pdcore.adapters.grpc.pd_service import PdService
from pdcore.adapters.sidecar.service import FORWARDED_UNARY, Forwarded, SidecarService
from pdcore.proto import pdpb_pb2


def test_every_forwarded_rpc_is_declared_and_is_a_pd_rpc() -> None:
    assert len(FORWARDED_UNARY) == 23
    for name in FORWARDED_UNARY:
        assert isinstance(vars(SidecarService)[name], Forwarded), name
        assert callable(getattr(PdService, name)), name
    assert "StoreHeartbeat" not in FORWARDED_UNARY  # it also notes local stores


class Link:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    async def forward(self, name: str, request: Any, metadata: Any = ()) -> Any:
        self.calls.append((name, request))
        return pdpb_pb2.AllocIDResponse(id=42)


async def test_a_follower_forwards_a_declared_rpc_to_the_pd_leader() -> None:
    svc = SidecarService.__new__(SidecarService)
    link = Link()
    svc.link, svc.is_leader, svc.pod = link, (lambda: False), "pod-0"  # type: ignore[assignment]
    req = pdpb_pb2.AllocIDRequest(count=3)
    resp = await svc.AllocID(req, None)  # type: ignore[arg-type]
    assert resp.id == 42 and link.calls == [("AllocID", req)]
