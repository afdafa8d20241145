from pdcore.proto import metapb_pb2 as _metapb_pb2
from pdcore.proto import eraftpb_pb2 as _eraftpb_pb2
from pdcore.proto import replication_modepb_pb2 as _replication_modepb_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ErrorType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OK: _ClassVar[ErrorType]
    UNKNOWN: _ClassVar[ErrorType]
    NOT_BOOTSTRAPPED: _ClassVar[ErrorType]
    STORE_TOMBSTONE: _ClassVar[ErrorType]
    ALREADY_BOOTSTRAPPED: _ClassVar[ErrorType]
    INCOMPATIBLE_VERSION: _ClassVar[ErrorType]
    REGION_NOT_FOUND: _ClassVar[ErrorType]
    GLOBAL_CONFIG_NOT_FOUND: _ClassVar[ErrorType]
    DUPLICATED_ENTRY: _ClassVar[ErrorType]
    ENTRY_NOT_FOUND: _ClassVar[ErrorType]
    INVALID_VALUE: _ClassVar[ErrorType]
    DATA_COMPACTED: _ClassVar[ErrorType]
    REGIONS_NOT_CONTAIN_ALL_KEY_RANGE: _ClassVar[ErrorType]

class ServiceMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    UNKNOWN_SVC_MODE: _ClassVar[ServiceMode]
    PD_SVC_MODE: _ClassVar[ServiceMode]
    API_SVC_MODE: _ClassVar[ServiceMode]

class EventType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PUT: _ClassVar[EventType]
    DELETE: _ClassVar[EventType]

class CheckPolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SCAN: _ClassVar[CheckPolicy]
    APPROXIMATE: _ClassVar[CheckPolicy]
    USEKEY: _ClassVar[CheckPolicy]

class SplitReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ADMIN: _ClassVar[SplitReason]
    SIZE: _ClassVar[SplitReason]
    LOAD: _ClassVar[SplitReason]

class ControlGrpcEvent(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PAUSE: _ClassVar[ControlGrpcEvent]
    RESUME: _ClassVar[ControlGrpcEvent]

class OperatorStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SUCCESS: _ClassVar[OperatorStatus]
    TIMEOUT: _ClassVar[OperatorStatus]
    CANCEL: _ClassVar[OperatorStatus]
    REPLACE: _ClassVar[OperatorStatus]
    RUNNING: _ClassVar[OperatorStatus]

class QueryKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    Others: _ClassVar[QueryKind]
    GC: _ClassVar[QueryKind]
    Get: _ClassVar[QueryKind]
    Scan: _ClassVar[QueryKind]
    Coprocessor: _ClassVar[QueryKind]
    Delete: _ClassVar[QueryKind]
    DeleteRange: _ClassVar[QueryKind]
    Put: _ClassVar[QueryKind]
    Prewrite: _ClassVar[QueryKind]
    AcquirePessimisticLock: _ClassVar[QueryKind]
    Commit: _ClassVar[QueryKind]
    Rollback: _ClassVar[QueryKind]
OK: ErrorType
UNKNOWN: ErrorType
NOT_BOOTSTRAPPED: ErrorType
STORE_TOMBSTONE: ErrorType
ALREADY_BOOTSTRAPPED: ErrorType
INCOMPATIBLE_VERSION: ErrorType
REGION_NOT_FOUND: ErrorType
GLOBAL_CONFIG_NOT_FOUND: ErrorType
DUPLICATED_ENTRY: ErrorType
ENTRY_NOT_FOUND: ErrorType
INVALID_VALUE: ErrorType
DATA_COMPACTED: ErrorType
REGIONS_NOT_CONTAIN_ALL_KEY_RANGE: ErrorType
UNKNOWN_SVC_MODE: ServiceMode
PD_SVC_MODE: ServiceMode
API_SVC_MODE: ServiceMode
PUT: EventType
DELETE: EventType
SCAN: CheckPolicy
APPROXIMATE: CheckPolicy
USEKEY: CheckPolicy
ADMIN: SplitReason
SIZE: SplitReason
LOAD: SplitReason
PAUSE: ControlGrpcEvent
RESUME: ControlGrpcEvent
SUCCESS: OperatorStatus
TIMEOUT: OperatorStatus
CANCEL: OperatorStatus
REPLACE: OperatorStatus
RUNNING: OperatorStatus
Others: QueryKind
GC: QueryKind
Get: QueryKind
Scan: QueryKind
Coprocessor: QueryKind
Delete: QueryKind
DeleteRange: QueryKind
Put: QueryKind
Prewrite: QueryKind
AcquirePessimisticLock: QueryKind
Commit: QueryKind
Rollback: QueryKind

class RequestHeader(_message.Message):
    __slots__ = ("cluster_id", "sender_id", "caller_id", "caller_component")
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    SENDER_ID_FIELD_NUMBER: _ClassVar[int]
    CALLER_ID_FIELD_NUMBER: _ClassVar[int]
    CALLER_COMPONENT_FIELD_NUMBER: _ClassVar[int]
    cluster_id: int
    sender_id: int
    caller_id: str
    caller_component: str
    def __init__(self, cluster_id: _Optional[int] = ..., sender_id: _Optional[int] = ..., caller_id: _Optional[str] = ..., caller_component: _Optional[str] = ...) -> None: ...

class ResponseHeader(_message.Message):
    __slots__ = ("cluster_id", "error")
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    cluster_id: int
    error: Error
    def __init__(self, cluster_id: _Optional[int] = ..., error: _Optional[_Union[Error, _Mapping]] = ...) -> None: ...

class Error(_message.Message):
    __slots__ = ("type", "message")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    type: ErrorType
    message: str
    def __init__(self, type: _Optional[_Union[ErrorType, str]] = ..., message: _Optional[str] = ...) -> None: ...

class Member(_message.Message):
    __slots__ = ("name", "member_id", "peer_urls", "client_urls", "leader_priority", "deploy_path", "binary_version", "git_hash", "dc_location")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MEMBER_ID_FIELD_NUMBER: _ClassVar[int]
    PEER_URLS_FIELD_NUMBER: _ClassVar[int]
    CLIENT_URLS_FIELD_NUMBER: _ClassVar[int]
    LEADER_PRIORITY_FIELD_NUMBER: _ClassVar[int]
    DEPLOY_PATH_FIELD_NUMBER: _ClassVar[int]
    BINARY_VERSION_FIELD_NUMBER: _ClassVar[int]
    GIT_HASH_FIELD_NUMBER: _ClassVar[int]
    DC_LOCATION_FIELD_NUMBER: _ClassVar[int]
    name: str
    member_id: int
    peer_urls: _containers.RepeatedScalarFieldContainer[str]
    client_urls: _containers.RepeatedScalarFieldContainer[str]
    leader_priority: int
    deploy_path: str
    binary_version: str
    git_hash: str
    dc_location: str
    def __init__(self, name: _Optional[str] = ..., member_id: _Optional[int] = ..., peer_urls: _Optional[_Iterable[str]] = ..., client_urls: _Optional[_Iterable[str]] = ..., leader_priority: _Optional[int] = ..., deploy_path: _Optional[str] = ..., binary_version: _Optional[str] = ..., git_hash: _Optional[str] = ..., dc_location: _Optional[str] = ...) -> None: ...

class GetMembersRequest(_message.Message):
    __slots__ = ("header",)
    HEADER_FIELD_NUMBER: _ClassVar[int]
    header: RequestHeader
    def __init__(self, header: _Optional[_Union[RequestHeader, _Mapping]] = ...) -> None: ...

class GetMembersResponse(_message.Message):
    __slots__ = ("header", "members", "leader", "etcd_leader", "tso_allocator_leaders")
    class TsoAllocatorLeadersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Member
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Member, _Mapping]] = ...) -> None: ...
    HEADER_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    LEADER_FIELD_NUMBER: _ClassVar[int]
    ETCD_LEADER_FIELD_NUMBER: _ClassVar[int]
    TSO_ALLOCATOR_LEADERS_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    members: _containers.RepeatedCompositeFieldContainer[Member]
    leader: Member
    etcd_leader: Member
    tso_allocator_leaders: _containers.MessageMap[str, Member]
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., members: _Optional[_Iterable[_Union[Member, _Mapping]]] = ..., leader: _Optional[_Union[Member, _Mapping]] = ..., etcd_leader: _Optional[_Union[Member, _Mapping]] = ..., tso_allocator_leaders: _Optional[_Mapping[str, Member]] = ...) -> None: ...

class GetClusterInfoRequest(_message.Message):
    __slots__ = ("header",)
    HEADER_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ...) -> None: ...

class GetClusterInfoResponse(_message.Message):
    __slots__ = ("header", "serviceModes", "tso_urls")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    SERVICEMODES_FIELD_NUMBER: _ClassVar[int]
    TSO_URLS_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    serviceModes: _containers.RepeatedScalarFieldContainer[ServiceMode]
    tso_urls: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., serviceModes: _Optional[_Iterable[_Union[ServiceMode, str]]] = ..., tso_urls: _Optional[_Iterable[str]] = ...) -> None: ...

class TsoRequest(_message.Message):
    __slots__ = ("header", "count", "dc_location")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    DC_LOCATION_FIELD_NUMBER: _ClassVar[int]
    header: RequestHeader
    count: int
    dc_location: str
    def __init__(self, header: _Optional[_Union[RequestHeader, _Mapping]] = ..., count: _Optional[int] = ..., dc_location: _Optional[str] = ...) -> None: ...

class Timestamp(_message.Message):
    __slots__ = ("physical", "logical", "suffix_bits")
    PHYSICAL_FIELD_NUMBER: _ClassVar[int]
    LOGICAL_FIELD_NUMBER: _ClassVar[int]
    SUFFIX_BITS_FIELD_NUMBER: _ClassVar[int]
    physical: int
    logical: int
    suffix_bits: int
    def __init__(self, physical: _Optional[int] = ..., logical: _Optional[int] = ..., suffix_bits: _Optional[int] = ...) -> None: ...

class TsoResponse(_message.Message):
    __slots__ = ("header", "count", "timestamp")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    count: int
    timestamp: Timestamp
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., count: _Optional[int] = ..., timestamp: _Optional[_Union[Timestamp, _Mapping]] = ...) -> None: ...

class AllocIDRequest(_message.Message):
    __slots__ = ("header", "count")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    header: RequestHeader
    count: int
    def __init__(self, header: _Optional[_Union[RequestHeader, _Mapping]] = ..., count: _Optional[int] = ...) -> None: ...

class AllocIDResponse(_message.Message):
    __slots__ = ("header", "id", "count")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    id: int
    count: int
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., id: _Optional[int] = ..., count: _Optional[int] = ...) -> None: ...

class GetMinTSRequest(_message.Message):
    __slots__ = ("header",)
    HEADER_FIELD_NUMBER: _ClassVar[int]
    header: RequestHeader
    def __init__(self, header: _Optional[_Union[RequestHeader, _Mapping]] = ...) -> None: ...

class GetMinTSResponse(_message.Message):
    __slots__ = ("header", "timestamp")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    timestamp: Timestamp
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., timestamp: _Optional[_Union[Timestamp, _Mapping]] = ...) -> None: ...

