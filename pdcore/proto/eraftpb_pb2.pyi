from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from typing import ClassVar as _ClassVar

DESCRIPTOR: _descriptor.FileDescriptor

class ConfChangeType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AddNode: _ClassVar[ConfChangeType]
    RemoveNode: _ClassVar[ConfChangeType]
    AddLearnerNode: _ClassVar[ConfChangeType]
AddNode: ConfChangeType
RemoveNode: ConfChangeType
AddLearnerNode: ConfChangeType
