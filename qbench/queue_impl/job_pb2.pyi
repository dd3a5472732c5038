from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Priority(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PRIORITY_NORMAL: _ClassVar[Priority]
    PRIORITY_HIGH: _ClassVar[Priority]
    PRIORITY_LOW: _ClassVar[Priority]

class Status(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STATUS_QUEUED: _ClassVar[Status]
    STATUS_ACTIVE: _ClassVar[Status]
    STATUS_COMPLETED: _ClassVar[Status]
    STATUS_SCHEDULED: _ClassVar[Status]
    STATUS_DEAD: _ClassVar[Status]
PRIORITY_NORMAL: Priority
PRIORITY_HIGH: Priority
PRIORITY_LOW: Priority
STATUS_QUEUED: Status
STATUS_ACTIVE: Status
STATUS_COMPLETED: Status
STATUS_SCHEDULED: Status
STATUS_DEAD: Status

class Job(_message.Message):
    __slots__ = ("id", "type", "payload", "priority", "attempts", "max_retries", "created_at_us", "scheduled_at_us", "started_at_us", "finished_at_us", "last_error", "status")
    ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    MAX_RETRIES_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_US_FIELD_NUMBER: _ClassVar[int]
    SCHEDULED_AT_US_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_US_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_US_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    id: str
    type: str
    payload: bytes
    priority: Priority
    attempts: int
    max_retries: int
    created_at_us: int
    scheduled_at_us: int
    started_at_us: int
    finished_at_us: int
    last_error: str
    status: Status
    def __init__(self, id: _Optional[str] = ..., type: _Optional[str] = ..., payload: _Optional[bytes] = ..., priority: _Optional[_Union[Priority, str]] = ..., attempts: _Optional[int] = ..., max_retries: _Optional[int] = ..., created_at_us: _Optional[int] = ..., scheduled_at_us: _Optional[int] = ..., started_at_us: _Optional[int] = ..., finished_at_us: _Optional[int] = ..., last_error: _Optional[str] = ..., status: _Optional[_Union[Status, str]] = ...) -> None: ...