class SyncMaxTSRequest(_message.Message):
    __slots__ = ("header", "max_ts", "skip_check")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    MAX_TS_FIELD_NUMBER: _ClassVar[int]
    SKIP_CHECK_FIELD_NUMBER: _ClassVar[int]
    header: RequestHeader
    max_ts: Timestamp
    skip_check: bool
    def __init__(self, header: _Optional[_Union[RequestHeader, _Mapping]] = ..., max_ts: _Optional[_Union[Timestamp, _Mapping]] = ..., skip_check: _Optional[bool] = ...) -> None: ...

class SyncMaxTSResponse(_message.Message):
    __slots__ = ("header", "max_local_ts", "synced_dcs")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    MAX_LOCAL_TS_FIELD_NUMBER: _ClassVar[int]
    SYNCED_DCS_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    max_local_ts: Timestamp
    synced_dcs: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., max_local_ts: _Optional[_Union[Timestamp, _Mapping]] = ..., synced_dcs: _Optional[_Iterable[str]] = ...) -> None: ...

class GetDCLocationInfoRequest(_message.Message):
    __slots__ = ("header", "dc_location")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DC_LOCATION_FIELD_NUMBER: _ClassVar[int]
    header: RequestHeader
    dc_location: str
    def __init__(self, header: _Optional[_Union[RequestHeader, _Mapping]] = ..., dc_location: _Optional[str] = ...) -> None: ...

class GetDCLocationInfoResponse(_message.Message):
    __slots__ = ("header", "suffix", "max_ts")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    SUFFIX_FIELD_NUMBER: _ClassVar[int]
    MAX_TS_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    suffix: int
    max_ts: Timestamp
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., suffix: _Optional[int] = ..., max_ts: _Optional[_Union[Timestamp, _Mapping]] = ...) -> None: ...

class SetExternalTimestampRequest(_message.Message):
    __slots__ = ("header", "timestamp")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    header: RequestHeader
    timestamp: int
    def __init__(self, header: _Optional[_Union[RequestHeader, _Mapping]] = ..., timestamp: _Optional[int] = ...) -> None: ...

class SetExternalTimestampResponse(_message.Message):
    __slots__ = ("header",)
    HEADER_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ...) -> None: ...

class GetExternalTimestampRequest(_message.Message):
    __slots__ = ("header",)
    HEADER_FIELD_NUMBER: _ClassVar[int]
    header: RequestHeader
    def __init__(self, header: _Optional[_Union[RequestHeader, _Mapping]] = ...) -> None: ...

class GetExternalTimestampResponse(_message.Message):
    __slots__ = ("header", "timestamp")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    timestamp: int
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., timestamp: _Optional[int] = ...) -> None: ...

class BootstrapRequest(_message.Message):
    __slots__ = ("header", "store", "region")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    STORE_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    header: RequestHeader
    store: _metapb_pb2.Store
    region: _metapb_pb2.Region
    def __init__(self, header: _Optional[_Union[RequestHeader, _Mapping]] = ..., store: _Optional[_Union[_metapb_pb2.Store, _Mapping]] = ..., region: _Optional[_Union[_metapb_pb2.Region, _Mapping]] = ...) -> None: ...

class BootstrapResponse(_message.Message):
    __slots__ = ("header", "replication_status")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    REPLICATION_STATUS_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    replication_status: _replication_modepb_pb2.ReplicationStatus
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., replication_status: _Optional[_Union[_replication_modepb_pb2.ReplicationStatus, _Mapping]] = ...) -> None: ...

class IsBootstrappedRequest(_message.Message):
    __slots__ = ("header",)
    HEADER_FIELD_NUMBER: _ClassVar[int]
    header: RequestHeader
    def __init__(self, header: _Optional[_Union[RequestHeader, _Mapping]] = ...) -> None: ...

class IsBootstrappedResponse(_message.Message):
    __slots__ = ("header", "bootstrapped")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    BOOTSTRAPPED_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    bootstrapped: bool
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., bootstrapped: _Optional[bool] = ...) -> None: ...

class IsSnapshotRecoveringRequest(_message.Message):
    __slots__ = ("header",)
    HEADER_FIELD_NUMBER: _ClassVar[int]
    header: RequestHeader
    def __init__(self, header: _Optional[_Union[RequestHeader, _Mapping]] = ...) -> None: ...

class IsSnapshotRecoveringResponse(_message.Message):
    __slots__ = ("header", "marked")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    MARKED_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    marked: bool
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., marked: _Optional[bool] = ...) -> None: ...

class GetStoreRequest(_message.Message):
    __slots__ = ("header", "store_id")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    STORE_ID_FIELD_NUMBER: _ClassVar[int]
    header: RequestHeader
    store_id: int
    def __init__(self, header: _Optional[_Union[RequestHeader, _Mapping]] = ..., store_id: _Optional[int] = ...) -> None: ...

class GetStoreResponse(_message.Message):
    __slots__ = ("header", "store", "stats")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    STORE_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    store: _metapb_pb2.Store
    stats: StoreStats
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., store: _Optional[_Union[_metapb_pb2.Store, _Mapping]] = ..., stats: _Optional[_Union[StoreStats, _Mapping]] = ...) -> None: ...

class PutStoreRequest(_message.Message):
    __slots__ = ("header", "store")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    STORE_FIELD_NUMBER: _ClassVar[int]
    header: RequestHeader
    store: _metapb_pb2.Store
    def __init__(self, header: _Optional[_Union[RequestHeader, _Mapping]] = ..., store: _Optional[_Union[_metapb_pb2.Store, _Mapping]] = ...) -> None: ...

class PutStoreResponse(_message.Message):
    __slots__ = ("header", "replication_status")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    REPLICATION_STATUS_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    replication_status: _replication_modepb_pb2.ReplicationStatus
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., replication_status: _Optional[_Union[_replication_modepb_pb2.ReplicationStatus, _Mapping]] = ...) -> None: ...

class GetAllStoresRequest(_message.Message):
    __slots__ = ("header", "exclude_tombstone_stores")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_TOMBSTONE_STORES_FIELD_NUMBER: _ClassVar[int]
    header: RequestHeader
    exclude_tombstone_stores: bool
    def __init__(self, header: _Optional[_Union[RequestHeader, _Mapping]] = ..., exclude_tombstone_stores: _Optional[bool] = ...) -> None: ...

class GetAllStoresResponse(_message.Message):
    __slots__ = ("header", "stores")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    STORES_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    stores: _containers.RepeatedCompositeFieldContainer[_metapb_pb2.Store]
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., stores: _Optional[_Iterable[_Union[_metapb_pb2.Store, _Mapping]]] = ...) -> None: ...

class TimeInterval(_message.Message):
    __slots__ = ("start_timestamp", "end_timestamp")
    START_TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    END_TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    start_timestamp: int
    end_timestamp: int
    def __init__(self, start_timestamp: _Optional[int] = ..., end_timestamp: _Optional[int] = ...) -> None: ...

class RecordPair(_message.Message):
    __slots__ = ("key", "value")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    key: str
    value: int
    def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...

class QueryStats(_message.Message):
    __slots__ = ("GC", "Get", "Scan", "Coprocessor", "Delete", "DeleteRange", "Put", "Prewrite", "AcquirePessimisticLock", "Commit", "Rollback")
    GC_FIELD_NUMBER: _ClassVar[int]
    GET_FIELD_NUMBER: _ClassVar[int]
    SCAN_FIELD_NUMBER: _ClassVar[int]
    COPROCESSOR_FIELD_NUMBER: _ClassVar[int]
    DELETE_FIELD_NUMBER: _ClassVar[int]
    DELETERANGE_FIELD_NUMBER: _ClassVar[int]
    PUT_FIELD_NUMBER: _ClassVar[int]
    PREWRITE_FIELD_NUMBER: _ClassVar[int]
    ACQUIREPESSIMISTICLOCK_FIELD_NUMBER: _ClassVar[int]
    COMMIT_FIELD_NUMBER: _ClassVar[int]
    ROLLBACK_FIELD_NUMBER: _ClassVar[int]
    GC: int
    Get: int
    Scan: int
    Coprocessor: int
    Delete: int
    DeleteRange: int
    Put: int
    Prewrite: int
    AcquirePessimisticLock: int
    Commit: int
    Rollback: int
    def __init__(self, GC: _Optional[int] = ..., Get: _Optional[int] = ..., Scan: _Optional[int] = ..., Coprocessor: _Optional[int] = ..., Delete: _Optional[int] = ..., DeleteRange: _Optional[int] = ..., Put: _Optional[int] = ..., Prewrite: _Optional[int] = ..., AcquirePessimisticLock: _Optional[int] = ..., Commit: _Optional[int] = ..., Rollback: _Optional[int] = ...) -> None: ...

class CPUStats(_message.Message):
    __slots__ = ("UnifiedRead", "Scheduler")
    UNIFIEDREAD_FIELD_NUMBER: _ClassVar[int]
    SCHEDULER_FIELD_NUMBER: _ClassVar[int]
    UnifiedRead: int
    Scheduler: int
    def __init__(self, UnifiedRead: _Optional[int] = ..., Scheduler: _Optional[int] = ...) -> None: ...

class PeerStat(_message.Message):
    __slots__ = ("region_id", "read_keys", "read_bytes", "query_stats", "written_keys", "written_bytes", "cpu_stats")
    REGION_ID_FIELD_NUMBER: _ClassVar[int]
    READ_KEYS_FIELD_NUMBER: _ClassVar[int]
    READ_BYTES_FIELD_NUMBER: _ClassVar[int]
    QUERY_STATS_FIELD_NUMBER: _ClassVar[int]
    WRITTEN_KEYS_FIELD_NUMBER: _ClassVar[int]
    WRITTEN_BYTES_FIELD_NUMBER: _ClassVar[int]
    CPU_STATS_FIELD_NUMBER: _ClassVar[int]
    region_id: int
    read_keys: int
    read_bytes: int
    query_stats: QueryStats
    written_keys: int
    written_bytes: int
    cpu_stats: CPUStats
    def __init__(self, region_id: _Optional[int] = ..., read_keys: _Optional[int] = ..., read_bytes: _Optional[int] = ..., query_stats: _Optional[_Union[QueryStats, _Mapping]] = ..., written_keys: _Optional[int] = ..., written_bytes: _Optional[int] = ..., cpu_stats: _Optional[_Union[CPUStats, _Mapping]] = ...) -> None: ...

class SnapshotStat(_message.Message):
    __slots__ = ("region_id", "generate_duration_sec", "send_duration_sec", "total_duration_sec", "transport_size")
    REGION_ID_FIELD_NUMBER: _ClassVar[int]
    GENERATE_DURATION_SEC_FIELD_NUMBER: _ClassVar[int]
    SEND_DURATION_SEC_FIELD_NUMBER: _ClassVar[int]
    TOTAL_DURATION_SEC_FIELD_NUMBER: _ClassVar[int]
    TRANSPORT_SIZE_FIELD_NUMBER: _ClassVar[int]
    region_id: int
    generate_duration_sec: int
    send_duration_sec: int
    total_duration_sec: int
    transport_size: int
    def __init__(self, region_id: _Optional[int] = ..., generate_duration_sec: _Optional[int] = ..., send_duration_sec: _Optional[int] = ..., total_duration_sec: _Optional[int] = ..., transport_size: _Optional[int] = ...) -> None: ...

