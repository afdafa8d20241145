from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ReplicationMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MAJORITY: _ClassVar[ReplicationMode]
    DR_AUTO_SYNC: _ClassVar[ReplicationMode]

class DRAutoSyncState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SYNC: _ClassVar[DRAutoSyncState]
    ASYNC_WAIT: _ClassVar[DRAutoSyncState]
    ASYNC: _ClassVar[DRAutoSyncState]
    SYNC_RECOVER: _ClassVar[DRAutoSyncState]

class RegionReplicationState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    UNKNOWN: _ClassVar[RegionReplicationState]
    SIMPLE_MAJORITY: _ClassVar[RegionReplicationState]
    INTEGRITY_OVER_LABEL: _ClassVar[RegionReplicationState]
MAJORITY: ReplicationMode
DR_AUTO_SYNC: ReplicationMode
SYNC: DRAutoSyncState
ASYNC_WAIT: DRAutoSyncState
ASYNC: DRAutoSyncState
SYNC_RECOVER: DRAutoSyncState
UNKNOWN: RegionReplicationState
SIMPLE_MAJORITY: RegionReplicationState
INTEGRITY_OVER_LABEL: RegionReplicationState

class ReplicationStatus(_message.Message):
    __slots__ = ("mode", "dr_auto_sync")
    MODE_FIELD_NUMBER: _ClassVar[int]
    DR_AUTO_SYNC_FIELD_NUMBER: _ClassVar[int]
    mode: ReplicationMode
    dr_auto_sync: DRAutoSync
    def __init__(self, mode: _Optional[_Union[ReplicationMode, str]] = ..., dr_auto_sync: _Optional[_Union[DRAutoSync, _Mapping]] = ...) -> None: ...

class DRAutoSync(_message.Message):
    __slots__ = ("label_key", "state", "state_id", "wait_sync_timeout_hint", "available_stores", "pause_region_split")
    LABEL_KEY_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    STATE_ID_FIELD_NUMBER: _ClassVar[int]
    WAIT_SYNC_TIMEOUT_HINT_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_STORES_FIELD_NUMBER: _ClassVar[int]
    PAUSE_REGION_SPLIT_FIELD_NUMBER: _ClassVar[int]
    label_key: str
    state: DRAutoSyncState
    state_id: int
    wait_sync_timeout_hint: int
    available_stores: _containers.RepeatedScalarFieldContainer[int]
    pause_region_split: bool
    def __init__(self, label_key: _Optional[str] = ..., state: _Optional[_Union[DRAutoSyncState, str]] = ..., state_id: _Optional[int] = ..., wait_sync_timeout_hint: _Optional[int] = ..., available_stores: _Optional[_Iterable[int]] = ..., pause_region_split: _Optional[bool] = ...) -> None: ...

class RegionReplicationStatus(_message.Message):
    __slots__ = ("state", "state_id")
    STATE_FIELD_NUMBER: _ClassVar[int]
    STATE_ID_FIELD_NUMBER: _ClassVar[int]
    state: RegionReplicationState
    state_id: int
    def __init__(self, state: _Optional[_Union[RegionReplicationState, str]] = ..., state_id: _Optional[int] = ...) -> None: ...

class StoreDRAutoSyncStatus(_message.Message):
    __slots__ = ("state", "state_id")
    STATE_FIELD_NUMBER: _ClassVar[int]
    STATE_ID_FIELD_NUMBER: _ClassVar[int]
    state: DRAutoSyncState
    state_id: int
    def __init__(self, state: _Optional[_Union[DRAutoSyncState, str]] = ..., state_id: _Optional[int] = ...) -> None: ...
