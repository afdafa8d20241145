from pdcore.proto import metapb_pb2 as _metapb_pb2
from pdcore.proto import pdpb_pb2 as _pdpb_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetRegionSizesRequest(_message.Message):
    __slots__ = ("cluster_id",)
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    cluster_id: int
    def __init__(self, cluster_id: _Optional[int] = ...) -> None: ...

class RegionSize(_message.Message):
    __slots__ = ("region_id", "approximate_size_mib", "approximate_keys")
    REGION_ID_FIELD_NUMBER: _ClassVar[int]
    APPROXIMATE_SIZE_MIB_FIELD_NUMBER: _ClassVar[int]
    APPROXIMATE_KEYS_FIELD_NUMBER: _ClassVar[int]
    region_id: int
    approximate_size_mib: int
    approximate_keys: int
    def __init__(self, region_id: _Optional[int] = ..., approximate_size_mib: _Optional[int] = ..., approximate_keys: _Optional[int] = ...) -> None: ...

class GetRegionSizesResponse(_message.Message):
    __slots__ = ("regions",)
    REGIONS_FIELD_NUMBER: _ClassVar[int]
    regions: _containers.RepeatedCompositeFieldContainer[RegionSize]
    def __init__(self, regions: _Optional[_Iterable[_Union[RegionSize, _Mapping]]] = ...) -> None: ...

class GetStoresRequest(_message.Message):
    __slots__ = ("cluster_id",)
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    cluster_id: int
    def __init__(self, cluster_id: _Optional[int] = ...) -> None: ...

class StoreInfo(_message.Message):
    __slots__ = ("store", "stats")
    STORE_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    store: _metapb_pb2.Store
    stats: _pdpb_pb2.StoreStats
    def __init__(self, store: _Optional[_Union[_metapb_pb2.Store, _Mapping]] = ..., stats: _Optional[_Union[_pdpb_pb2.StoreStats, _Mapping]] = ...) -> None: ...

class GetStoresResponse(_message.Message):
    __slots__ = ("stores",)
    STORES_FIELD_NUMBER: _ClassVar[int]
    stores: _containers.RepeatedCompositeFieldContainer[StoreInfo]
    def __init__(self, stores: _Optional[_Iterable[_Union[StoreInfo, _Mapping]]] = ...) -> None: ...

class SchedulerTerm(_message.Message):
    __slots__ = ("holder", "term")
    HOLDER_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    holder: str
    term: int
    def __init__(self, holder: _Optional[str] = ..., term: _Optional[int] = ...) -> None: ...

class DeliverStepsRequest(_message.Message):
    __slots__ = ("cluster_id", "scheduler", "store_id", "commands")
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    SCHEDULER_FIELD_NUMBER: _ClassVar[int]
    STORE_ID_FIELD_NUMBER: _ClassVar[int]
    COMMANDS_FIELD_NUMBER: _ClassVar[int]
    cluster_id: int
    scheduler: SchedulerTerm
    store_id: int
    commands: _containers.RepeatedCompositeFieldContainer[_pdpb_pb2.RegionHeartbeatResponse]
    def __init__(self, cluster_id: _Optional[int] = ..., scheduler: _Optional[_Union[SchedulerTerm, _Mapping]] = ..., store_id: _Optional[int] = ..., commands: _Optional[_Iterable[_Union[_pdpb_pb2.RegionHeartbeatResponse, _Mapping]]] = ...) -> None: ...

class DeliverStepsResponse(_message.Message):
    __slots__ = ("delivered",)
    DELIVERED_FIELD_NUMBER: _ClassVar[int]
    delivered: int
    def __init__(self, delivered: _Optional[int] = ...) -> None: ...

class Proposal(_message.Message):
    __slots__ = ("kind", "region_id", "conf_ver", "version", "source_store", "target_store", "reason")
    KIND_FIELD_NUMBER: _ClassVar[int]
    REGION_ID_FIELD_NUMBER: _ClassVar[int]
    CONF_VER_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_STORE_FIELD_NUMBER: _ClassVar[int]
    TARGET_STORE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    kind: int
    region_id: int
    conf_ver: int
    version: int
    source_store: int
    target_store: int
    reason: str
    def __init__(self, kind: _Optional[int] = ..., region_id: _Optional[int] = ..., conf_ver: _Optional[int] = ..., version: _Optional[int] = ..., source_store: _Optional[int] = ..., target_store: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class ProposeRequest(_message.Message):
    __slots__ = ("cluster_id", "policy", "store_id", "proposals")
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    STORE_ID_FIELD_NUMBER: _ClassVar[int]
    PROPOSALS_FIELD_NUMBER: _ClassVar[int]
    cluster_id: int
    policy: str
    store_id: int
    proposals: _containers.RepeatedCompositeFieldContainer[Proposal]
    def __init__(self, cluster_id: _Optional[int] = ..., policy: _Optional[str] = ..., store_id: _Optional[int] = ..., proposals: _Optional[_Iterable[_Union[Proposal, _Mapping]]] = ...) -> None: ...

class ProposalVerdict(_message.Message):
    __slots__ = ("accepted", "reason")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    accepted: bool
    reason: str
    def __init__(self, accepted: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...

class ProposeResponse(_message.Message):
    __slots__ = ("verdicts",)
    VERDICTS_FIELD_NUMBER: _ClassVar[int]
    verdicts: _containers.RepeatedCompositeFieldContainer[ProposalVerdict]
    def __init__(self, verdicts: _Optional[_Iterable[_Union[ProposalVerdict, _Mapping]]] = ...) -> None: ...