class DfsStatScope(_message.Message):
    __slots__ = ("is_global", "keyspace_id", "component")
    IS_GLOBAL_FIELD_NUMBER: _ClassVar[int]
    KEYSPACE_ID_FIELD_NUMBER: _ClassVar[int]
    COMPONENT_FIELD_NUMBER: _ClassVar[int]
    is_global: bool
    keyspace_id: int
    component: str
    def __init__(self, is_global: _Optional[bool] = ..., keyspace_id: _Optional[int] = ..., component: _Optional[str] = ...) -> None: ...

class DfsStatItem(_message.Message):
    __slots__ = ("scope", "written_bytes", "write_requests")
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    WRITTEN_BYTES_FIELD_NUMBER: _ClassVar[int]
    WRITE_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    scope: DfsStatScope
    written_bytes: int
    write_requests: int
    def __init__(self, scope: _Optional[_Union[DfsStatScope, _Mapping]] = ..., written_bytes: _Optional[int] = ..., write_requests: _Optional[int] = ...) -> None: ...

class SlowTrend(_message.Message):
    __slots__ = ("cause_value", "cause_rate", "result_value", "result_rate")
    CAUSE_VALUE_FIELD_NUMBER: _ClassVar[int]
    CAUSE_RATE_FIELD_NUMBER: _ClassVar[int]
    RESULT_VALUE_FIELD_NUMBER: _ClassVar[int]
    RESULT_RATE_FIELD_NUMBER: _ClassVar[int]
    cause_value: float
    cause_rate: float
    result_value: float
    result_rate: float
    def __init__(self, cause_value: _Optional[float] = ..., cause_rate: _Optional[float] = ..., result_value: _Optional[float] = ..., result_rate: _Optional[float] = ...) -> None: ...

class StoreStats(_message.Message):
    __slots__ = ("store_id", "capacity", "available", "region_count", "sending_snap_count", "receiving_snap_count", "start_time", "applying_snap_count", "is_busy", "used_size", "bytes_written", "keys_written", "bytes_read", "keys_read", "interval", "cpu_usages", "read_io_rates", "write_io_rates", "op_latencies", "peer_stats", "query_stats", "slow_score", "damaged_regions_id", "is_apply_busy", "snapshot_stats", "slow_trend", "is_grpc_paused", "total_memory", "used_memory", "network_slow_scores", "dfs", "is_stopping")
    class NetworkSlowScoresEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: int
        def __init__(self, key: _Optional[int] = ..., value: _Optional[int] = ...) -> None: ...
    STORE_ID_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    REGION_COUNT_FIELD_NUMBER: _ClassVar[int]
    SENDING_SNAP_COUNT_FIELD_NUMBER: _ClassVar[int]
    RECEIVING_SNAP_COUNT_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    APPLYING_SNAP_COUNT_FIELD_NUMBER: _ClassVar[int]
    IS_BUSY_FIELD_NUMBER: _ClassVar[int]
    USED_SIZE_FIELD_NUMBER: _ClassVar[int]
    BYTES_WRITTEN_FIELD_NUMBER: _ClassVar[int]
    KEYS_WRITTEN_FIELD_NUMBER: _ClassVar[int]
    BYTES_READ_FIELD_NUMBER: _ClassVar[int]
    KEYS_READ_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    CPU_USAGES_FIELD_NUMBER: _ClassVar[int]
    READ_IO_RATES_FIELD_NUMBER: _ClassVar[int]
    WRITE_IO_RATES_FIELD_NUMBER: _ClassVar[int]
    OP_LATENCIES_FIELD_NUMBER: _ClassVar[int]
    PEER_STATS_FIELD_NUMBER: _ClassVar[int]
    QUERY_STATS_FIELD_NUMBER: _ClassVar[int]
    SLOW_SCORE_FIELD_NUMBER: _ClassVar[int]
    DAMAGED_REGIONS_ID_FIELD_NUMBER: _ClassVar[int]
    IS_APPLY_BUSY_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_STATS_FIELD_NUMBER: _ClassVar[int]
    SLOW_TREND_FIELD_NUMBER: _ClassVar[int]
    IS_GRPC_PAUSED_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MEMORY_FIELD_NUMBER: _ClassVar[int]
    USED_MEMORY_FIELD_NUMBER: _ClassVar[int]
    NETWORK_SLOW_SCORES_FIELD_NUMBER: _ClassVar[int]
    DFS_FIELD_NUMBER: _ClassVar[int]
    IS_STOPPING_FIELD_NUMBER: _ClassVar[int]
    store_id: int
    capacity: int
    available: int
    region_count: int
    sending_snap_count: int
    receiving_snap_count: int
    start_time: int
    applying_snap_count: int
    is_busy: bool
    used_size: int
    bytes_written: int
    keys_written: int
    bytes_read: int
    keys_read: int
    interval: TimeInterval
    cpu_usages: _containers.RepeatedCompositeFieldContainer[RecordPair]
    read_io_rates: _containers.RepeatedCompositeFieldContainer[RecordPair]
    write_io_rates: _containers.RepeatedCompositeFieldContainer[RecordPair]
    op_latencies: _containers.RepeatedCompositeFieldContainer[RecordPair]
    peer_stats: _containers.RepeatedCompositeFieldContainer[PeerStat]
    query_stats: QueryStats
    slow_score: int
    damaged_regions_id: _containers.RepeatedScalarFieldContainer[int]
    is_apply_busy: bool
    snapshot_stats: _containers.RepeatedCompositeFieldContainer[SnapshotStat]
    slow_trend: SlowTrend
    is_grpc_paused: bool
    total_memory: int
    used_memory: int
    network_slow_scores: _containers.ScalarMap[int, int]
    dfs: _containers.RepeatedCompositeFieldContainer[DfsStatItem]
    is_stopping: bool
    def __init__(self, store_id: _Optional[int] = ..., capacity: _Optional[int] = ..., available: _Optional[int] = ..., region_count: _Optional[int] = ..., sending_snap_count: _Optional[int] = ..., receiving_snap_count: _Optional[int] = ..., start_time: _Optional[int] = ..., applying_snap_count: _Optional[int] = ..., is_busy: _Optional[bool] = ..., used_size: _Optional[int] = ..., bytes_written: _Optional[int] = ..., keys_written: _Optional[int] = ..., bytes_read: _Optional[int] = ..., keys_read: _Optional[int] = ..., interval: _Optional[_Union[TimeInterval, _Mapping]] = ..., cpu_usages: _Optional[_Iterable[_Union[RecordPair, _Mapping]]] = ..., read_io_rates: _Optional[_Iterable[_Union[RecordPair, _Mapping]]] = ..., write_io_rates: _Optional[_Iterable[_Union[RecordPair, _Mapping]]] = ..., op_latencies: _Optional[_Iterable[_Union[RecordPair, _Mapping]]] = ..., peer_stats: _Optional[_Iterable[_Union[PeerStat, _Mapping]]] = ..., query_stats: _Optional[_Union[QueryStats, _Mapping]] = ..., slow_score: _Optional[int] = ..., damaged_regions_id: _Optional[_Iterable[int]] = ..., is_apply_busy: _Optional[bool] = ..., snapshot_stats: _Optional[_Iterable[_Union[SnapshotStat, _Mapping]]] = ..., slow_trend: _Optional[_Union[SlowTrend, _Mapping]] = ..., is_grpc_paused: _Optional[bool] = ..., total_memory: _Optional[int] = ..., used_memory: _Optional[int] = ..., network_slow_scores: _Optional[_Mapping[int, int]] = ..., dfs: _Optional[_Iterable[_Union[DfsStatItem, _Mapping]]] = ..., is_stopping: _Optional[bool] = ...) -> None: ...

class PeerReport(_message.Message):
    __slots__ = ("is_force_leader", "has_commit_merge", "applied_index")
    IS_FORCE_LEADER_FIELD_NUMBER: _ClassVar[int]
    HAS_COMMIT_MERGE_FIELD_NUMBER: _ClassVar[int]
    APPLIED_INDEX_FIELD_NUMBER: _ClassVar[int]
    is_force_leader: bool
    has_commit_merge: bool
    applied_index: int
    def __init__(self, is_force_leader: _Optional[bool] = ..., has_commit_merge: _Optional[bool] = ..., applied_index: _Optional[int] = ...) -> None: ...

class StoreReport(_message.Message):
    __slots__ = ("peer_reports", "step")
    PEER_REPORTS_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    peer_reports: _containers.RepeatedCompositeFieldContainer[PeerReport]
    step: int
    def __init__(self, peer_reports: _Optional[_Iterable[_Union[PeerReport, _Mapping]]] = ..., step: _Optional[int] = ...) -> None: ...

class StoreHeartbeatRequest(_message.Message):
    __slots__ = ("header", "stats", "store_report", "dr_autosync_status")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    STORE_REPORT_FIELD_NUMBER: _ClassVar[int]
    DR_AUTOSYNC_STATUS_FIELD_NUMBER: _ClassVar[int]
    header: RequestHeader
    stats: StoreStats
    store_report: StoreReport
    dr_autosync_status: _replication_modepb_pb2.StoreDRAutoSyncStatus
    def __init__(self, header: _Optional[_Union[RequestHeader, _Mapping]] = ..., stats: _Optional[_Union[StoreStats, _Mapping]] = ..., store_report: _Optional[_Union[StoreReport, _Mapping]] = ..., dr_autosync_status: _Optional[_Union[_replication_modepb_pb2.StoreDRAutoSyncStatus, _Mapping]] = ...) -> None: ...

class DemoteFailedVoters(_message.Message):
    __slots__ = ("region_id", "failed_voters")
    REGION_ID_FIELD_NUMBER: _ClassVar[int]
    FAILED_VOTERS_FIELD_NUMBER: _ClassVar[int]
    region_id: int
    failed_voters: _containers.RepeatedCompositeFieldContainer[_metapb_pb2.Peer]
    def __init__(self, region_id: _Optional[int] = ..., failed_voters: _Optional[_Iterable[_Union[_metapb_pb2.Peer, _Mapping]]] = ...) -> None: ...

class ForceLeader(_message.Message):
    __slots__ = ("failed_stores", "enter_force_leaders")
    FAILED_STORES_FIELD_NUMBER: _ClassVar[int]
    ENTER_FORCE_LEADERS_FIELD_NUMBER: _ClassVar[int]
    failed_stores: _containers.RepeatedScalarFieldContainer[int]
    enter_force_leaders: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, failed_stores: _Optional[_Iterable[int]] = ..., enter_force_leaders: _Optional[_Iterable[int]] = ...) -> None: ...

class RecoveryPlan(_message.Message):
    __slots__ = ("creates", "updates", "tombstones", "demotes", "force_leader", "step")
    CREATES_FIELD_NUMBER: _ClassVar[int]
    UPDATES_FIELD_NUMBER: _ClassVar[int]
    TOMBSTONES_FIELD_NUMBER: _ClassVar[int]
    DEMOTES_FIELD_NUMBER: _ClassVar[int]
    FORCE_LEADER_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    creates: _containers.RepeatedCompositeFieldContainer[_metapb_pb2.Region]
    updates: _containers.RepeatedCompositeFieldContainer[_metapb_pb2.Region]
    tombstones: _containers.RepeatedScalarFieldContainer[int]
    demotes: _containers.RepeatedCompositeFieldContainer[DemoteFailedVoters]
    force_leader: ForceLeader
    step: int
    def __init__(self, creates: _Optional[_Iterable[_Union[_metapb_pb2.Region, _Mapping]]] = ..., updates: _Optional[_Iterable[_Union[_metapb_pb2.Region, _Mapping]]] = ..., tombstones: _Optional[_Iterable[int]] = ..., demotes: _Optional[_Iterable[_Union[DemoteFailedVoters, _Mapping]]] = ..., force_leader: _Optional[_Union[ForceLeader, _Mapping]] = ..., step: _Optional[int] = ...) -> None: ...

class AwakenRegions(_message.Message):
    __slots__ = ("abnormal_stores",)
    ABNORMAL_STORES_FIELD_NUMBER: _ClassVar[int]
    abnormal_stores: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, abnormal_stores: _Optional[_Iterable[int]] = ...) -> None: ...

class ControlGrpc(_message.Message):
    __slots__ = ("ctrl_event",)
    CTRL_EVENT_FIELD_NUMBER: _ClassVar[int]
    ctrl_event: ControlGrpcEvent
    def __init__(self, ctrl_event: _Optional[_Union[ControlGrpcEvent, str]] = ...) -> None: ...

class StoreHeartbeatResponse(_message.Message):
    __slots__ = ("header", "replication_status", "cluster_version", "require_detailed_report", "recovery_plan", "awaken_regions", "control_grpc", "state")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    REPLICATION_STATUS_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_VERSION_FIELD_NUMBER: _ClassVar[int]
    REQUIRE_DETAILED_REPORT_FIELD_NUMBER: _ClassVar[int]
    RECOVERY_PLAN_FIELD_NUMBER: _ClassVar[int]
    AWAKEN_REGIONS_FIELD_NUMBER: _ClassVar[int]
    CONTROL_GRPC_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    replication_status: _replication_modepb_pb2.ReplicationStatus
    cluster_version: str
    require_detailed_report: bool
    recovery_plan: RecoveryPlan
    awaken_regions: AwakenRegions
    control_grpc: ControlGrpc
    state: _metapb_pb2.NodeState
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., replication_status: _Optional[_Union[_replication_modepb_pb2.ReplicationStatus, _Mapping]] = ..., cluster_version: _Optional[str] = ..., require_detailed_report: _Optional[bool] = ..., recovery_plan: _Optional[_Union[RecoveryPlan, _Mapping]] = ..., awaken_regions: _Optional[_Union[AwakenRegions, _Mapping]] = ..., control_grpc: _Optional[_Union[ControlGrpc, _Mapping]] = ..., state: _Optional[_Union[_metapb_pb2.NodeState, str]] = ...) -> None: ...

class PeerStats(_message.Message):
    __slots__ = ("peer", "down_seconds")
    PEER_FIELD_NUMBER: _ClassVar[int]
    DOWN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    peer: _metapb_pb2.Peer
    down_seconds: int
    def __init__(self, peer: _Optional[_Union[_metapb_pb2.Peer, _Mapping]] = ..., down_seconds: _Optional[int] = ...) -> None: ...

class RegionHeartbeatRequest(_message.Message):
    __slots__ = ("header", "region", "leader", "down_peers", "pending_peers", "bytes_written", "bytes_read", "keys_written", "keys_read", "approximate_size", "interval", "approximate_keys", "term", "replication_status", "query_stats", "cpu_usage", "approximate_kv_size", "approximate_columnar_kv_size", "bucket_meta", "cpu_stats")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    LEADER_FIELD_NUMBER: _ClassVar[int]
    DOWN_PEERS_FIELD_NUMBER: _ClassVar[int]
    PENDING_PEERS_FIELD_NUMBER: _ClassVar[int]
    BYTES_WRITTEN_FIELD_NUMBER: _ClassVar[int]
    BYTES_READ_FIELD_NUMBER: _ClassVar[int]
    KEYS_WRITTEN_FIELD_NUMBER: _ClassVar[int]
    KEYS_READ_FIELD_NUMBER: _ClassVar[int]
    APPROXIMATE_SIZE_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    APPROXIMATE_KEYS_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    REPLICATION_STATUS_FIELD_NUMBER: _ClassVar[int]
    QUERY_STATS_FIELD_NUMBER: _ClassVar[int]
    CPU_USAGE_FIELD_NUMBER: _ClassVar[int]
    APPROXIMATE_KV_SIZE_FIELD_NUMBER: _ClassVar[int]
    APPROXIMATE_COLUMNAR_KV_SIZE_FIELD_NUMBER: _ClassVar[int]
    BUCKET_META_FIELD_NUMBER: _ClassVar[int]
    CPU_STATS_FIELD_NUMBER: _ClassVar[int]
    header: RequestHeader
    region: _metapb_pb2.Region
    leader: _metapb_pb2.Peer
    down_peers: _containers.RepeatedCompositeFieldContainer[PeerStats]
    pending_peers: _containers.RepeatedCompositeFieldContainer[_metapb_pb2.Peer]
    bytes_written: int
    bytes_read: int
    keys_written: int
    keys_read: int
    approximate_size: int
    interval: TimeInterval
    approximate_keys: int
    term: int
    replication_status: _replication_modepb_pb2.RegionReplicationStatus
    query_stats: QueryStats
    cpu_usage: int
    approximate_kv_size: int
    approximate_columnar_kv_size: int
    bucket_meta: _metapb_pb2.BucketMeta
    cpu_stats: CPUStats
    def __init__(self, header: _Optional[_Union[RequestHeader, _Mapping]] = ..., region: _Optional[_Union[_metapb_pb2.Region, _Mapping]] = ..., leader: _Optional[_Union[_metapb_pb2.Peer, _Mapping]] = ..., down_peers: _Optional[_Iterable[_Union[PeerStats, _Mapping]]] = ..., pending_peers: _Optional[_Iterable[_Union[_metapb_pb2.Peer, _Mapping]]] = ..., bytes_written: _Optional[int] = ..., bytes_read: _Optional[int] = ..., keys_written: _Optional[int] = ..., keys_read: _Optional[int] = ..., approximate_size: _Optional[int] = ..., interval: _Optional[_Union[TimeInterval, _Mapping]] = ..., approximate_keys: _Optional[int] = ..., term: _Optional[int] = ..., replication_status: _Optional[_Union[_replication_modepb_pb2.RegionReplicationStatus, _Mapping]] = ..., query_stats: _Optional[_Union[QueryStats, _Mapping]] = ..., cpu_usage: _Optional[int] = ..., approximate_kv_size: _Optional[int] = ..., approximate_columnar_kv_size: _Optional[int] = ..., bucket_meta: _Optional[_Union[_metapb_pb2.BucketMeta, _Mapping]] = ..., cpu_stats: _Optional[_Union[CPUStats, _Mapping]] = ...) -> None: ...

class ChangePeer(_message.Message):
    __slots__ = ("peer", "change_type")
    PEER_FIELD_NUMBER: _ClassVar[int]
    CHANGE_TYPE_FIELD_NUMBER: _ClassVar[int]
    peer: _metapb_pb2.Peer
    change_type: _eraftpb_pb2.ConfChangeType
    def __init__(self, peer: _Optional[_Union[_metapb_pb2.Peer, _Mapping]] = ..., change_type: _Optional[_Union[_eraftpb_pb2.ConfChangeType, str]] = ...) -> None: ...

class ChangePeerV2(_message.Message):
    __slots__ = ("changes",)
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    changes: _containers.RepeatedCompositeFieldContainer[ChangePeer]
    def __init__(self, changes: _Optional[_Iterable[_Union[ChangePeer, _Mapping]]] = ...) -> None: ...

class TransferLeader(_message.Message):
    __slots__ = ("peer", "peers")
    PEER_FIELD_NUMBER: _ClassVar[int]
    PEERS_FIELD_NUMBER: _ClassVar[int]
    peer: _metapb_pb2.Peer
    peers: _containers.RepeatedCompositeFieldContainer[_metapb_pb2.Peer]
    def __init__(self, peer: _Optional[_Union[_metapb_pb2.Peer, _Mapping]] = ..., peers: _Optional[_Iterable[_Union[_metapb_pb2.Peer, _Mapping]]] = ...) -> None: ...

class Merge(_message.Message):
    __slots__ = ("target",)
    TARGET_FIELD_NUMBER: _ClassVar[int]
    target: _metapb_pb2.Region
    def __init__(self, target: _Optional[_Union[_metapb_pb2.Region, _Mapping]] = ...) -> None: ...

class SplitRegion(_message.Message):
    __slots__ = ("policy", "keys")
    POLICY_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    policy: CheckPolicy
    keys: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, policy: _Optional[_Union[CheckPolicy, str]] = ..., keys: _Optional[_Iterable[bytes]] = ...) -> None: ...

class SwitchWitness(_message.Message):
    __slots__ = ("peer_id", "is_witness")
    PEER_ID_FIELD_NUMBER: _ClassVar[int]
    IS_WITNESS_FIELD_NUMBER: _ClassVar[int]
    peer_id: int
    is_witness: bool
    def __init__(self, peer_id: _Optional[int] = ..., is_witness: _Optional[bool] = ...) -> None: ...

class BatchSwitchWitness(_message.Message):
    __slots__ = ("switch_witnesses",)
    SWITCH_WITNESSES_FIELD_NUMBER: _ClassVar[int]
    switch_witnesses: _containers.RepeatedCompositeFieldContainer[SwitchWitness]
    def __init__(self, switch_witnesses: _Optional[_Iterable[_Union[SwitchWitness, _Mapping]]] = ...) -> None: ...

class ChangeSplit(_message.Message):
    __slots__ = ("auto_split_enabled",)
    AUTO_SPLIT_ENABLED_FIELD_NUMBER: _ClassVar[int]
    auto_split_enabled: bool
    def __init__(self, auto_split_enabled: _Optional[bool] = ...) -> None: ...

class RegionHeartbeatResponse(_message.Message):
    __slots__ = ("header", "change_peer", "transfer_leader", "region_id", "region_epoch", "target_peer", "merge", "split_region", "change_peer_v2", "switch_witnesses", "change_split")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHANGE_PEER_FIELD_NUMBER: _ClassVar[int]
    TRANSFER_LEADER_FIELD_NUMBER: _ClassVar[int]
    REGION_ID_FIELD_NUMBER: _ClassVar[int]
    REGION_EPOCH_FIELD_NUMBER: _ClassVar[int]
    TARGET_PEER_FIELD_NUMBER: _ClassVar[int]
    MERGE_FIELD_NUMBER: _ClassVar[int]
    SPLIT_REGION_FIELD_NUMBER: _ClassVar[int]
    CHANGE_PEER_V2_FIELD_NUMBER: _ClassVar[int]
    SWITCH_WITNESSES_FIELD_NUMBER: _ClassVar[int]
    CHANGE_SPLIT_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    change_peer: ChangePeer
    transfer_leader: TransferLeader
    region_id: int
    region_epoch: _metapb_pb2.RegionEpoch
    target_peer: _metapb_pb2.Peer
    merge: Merge
    split_region: SplitRegion
    change_peer_v2: ChangePeerV2
    switch_witnesses: BatchSwitchWitness
    change_split: ChangeSplit
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., change_peer: _Optional[_Union[ChangePeer, _Mapping]] = ..., transfer_leader: _Optional[_Union[TransferLeader, _Mapping]] = ..., region_id: _Optional[int] = ..., region_epoch: _Optional[_Union[_metapb_pb2.RegionEpoch, _Mapping]] = ..., target_peer: _Optional[_Union[_metapb_pb2.Peer, _Mapping]] = ..., merge: _Optional[_Union[Merge, _Mapping]] = ..., split_region: _Optional[_Union[SplitRegion, _Mapping]] = ..., change_peer_v2: _Optional[_Union[ChangePeerV2, _Mapping]] = ..., switch_witnesses: _Optional[_Union[BatchSwitchWitness, _Mapping]] = ..., change_split: _Optional[_Union[ChangeSplit, _Mapping]] = ...) -> None: ...

class GetRegionRequest(_message.Message):
    __slots__ = ("header", "region_key", "need_buckets")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    REGION_KEY_FIELD_NUMBER: _ClassVar[int]
    NEED_BUCKETS_FIELD_NUMBER: _ClassVar[int]
    header: RequestHeader
    region_key: bytes
    need_buckets: bool
    def __init__(self, header: _Optional[_Union[RequestHeader, _Mapping]] = ..., region_key: _Optional[bytes] = ..., need_buckets: _Optional[bool] = ...) -> None: ...

class GetRegionResponse(_message.Message):
    __slots__ = ("header", "region", "leader", "down_peers", "pending_peers", "buckets")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    LEADER_FIELD_NUMBER: _ClassVar[int]
    DOWN_PEERS_FIELD_NUMBER: _ClassVar[int]
    PENDING_PEERS_FIELD_NUMBER: _ClassVar[int]
    BUCKETS_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    region: _metapb_pb2.Region
    leader: _metapb_pb2.Peer
    down_peers: _containers.RepeatedCompositeFieldContainer[PeerStats]
    pending_peers: _containers.RepeatedCompositeFieldContainer[_metapb_pb2.Peer]
    buckets: _metapb_pb2.Buckets
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., region: _Optional[_Union[_metapb_pb2.Region, _Mapping]] = ..., leader: _Optional[_Union[_metapb_pb2.Peer, _Mapping]] = ..., down_peers: _Optional[_Iterable[_Union[PeerStats, _Mapping]]] = ..., pending_peers: _Optional[_Iterable[_Union[_metapb_pb2.Peer, _Mapping]]] = ..., buckets: _Optional[_Union[_metapb_pb2.Buckets, _Mapping]] = ...) -> None: ...

class GetRegionByIDRequest(_message.Message):
    __slots__ = ("header", "region_id", "need_buckets")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    REGION_ID_FIELD_NUMBER: _ClassVar[int]
    NEED_BUCKETS_FIELD_NUMBER: _ClassVar[int]
    header: RequestHeader
    region_id: int
    need_buckets: bool
    def __init__(self, header: _Optional[_Union[RequestHeader, _Mapping]] = ..., region_id: _Optional[int] = ..., need_buckets: _Optional[bool] = ...) -> None: ...

class QueryRegionRequest(_message.Message):
    __slots__ = ("header", "need_buckets", "ids", "keys", "prev_keys")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    NEED_BUCKETS_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    PREV_KEYS_FIELD_NUMBER: _ClassVar[int]
    header: RequestHeader
    need_buckets: bool
    ids: _containers.RepeatedScalarFieldContainer[int]
    keys: _containers.RepeatedScalarFieldContainer[bytes]
    prev_keys: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, header: _Optional[_Union[RequestHeader, _Mapping]] = ..., need_buckets: _Optional[bool] = ..., ids: _Optional[_Iterable[int]] = ..., keys: _Optional[_Iterable[bytes]] = ..., prev_keys: _Optional[_Iterable[bytes]] = ...) -> None: ...

class RegionResponse(_message.Message):
    __slots__ = ("region", "leader", "down_peers", "pending_peers", "buckets")
    REGION_FIELD_NUMBER: _ClassVar[int]
    LEADER_FIELD_NUMBER: _ClassVar[int]
    DOWN_PEERS_FIELD_NUMBER: _ClassVar[int]
    PENDING_PEERS_FIELD_NUMBER: _ClassVar[int]
    BUCKETS_FIELD_NUMBER: _ClassVar[int]
    region: _metapb_pb2.Region
    leader: _metapb_pb2.Peer
    down_peers: _containers.RepeatedCompositeFieldContainer[PeerStats]
    pending_peers: _containers.RepeatedCompositeFieldContainer[_metapb_pb2.Peer]
    buckets: _metapb_pb2.Buckets
    def __init__(self, region: _Optional[_Union[_metapb_pb2.Region, _Mapping]] = ..., leader: _Optional[_Union[_metapb_pb2.Peer, _Mapping]] = ..., down_peers: _Optional[_Iterable[_Union[PeerStats, _Mapping]]] = ..., pending_peers: _Optional[_Iterable[_Union[_metapb_pb2.Peer, _Mapping]]] = ..., buckets: _Optional[_Union[_metapb_pb2.Buckets, _Mapping]] = ...) -> None: ...

class QueryRegionResponse(_message.Message):
    __slots__ = ("header", "key_id_map", "prev_key_id_map", "regions_by_id")
    class RegionsByIdEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: RegionResponse
        def __init__(self, key: _Optional[int] = ..., value: _Optional[_Union[RegionResponse, _Mapping]] = ...) -> None: ...
    HEADER_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_MAP_FIELD_NUMBER: _ClassVar[int]
    PREV_KEY_ID_MAP_FIELD_NUMBER: _ClassVar[int]
    REGIONS_BY_ID_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    key_id_map: _containers.RepeatedScalarFieldContainer[int]
    prev_key_id_map: _containers.RepeatedScalarFieldContainer[int]
    regions_by_id: _containers.MessageMap[int, RegionResponse]
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., key_id_map: _Optional[_Iterable[int]] = ..., prev_key_id_map: _Optional[_Iterable[int]] = ..., regions_by_id: _Optional[_Mapping[int, RegionResponse]] = ...) -> None: ...

class ScanRegionsRequest(_message.Message):
    __slots__ = ("header", "start_key", "limit", "end_key")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    START_KEY_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    END_KEY_FIELD_NUMBER: _ClassVar[int]
    header: RequestHeader
    start_key: bytes
    limit: int
    end_key: bytes
    def __init__(self, header: _Optional[_Union[RequestHeader, _Mapping]] = ..., start_key: _Optional[bytes] = ..., limit: _Optional[int] = ..., end_key: _Optional[bytes] = ...) -> None: ...

class Region(_message.Message):
    __slots__ = ("region", "leader", "down_peers", "pending_peers", "buckets")
    REGION_FIELD_NUMBER: _ClassVar[int]
    LEADER_FIELD_NUMBER: _ClassVar[int]
    DOWN_PEERS_FIELD_NUMBER: _ClassVar[int]
    PENDING_PEERS_FIELD_NUMBER: _ClassVar[int]
    BUCKETS_FIELD_NUMBER: _ClassVar[int]
    region: _metapb_pb2.Region
    leader: _metapb_pb2.Peer
    down_peers: _containers.RepeatedCompositeFieldContainer[PeerStats]
    pending_peers: _containers.RepeatedCompositeFieldContainer[_metapb_pb2.Peer]
    buckets: _metapb_pb2.Buckets
    def __init__(self, region: _Optional[_Union[_metapb_pb2.Region, _Mapping]] = ..., leader: _Optional[_Union[_metapb_pb2.Peer, _Mapping]] = ..., down_peers: _Optional[_Iterable[_Union[PeerStats, _Mapping]]] = ..., pending_peers: _Optional[_Iterable[_Union[_metapb_pb2.Peer, _Mapping]]] = ..., buckets: _Optional[_Union[_metapb_pb2.Buckets, _Mapping]] = ...) -> None: ...

class ScanRegionsResponse(_message.Message):
    __slots__ = ("header", "region_metas", "leaders", "regions")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    REGION_METAS_FIELD_NUMBER: _ClassVar[int]
    LEADERS_FIELD_NUMBER: _ClassVar[int]
    REGIONS_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    region_metas: _containers.RepeatedCompositeFieldContainer[_metapb_pb2.Region]
    leaders: _containers.RepeatedCompositeFieldContainer[_metapb_pb2.Peer]
    regions: _containers.RepeatedCompositeFieldContainer[Region]
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., region_metas: _Optional[_Iterable[_Union[_metapb_pb2.Region, _Mapping]]] = ..., leaders: _Optional[_Iterable[_Union[_metapb_pb2.Peer, _Mapping]]] = ..., regions: _Optional[_Iterable[_Union[Region, _Mapping]]] = ...) -> None: ...

class KeyRange(_message.Message):
    __slots__ = ("start_key", "end_key")
    START_KEY_FIELD_NUMBER: _ClassVar[int]
    END_KEY_FIELD_NUMBER: _ClassVar[int]
    start_key: bytes
    end_key: bytes
    def __init__(self, start_key: _Optional[bytes] = ..., end_key: _Optional[bytes] = ...) -> None: ...

class BatchScanRegionsRequest(_message.Message):
    __slots__ = ("header", "need_buckets", "ranges", "limit", "contain_all_key_range")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    NEED_BUCKETS_FIELD_NUMBER: _ClassVar[int]
    RANGES_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    CONTAIN_ALL_KEY_RANGE_FIELD_NUMBER: _ClassVar[int]
    header: RequestHeader
    need_buckets: bool
    ranges: _containers.RepeatedCompositeFieldContainer[KeyRange]
    limit: int
    contain_all_key_range: bool
    def __init__(self, header: _Optional[_Union[RequestHeader, _Mapping]] = ..., need_buckets: _Optional[bool] = ..., ranges: _Optional[_Iterable[_Union[KeyRange, _Mapping]]] = ..., limit: _Optional[int] = ..., contain_all_key_range: _Optional[bool] = ...) -> None: ...

class BatchScanRegionsResponse(_message.Message):
    __slots__ = ("header", "regions")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    REGIONS_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    regions: _containers.RepeatedCompositeFieldContainer[Region]
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., regions: _Optional[_Iterable[_Union[Region, _Mapping]]] = ...) -> None: ...

class RegionStat(_message.Message):
    __slots__ = ("bytes_written", "bytes_read", "keys_written", "keys_read")
    BYTES_WRITTEN_FIELD_NUMBER: _ClassVar[int]
    BYTES_READ_FIELD_NUMBER: _ClassVar[int]
    KEYS_WRITTEN_FIELD_NUMBER: _ClassVar[int]
    KEYS_READ_FIELD_NUMBER: _ClassVar[int]
    bytes_written: int
    bytes_read: int
    keys_written: int
    keys_read: int
    def __init__(self, bytes_written: _Optional[int] = ..., bytes_read: _Optional[int] = ..., keys_written: _Optional[int] = ..., keys_read: _Optional[int] = ...) -> None: ...

class PeersStats(_message.Message):
    __slots__ = ("peers",)
    PEERS_FIELD_NUMBER: _ClassVar[int]
    peers: _containers.RepeatedCompositeFieldContainer[PeerStats]
    def __init__(self, peers: _Optional[_Iterable[_Union[PeerStats, _Mapping]]] = ...) -> None: ...

class Peers(_message.Message):
    __slots__ = ("peers",)
    PEERS_FIELD_NUMBER: _ClassVar[int]
    peers: _containers.RepeatedCompositeFieldContainer[_metapb_pb2.Peer]
    def __init__(self, peers: _Optional[_Iterable[_Union[_metapb_pb2.Peer, _Mapping]]] = ...) -> None: ...

class SyncRegionRequest(_message.Message):
    __slots__ = ("header", "member", "start_index")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    MEMBER_FIELD_NUMBER: _ClassVar[int]
    START_INDEX_FIELD_NUMBER: _ClassVar[int]
    header: RequestHeader
    member: Member
    start_index: int
    def __init__(self, header: _Optional[_Union[RequestHeader, _Mapping]] = ..., member: _Optional[_Union[Member, _Mapping]] = ..., start_index: _Optional[int] = ...) -> None: ...

class SyncRegionResponse(_message.Message):
    __slots__ = ("header", "regions", "start_index", "region_stats", "region_leaders", "buckets", "down_peers", "pending_peers")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    REGIONS_FIELD_NUMBER: _ClassVar[int]
    START_INDEX_FIELD_NUMBER: _ClassVar[int]
    REGION_STATS_FIELD_NUMBER: _ClassVar[int]
    REGION_LEADERS_FIELD_NUMBER: _ClassVar[int]
    BUCKETS_FIELD_NUMBER: _ClassVar[int]
    DOWN_PEERS_FIELD_NUMBER: _ClassVar[int]
    PENDING_PEERS_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    regions: _containers.RepeatedCompositeFieldContainer[_metapb_pb2.Region]
    start_index: int
    region_stats: _containers.RepeatedCompositeFieldContainer[RegionStat]
    region_leaders: _containers.RepeatedCompositeFieldContainer[_metapb_pb2.Peer]
    buckets: _containers.RepeatedCompositeFieldContainer[_metapb_pb2.Buckets]
    down_peers: _containers.RepeatedCompositeFieldContainer[PeersStats]
    pending_peers: _containers.RepeatedCompositeFieldContainer[Peers]
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., regions: _Optional[_Iterable[_Union[_metapb_pb2.Region, _Mapping]]] = ..., start_index: _Optional[int] = ..., region_stats: _Optional[_Iterable[_Union[RegionStat, _Mapping]]] = ..., region_leaders: _Optional[_Iterable[_Union[_metapb_pb2.Peer, _Mapping]]] = ..., buckets: _Optional[_Iterable[_Union[_metapb_pb2.Buckets, _Mapping]]] = ..., down_peers: _Optional[_Iterable[_Union[PeersStats, _Mapping]]] = ..., pending_peers: _Optional[_Iterable[_Union[Peers, _Mapping]]] = ...) -> None: ...

class ReportBucketsRequest(_message.Message):
    __slots__ = ("header", "region_epoch", "buckets")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    REGION_EPOCH_FIELD_NUMBER: _ClassVar[int]
    BUCKETS_FIELD_NUMBER: _ClassVar[int]
    header: RequestHeader
    region_epoch: _metapb_pb2.RegionEpoch
    buckets: _metapb_pb2.Buckets
    def __init__(self, header: _Optional[_Union[RequestHeader, _Mapping]] = ..., region_epoch: _Optional[_Union[_metapb_pb2.RegionEpoch, _Mapping]] = ..., buckets: _Optional[_Union[_metapb_pb2.Buckets, _Mapping]] = ...) -> None: ...

class ReportBucketsResponse(_message.Message):
    __slots__ = ("header",)
    HEADER_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ...) -> None: ...

class AskSplitRequest(_message.Message):
    __slots__ = ("header", "region")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    header: RequestHeader
    region: _metapb_pb2.Region
    def __init__(self, header: _Optional[_Union[RequestHeader, _Mapping]] = ..., region: _Optional[_Union[_metapb_pb2.Region, _Mapping]] = ...) -> None: ...

class AskSplitResponse(_message.Message):
    __slots__ = ("header", "new_region_id", "new_peer_ids")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    NEW_REGION_ID_FIELD_NUMBER: _ClassVar[int]
    NEW_PEER_IDS_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    new_region_id: int
    new_peer_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., new_region_id: _Optional[int] = ..., new_peer_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class ReportSplitRequest(_message.Message):
    __slots__ = ("header", "left", "right")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    LEFT_FIELD_NUMBER: _ClassVar[int]
    RIGHT_FIELD_NUMBER: _ClassVar[int]
    header: RequestHeader
    left: _metapb_pb2.Region
    right: _metapb_pb2.Region
    def __init__(self, header: _Optional[_Union[RequestHeader, _Mapping]] = ..., left: _Optional[_Union[_metapb_pb2.Region, _Mapping]] = ..., right: _Optional[_Union[_metapb_pb2.Region, _Mapping]] = ...) -> None: ...

class ReportSplitResponse(_message.Message):
    __slots__ = ("header",)
    HEADER_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ...) -> None: ...

class AskBatchSplitRequest(_message.Message):
    __slots__ = ("header", "region", "split_count", "reason")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    SPLIT_COUNT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    header: RequestHeader
    region: _metapb_pb2.Region
    split_count: int
    reason: SplitReason
    def __init__(self, header: _Optional[_Union[RequestHeader, _Mapping]] = ..., region: _Optional[_Union[_metapb_pb2.Region, _Mapping]] = ..., split_count: _Optional[int] = ..., reason: _Optional[_Union[SplitReason, str]] = ...) -> None: ...

class SplitID(_message.Message):
    __slots__ = ("new_region_id", "new_peer_ids")
    NEW_REGION_ID_FIELD_NUMBER: _ClassVar[int]
    NEW_PEER_IDS_FIELD_NUMBER: _ClassVar[int]
    new_region_id: int
    new_peer_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, new_region_id: _Optional[int] = ..., new_peer_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class AskBatchSplitResponse(_message.Message):
    __slots__ = ("header", "ids")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    ids: _containers.RepeatedCompositeFieldContainer[SplitID]
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., ids: _Optional[_Iterable[_Union[SplitID, _Mapping]]] = ...) -> None: ...

class ReportBatchSplitRequest(_message.Message):
    __slots__ = ("header", "regions")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    REGIONS_FIELD_NUMBER: _ClassVar[int]
    header: RequestHeader
    regions: _containers.RepeatedCompositeFieldContainer[_metapb_pb2.Region]
    def __init__(self, header: _Optional[_Union[RequestHeader, _Mapping]] = ..., regions: _Optional[_Iterable[_Union[_metapb_pb2.Region, _Mapping]]] = ...) -> None: ...

class ReportBatchSplitResponse(_message.Message):
    __slots__ = ("header",)
    HEADER_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ...) -> None: ...

class ScatterRegionRequest(_message.Message):
    __slots__ = ("header", "region_id", "region", "leader", "group", "regions_id", "retry_limit", "skip_store_limit")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    REGION_ID_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    LEADER_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    REGIONS_ID_FIELD_NUMBER: _ClassVar[int]
    RETRY_LIMIT_FIELD_NUMBER: _ClassVar[int]
    SKIP_STORE_LIMIT_FIELD_NUMBER: _ClassVar[int]
    header: RequestHeader
    region_id: int
    region: _metapb_pb2.Region
    leader: _metapb_pb2.Peer
    group: str
    regions_id: _containers.RepeatedScalarFieldContainer[int]
    retry_limit: int
    skip_store_limit: bool
    def __init__(self, header: _Optional[_Union[RequestHeader, _Mapping]] = ..., region_id: _Optional[int] = ..., region: _Optional[_Union[_metapb_pb2.Region, _Mapping]] = ..., leader: _Optional[_Union[_metapb_pb2.Peer, _Mapping]] = ..., group: _Optional[str] = ..., regions_id: _Optional[_Iterable[int]] = ..., retry_limit: _Optional[int] = ..., skip_store_limit: _Optional[bool] = ...) -> None: ...

class ScatterRegionResponse(_message.Message):
    __slots__ = ("header", "finished_percentage", "failed_regions_id")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    FINISHED_PERCENTAGE_FIELD_NUMBER: _ClassVar[int]
    FAILED_REGIONS_ID_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    finished_percentage: int
    failed_regions_id: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., finished_percentage: _Optional[int] = ..., failed_regions_id: _Optional[_Iterable[int]] = ...) -> None: ...

class SplitRegionsRequest(_message.Message):
    __slots__ = ("header", "split_keys", "retry_limit")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    SPLIT_KEYS_FIELD_NUMBER: _ClassVar[int]
    RETRY_LIMIT_FIELD_NUMBER: _ClassVar[int]
    header: RequestHeader
    split_keys: _containers.RepeatedScalarFieldContainer[bytes]
    retry_limit: int
    def __init__(self, header: _Optional[_Union[RequestHeader, _Mapping]] = ..., split_keys: _Optional[_Iterable[bytes]] = ..., retry_limit: _Optional[int] = ...) -> None: ...

class SplitRegionsResponse(_message.Message):
    __slots__ = ("header", "finished_percentage", "regions_id")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    FINISHED_PERCENTAGE_FIELD_NUMBER: _ClassVar[int]
    REGIONS_ID_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    finished_percentage: int
    regions_id: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., finished_percentage: _Optional[int] = ..., regions_id: _Optional[_Iterable[int]] = ...) -> None: ...

class SplitAndScatterRegionsRequest(_message.Message):
    __slots__ = ("header", "split_keys", "group", "retry_limit")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    SPLIT_KEYS_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    RETRY_LIMIT_FIELD_NUMBER: _ClassVar[int]
    header: RequestHeader
    split_keys: _containers.RepeatedScalarFieldContainer[bytes]
    group: str
    retry_limit: int
    def __init__(self, header: _Optional[_Union[RequestHeader, _Mapping]] = ..., split_keys: _Optional[_Iterable[bytes]] = ..., group: _Optional[str] = ..., retry_limit: _Optional[int] = ...) -> None: ...

class SplitAndScatterRegionsResponse(_message.Message):
    __slots__ = ("header", "split_finished_percentage", "scatter_finished_percentage", "regions_id")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    SPLIT_FINISHED_PERCENTAGE_FIELD_NUMBER: _ClassVar[int]
    SCATTER_FINISHED_PERCENTAGE_FIELD_NUMBER: _ClassVar[int]
    REGIONS_ID_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    split_finished_percentage: int
    scatter_finished_percentage: int
    regions_id: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., split_finished_percentage: _Optional[int] = ..., scatter_finished_percentage: _Optional[int] = ..., regions_id: _Optional[_Iterable[int]] = ...) -> None: ...

class GetOperatorRequest(_message.Message):
    __slots__ = ("header", "region_id")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    REGION_ID_FIELD_NUMBER: _ClassVar[int]
    header: RequestHeader
    region_id: int
    def __init__(self, header: _Optional[_Union[RequestHeader, _Mapping]] = ..., region_id: _Optional[int] = ...) -> None: ...

class GetOperatorResponse(_message.Message):
    __slots__ = ("header", "region_id", "desc", "status", "kind")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    REGION_ID_FIELD_NUMBER: _ClassVar[int]
    DESC_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    region_id: int
    desc: bytes
    status: OperatorStatus
    kind: bytes
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., region_id: _Optional[int] = ..., desc: _Optional[bytes] = ..., status: _Optional[_Union[OperatorStatus, str]] = ..., kind: _Optional[bytes] = ...) -> None: ...

class GetClusterConfigRequest(_message.Message):
    __slots__ = ("header",)
    HEADER_FIELD_NUMBER: _ClassVar[int]
    header: RequestHeader
    def __init__(self, header: _Optional[_Union[RequestHeader, _Mapping]] = ...) -> None: ...

class GetClusterConfigResponse(_message.Message):
    __slots__ = ("header", "cluster")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    cluster: _metapb_pb2.Cluster
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., cluster: _Optional[_Union[_metapb_pb2.Cluster, _Mapping]] = ...) -> None: ...

class PutClusterConfigRequest(_message.Message):
    __slots__ = ("header", "cluster")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    header: RequestHeader
    cluster: _metapb_pb2.Cluster
    def __init__(self, header: _Optional[_Union[RequestHeader, _Mapping]] = ..., cluster: _Optional[_Union[_metapb_pb2.Cluster, _Mapping]] = ...) -> None: ...

class PutClusterConfigResponse(_message.Message):
    __slots__ = ("header",)
    HEADER_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ...) -> None: ...

class GetGCSafePointRequest(_message.Message):
    __slots__ = ("header",)
    HEADER_FIELD_NUMBER: _ClassVar[int]
    header: RequestHeader
    def __init__(self, header: _Optional[_Union[RequestHeader, _Mapping]] = ...) -> None: ...

class GetGCSafePointResponse(_message.Message):
    __slots__ = ("header", "safe_point")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    SAFE_POINT_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    safe_point: int
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., safe_point: _Optional[int] = ...) -> None: ...

class UpdateGCSafePointRequest(_message.Message):
    __slots__ = ("header", "safe_point")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    SAFE_POINT_FIELD_NUMBER: _ClassVar[int]
    header: RequestHeader
    safe_point: int
    def __init__(self, header: _Optional[_Union[RequestHeader, _Mapping]] = ..., safe_point: _Optional[int] = ...) -> None: ...

class UpdateGCSafePointResponse(_message.Message):
    __slots__ = ("header", "new_safe_point")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    NEW_SAFE_POINT_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    new_safe_point: int
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., new_safe_point: _Optional[int] = ...) -> None: ...

class UpdateServiceGCSafePointRequest(_message.Message):
    __slots__ = ("header", "service_id", "TTL", "safe_point")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    SERVICE_ID_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    SAFE_POINT_FIELD_NUMBER: _ClassVar[int]
    header: RequestHeader
    service_id: bytes
    TTL: int
    safe_point: int
    def __init__(self, header: _Optional[_Union[RequestHeader, _Mapping]] = ..., service_id: _Optional[bytes] = ..., TTL: _Optional[int] = ..., safe_point: _Optional[int] = ...) -> None: ...

class UpdateServiceGCSafePointResponse(_message.Message):
    __slots__ = ("header", "service_id", "TTL", "min_safe_point")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    SERVICE_ID_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    MIN_SAFE_POINT_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    service_id: bytes
    TTL: int
    min_safe_point: int
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., service_id: _Optional[bytes] = ..., TTL: _Optional[int] = ..., min_safe_point: _Optional[int] = ...) -> None: ...

class GetGCSafePointV2Request(_message.Message):
    __slots__ = ("header", "keyspace_id")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    KEYSPACE_ID_FIELD_NUMBER: _ClassVar[int]
    header: RequestHeader
    keyspace_id: int
    def __init__(self, header: _Optional[_Union[RequestHeader, _Mapping]] = ..., keyspace_id: _Optional[int] = ...) -> None: ...

class GetGCSafePointV2Response(_message.Message):
    __slots__ = ("header", "safe_point")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    SAFE_POINT_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    safe_point: int
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., safe_point: _Optional[int] = ...) -> None: ...

class WatchGCSafePointV2Request(_message.Message):
    __slots__ = ("header", "revision")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    header: RequestHeader
    revision: int
    def __init__(self, header: _Optional[_Union[RequestHeader, _Mapping]] = ..., revision: _Optional[int] = ...) -> None: ...

class SafePointEvent(_message.Message):
    __slots__ = ("keyspace_id", "safe_point", "type")
    KEYSPACE_ID_FIELD_NUMBER: _ClassVar[int]
    SAFE_POINT_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    keyspace_id: int
    safe_point: int
    type: EventType
    def __init__(self, keyspace_id: _Optional[int] = ..., safe_point: _Optional[int] = ..., type: _Optional[_Union[EventType, str]] = ...) -> None: ...

class WatchGCSafePointV2Response(_message.Message):
    __slots__ = ("header", "events", "revision")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    events: _containers.RepeatedCompositeFieldContainer[SafePointEvent]
    revision: int
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., events: _Optional[_Iterable[_Union[SafePointEvent, _Mapping]]] = ..., revision: _Optional[int] = ...) -> None: ...

class UpdateGCSafePointV2Request(_message.Message):
    __slots__ = ("header", "keyspace_id", "safe_point")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    KEYSPACE_ID_FIELD_NUMBER: _ClassVar[int]
    SAFE_POINT_FIELD_NUMBER: _ClassVar[int]
    header: RequestHeader
    keyspace_id: int
    safe_point: int
    def __init__(self, header: _Optional[_Union[RequestHeader, _Mapping]] = ..., keyspace_id: _Optional[int] = ..., safe_point: _Optional[int] = ...) -> None: ...

class UpdateGCSafePointV2Response(_message.Message):
    __slots__ = ("header", "new_safe_point")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    NEW_SAFE_POINT_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    new_safe_point: int
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., new_safe_point: _Optional[int] = ...) -> None: ...

class UpdateServiceSafePointV2Request(_message.Message):
    __slots__ = ("header", "keyspace_id", "service_id", "safe_point", "ttl")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    KEYSPACE_ID_FIELD_NUMBER: _ClassVar[int]
    SERVICE_ID_FIELD_NUMBER: _ClassVar[int]
    SAFE_POINT_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    header: RequestHeader
    keyspace_id: int
    service_id: bytes
    safe_point: int
    ttl: int
    def __init__(self, header: _Optional[_Union[RequestHeader, _Mapping]] = ..., keyspace_id: _Optional[int] = ..., service_id: _Optional[bytes] = ..., safe_point: _Optional[int] = ..., ttl: _Optional[int] = ...) -> None: ...

class UpdateServiceSafePointV2Response(_message.Message):
    __slots__ = ("header", "service_id", "ttl", "min_safe_point")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    SERVICE_ID_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    MIN_SAFE_POINT_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    service_id: bytes
    ttl: int
    min_safe_point: int
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., service_id: _Optional[bytes] = ..., ttl: _Optional[int] = ..., min_safe_point: _Optional[int] = ...) -> None: ...

class GetAllGCSafePointV2Request(_message.Message):
    __slots__ = ("header",)
    HEADER_FIELD_NUMBER: _ClassVar[int]
    header: RequestHeader
    def __init__(self, header: _Optional[_Union[RequestHeader, _Mapping]] = ...) -> None: ...

class GCSafePointV2(_message.Message):
    __slots__ = ("keyspace_id", "gc_safe_point")
    KEYSPACE_ID_FIELD_NUMBER: _ClassVar[int]
    GC_SAFE_POINT_FIELD_NUMBER: _ClassVar[int]
    keyspace_id: int
    gc_safe_point: int
    def __init__(self, keyspace_id: _Optional[int] = ..., gc_safe_point: _Optional[int] = ...) -> None: ...

class GetAllGCSafePointV2Response(_message.Message):
    __slots__ = ("header", "gc_safe_points", "revision")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    GC_SAFE_POINTS_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    gc_safe_points: _containers.RepeatedCompositeFieldContainer[GCSafePointV2]
    revision: int
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., gc_safe_points: _Optional[_Iterable[_Union[GCSafePointV2, _Mapping]]] = ..., revision: _Optional[int] = ...) -> None: ...

class KeyspaceScope(_message.Message):
    __slots__ = ("keyspace_id",)
    KEYSPACE_ID_FIELD_NUMBER: _ClassVar[int]
    keyspace_id: int
    def __init__(self, keyspace_id: _Optional[int] = ...) -> None: ...

class AdvanceGCSafePointRequest(_message.Message):
    __slots__ = ("header", "keyspace_scope", "target")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    KEYSPACE_SCOPE_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    header: RequestHeader
    keyspace_scope: KeyspaceScope
    target: int
    def __init__(self, header: _Optional[_Union[RequestHeader, _Mapping]] = ..., keyspace_scope: _Optional[_Union[KeyspaceScope, _Mapping]] = ..., target: _Optional[int] = ...) -> None: ...

class AdvanceGCSafePointResponse(_message.Message):
    __slots__ = ("header", "old_gc_safe_point", "new_gc_safe_point")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    OLD_GC_SAFE_POINT_FIELD_NUMBER: _ClassVar[int]
    NEW_GC_SAFE_POINT_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    old_gc_safe_point: int
    new_gc_safe_point: int
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., old_gc_safe_point: _Optional[int] = ..., new_gc_safe_point: _Optional[int] = ...) -> None: ...

class AdvanceTxnSafePointRequest(_message.Message):
    __slots__ = ("header", "keyspace_scope", "target")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    KEYSPACE_SCOPE_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    header: RequestHeader
    keyspace_scope: KeyspaceScope
    target: int
    def __init__(self, header: _Optional[_Union[RequestHeader, _Mapping]] = ..., keyspace_scope: _Optional[_Union[KeyspaceScope, _Mapping]] = ..., target: _Optional[int] = ...) -> None: ...

class AdvanceTxnSafePointResponse(_message.Message):
    __slots__ = ("header", "old_txn_safe_point", "new_txn_safe_point", "blocker_description")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    OLD_TXN_SAFE_POINT_FIELD_NUMBER: _ClassVar[int]
    NEW_TXN_SAFE_POINT_FIELD_NUMBER: _ClassVar[int]
    BLOCKER_DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    old_txn_safe_point: int
    new_txn_safe_point: int
    blocker_description: str
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., old_txn_safe_point: _Optional[int] = ..., new_txn_safe_point: _Optional[int] = ..., blocker_description: _Optional[str] = ...) -> None: ...

class GCBarrierInfo(_message.Message):
    __slots__ = ("barrier_id", "barrier_ts", "ttl_seconds")
    BARRIER_ID_FIELD_NUMBER: _ClassVar[int]
    BARRIER_TS_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    barrier_id: str
    barrier_ts: int
    ttl_seconds: int
    def __init__(self, barrier_id: _Optional[str] = ..., barrier_ts: _Optional[int] = ..., ttl_seconds: _Optional[int] = ...) -> None: ...

class GlobalGCBarrierInfo(_message.Message):
    __slots__ = ("barrier_id", "barrier_ts", "ttl_seconds")
    BARRIER_ID_FIELD_NUMBER: _ClassVar[int]
    BARRIER_TS_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    barrier_id: str
    barrier_ts: int
    ttl_seconds: int
    def __init__(self, barrier_id: _Optional[str] = ..., barrier_ts: _Optional[int] = ..., ttl_seconds: _Optional[int] = ...) -> None: ...

class SetGCBarrierRequest(_message.Message):
    __slots__ = ("header", "keyspace_scope", "barrier_id", "barrier_ts", "ttl_seconds")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    KEYSPACE_SCOPE_FIELD_NUMBER: _ClassVar[int]
    BARRIER_ID_FIELD_NUMBER: _ClassVar[int]
    BARRIER_TS_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    header: RequestHeader
    keyspace_scope: KeyspaceScope
    barrier_id: str
    barrier_ts: int
    ttl_seconds: int
    def __init__(self, header: _Optional[_Union[RequestHeader, _Mapping]] = ..., keyspace_scope: _Optional[_Union[KeyspaceScope, _Mapping]] = ..., barrier_id: _Optional[str] = ..., barrier_ts: _Optional[int] = ..., ttl_seconds: _Optional[int] = ...) -> None: ...

class SetGCBarrierResponse(_message.Message):
    __slots__ = ("header", "new_barrier_info")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    NEW_BARRIER_INFO_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    new_barrier_info: GCBarrierInfo
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., new_barrier_info: _Optional[_Union[GCBarrierInfo, _Mapping]] = ...) -> None: ...

class DeleteGCBarrierRequest(_message.Message):
    __slots__ = ("header", "keyspace_scope", "barrier_id")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    KEYSPACE_SCOPE_FIELD_NUMBER: _ClassVar[int]
    BARRIER_ID_FIELD_NUMBER: _ClassVar[int]
    header: RequestHeader
    keyspace_scope: KeyspaceScope
    barrier_id: str
    def __init__(self, header: _Optional[_Union[RequestHeader, _Mapping]] = ..., keyspace_scope: _Optional[_Union[KeyspaceScope, _Mapping]] = ..., barrier_id: _Optional[str] = ...) -> None: ...

class DeleteGCBarrierResponse(_message.Message):
    __slots__ = ("header", "deleted_barrier_info")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DELETED_BARRIER_INFO_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    deleted_barrier_info: GCBarrierInfo
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., deleted_barrier_info: _Optional[_Union[GCBarrierInfo, _Mapping]] = ...) -> None: ...

class SetGlobalGCBarrierRequest(_message.Message):
    __slots__ = ("header", "barrier_id", "barrier_ts", "ttl_seconds")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    BARRIER_ID_FIELD_NUMBER: _ClassVar[int]
    BARRIER_TS_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    header: RequestHeader
    barrier_id: str
    barrier_ts: int
    ttl_seconds: int
    def __init__(self, header: _Optional[_Union[RequestHeader, _Mapping]] = ..., barrier_id: _Optional[str] = ..., barrier_ts: _Optional[int] = ..., ttl_seconds: _Optional[int] = ...) -> None: ...

class SetGlobalGCBarrierResponse(_message.Message):
    __slots__ = ("header", "new_barrier_info")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    NEW_BARRIER_INFO_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    new_barrier_info: GlobalGCBarrierInfo
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., new_barrier_info: _Optional[_Union[GlobalGCBarrierInfo, _Mapping]] = ...) -> None: ...

class DeleteGlobalGCBarrierRequest(_message.Message):
    __slots__ = ("header", "barrier_id")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    BARRIER_ID_FIELD_NUMBER: _ClassVar[int]
    header: RequestHeader
    barrier_id: str
    def __init__(self, header: _Optional[_Union[RequestHeader, _Mapping]] = ..., barrier_id: _Optional[str] = ...) -> None: ...

class DeleteGlobalGCBarrierResponse(_message.Message):
    __slots__ = ("header", "deleted_barrier_info")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DELETED_BARRIER_INFO_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    deleted_barrier_info: GlobalGCBarrierInfo
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., deleted_barrier_info: _Optional[_Union[GlobalGCBarrierInfo, _Mapping]] = ...) -> None: ...

class GCState(_message.Message):
    __slots__ = ("keyspace_scope", "is_keyspace_level_gc", "txn_safe_point", "gc_safe_point", "gc_barriers")
    KEYSPACE_SCOPE_FIELD_NUMBER: _ClassVar[int]
    IS_KEYSPACE_LEVEL_GC_FIELD_NUMBER: _ClassVar[int]
    TXN_SAFE_POINT_FIELD_NUMBER: _ClassVar[int]
    GC_SAFE_POINT_FIELD_NUMBER: _ClassVar[int]
    GC_BARRIERS_FIELD_NUMBER: _ClassVar[int]
    keyspace_scope: KeyspaceScope
    is_keyspace_level_gc: bool
    txn_safe_point: int
    gc_safe_point: int
    gc_barriers: _containers.RepeatedCompositeFieldContainer[GCBarrierInfo]
    def __init__(self, keyspace_scope: _Optional[_Union[KeyspaceScope, _Mapping]] = ..., is_keyspace_level_gc: _Optional[bool] = ..., txn_safe_point: _Optional[int] = ..., gc_safe_point: _Optional[int] = ..., gc_barriers: _Optional[_Iterable[_Union[GCBarrierInfo, _Mapping]]] = ...) -> None: ...

class GlobalGCBarriersInfo(_message.Message):
    __slots__ = ("barriers",)
    BARRIERS_FIELD_NUMBER: _ClassVar[int]
    barriers: _containers.RepeatedCompositeFieldContainer[GlobalGCBarrierInfo]
    def __init__(self, barriers: _Optional[_Iterable[_Union[GlobalGCBarrierInfo, _Mapping]]] = ...) -> None: ...

class GetGCStateRequest(_message.Message):
    __slots__ = ("header", "keyspace_scope", "exclude_gc_barriers", "include_global_gc_barriers")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    KEYSPACE_SCOPE_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_GC_BARRIERS_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_GLOBAL_GC_BARRIERS_FIELD_NUMBER: _ClassVar[int]
    header: RequestHeader
    keyspace_scope: KeyspaceScope
    exclude_gc_barriers: bool
    include_global_gc_barriers: bool
    def __init__(self, header: _Optional[_Union[RequestHeader, _Mapping]] = ..., keyspace_scope: _Optional[_Union[KeyspaceScope, _Mapping]] = ..., exclude_gc_barriers: _Optional[bool] = ..., include_global_gc_barriers: _Optional[bool] = ...) -> None: ...

class GetGCStateResponse(_message.Message):
    __slots__ = ("header", "gc_state", "global_gc_barriers")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    GC_STATE_FIELD_NUMBER: _ClassVar[int]
    GLOBAL_GC_BARRIERS_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    gc_state: GCState
    global_gc_barriers: GlobalGCBarriersInfo
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., gc_state: _Optional[_Union[GCState, _Mapping]] = ..., global_gc_barriers: _Optional[_Union[GlobalGCBarriersInfo, _Mapping]] = ...) -> None: ...

class GetAllKeyspacesGCStatesRequest(_message.Message):
    __slots__ = ("header", "exclude_gc_barriers", "exclude_global_gc_barriers")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_GC_BARRIERS_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_GLOBAL_GC_BARRIERS_FIELD_NUMBER: _ClassVar[int]
    header: RequestHeader
    exclude_gc_barriers: bool
    exclude_global_gc_barriers: bool
    def __init__(self, header: _Optional[_Union[RequestHeader, _Mapping]] = ..., exclude_gc_barriers: _Optional[bool] = ..., exclude_global_gc_barriers: _Optional[bool] = ...) -> None: ...

class GetAllKeyspacesGCStatesResponse(_message.Message):
    __slots__ = ("header", "gc_states", "global_gc_barriers")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    GC_STATES_FIELD_NUMBER: _ClassVar[int]
    GLOBAL_GC_BARRIERS_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    gc_states: _containers.RepeatedCompositeFieldContainer[GCState]
    global_gc_barriers: _containers.RepeatedCompositeFieldContainer[GlobalGCBarrierInfo]
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., gc_states: _Optional[_Iterable[_Union[GCState, _Mapping]]] = ..., global_gc_barriers: _Optional[_Iterable[_Union[GlobalGCBarrierInfo, _Mapping]]] = ...) -> None: ...

class GlobalConfigItem(_message.Message):
    __slots__ = ("name", "value", "error", "kind", "payload")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: str
    error: Error
    kind: EventType
    payload: bytes
    def __init__(self, name: _Optional[str] = ..., value: _Optional[str] = ..., error: _Optional[_Union[Error, _Mapping]] = ..., kind: _Optional[_Union[EventType, str]] = ..., payload: _Optional[bytes] = ...) -> None: ...

class LoadGlobalConfigRequest(_message.Message):
    __slots__ = ("names", "config_path")
    NAMES_FIELD_NUMBER: _ClassVar[int]
    CONFIG_PATH_FIELD_NUMBER: _ClassVar[int]
    names: _containers.RepeatedScalarFieldContainer[str]
    config_path: str
    def __init__(self, names: _Optional[_Iterable[str]] = ..., config_path: _Optional[str] = ...) -> None: ...

class LoadGlobalConfigResponse(_message.Message):
    __slots__ = ("items", "revision")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[GlobalConfigItem]
    revision: int
    def __init__(self, items: _Optional[_Iterable[_Union[GlobalConfigItem, _Mapping]]] = ..., revision: _Optional[int] = ...) -> None: ...

class StoreGlobalConfigRequest(_message.Message):
    __slots__ = ("changes", "config_path")
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    CONFIG_PATH_FIELD_NUMBER: _ClassVar[int]
    changes: _containers.RepeatedCompositeFieldContainer[GlobalConfigItem]
    config_path: str
    def __init__(self, changes: _Optional[_Iterable[_Union[GlobalConfigItem, _Mapping]]] = ..., config_path: _Optional[str] = ...) -> None: ...

class StoreGlobalConfigResponse(_message.Message):
    __slots__ = ("error",)
    ERROR_FIELD_NUMBER: _ClassVar[int]
    error: Error
    def __init__(self, error: _Optional[_Union[Error, _Mapping]] = ...) -> None: ...

class WatchGlobalConfigRequest(_message.Message):
    __slots__ = ("config_path", "revision")
    CONFIG_PATH_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    config_path: str
    revision: int
    def __init__(self, config_path: _Optional[str] = ..., revision: _Optional[int] = ...) -> None: ...

class WatchGlobalConfigResponse(_message.Message):
    __slots__ = ("changes", "revision", "header")
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    HEADER_FIELD_NUMBER: _ClassVar[int]
    changes: _containers.RepeatedCompositeFieldContainer[GlobalConfigItem]
    revision: int
    header: ResponseHeader
    def __init__(self, changes: _Optional[_Iterable[_Union[GlobalConfigItem, _Mapping]]] = ..., revision: _Optional[int] = ..., header: _Optional[_Union[ResponseHeader, _Mapping]] = ...) -> None: ...

class ReportMinResolvedTsRequest(_message.Message):
    __slots__ = ("header", "store_id", "min_resolved_ts")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    STORE_ID_FIELD_NUMBER: _ClassVar[int]
    MIN_RESOLVED_TS_FIELD_NUMBER: _ClassVar[int]
    header: RequestHeader
    store_id: int
    min_resolved_ts: int
    def __init__(self, header: _Optional[_Union[RequestHeader, _Mapping]] = ..., store_id: _Optional[int] = ..., min_resolved_ts: _Optional[int] = ...) -> None: ...

class ReportMinResolvedTsResponse(_message.Message):
    __slots__ = ("header",)
    HEADER_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ...) -> None: ...
