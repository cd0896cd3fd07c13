"""Every error this package raises, and the one place where driver errors are translated.

Hierarchy::

    Exception
    ├── TypeError                 a value, key, name or argument of the wrong type
    ├── ValueError                a value of the right type that the store cannot take
    └── HTTPException             carries ``status_code`` and ``detail``
        ├── VersionConflict       409: a compare-and-set (``if_version``) found another version
        ├── DataStoreUnavailable  503: the database (or the store service) cannot be reached or
        │                         did not answer in time
        ├── DataStoreError        500: the database answered, but refused the operation
        └── TokenRejected         401: a remote proxy's token is missing, malformed, tampered
                                  with, signed with another secret, or expired

``HTTPException`` is also a ``starlette.exceptions.HTTPException`` when Starlette is importable,
so a Starlette or FastAPI application answers with the right status code without any handler
of its own. Starlette is never required.

Bad input raises ``TypeError`` or ``ValueError`` *before* anything is sent to the database, so a
call that raises one of them has changed nothing. The one ``ValueError`` that comes from the
server is an update whose merged metadata would pass 16 MiB: that item is unchanged, but the
other items of a ``set_many`` are written. pymongo's errors never escape this package:
``translate_driver_errors`` maps them, chaining the original as ``__cause__``.
"""

from __future__ import annotations

import http
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from bson.errors import InvalidBSON, InvalidDocument
from pymongo import errors as pymongo_errors

__all__ = [
    "DataStoreError",
    "DataStoreUnavailable",
    "HTTPException",
    "TokenRejected",
    "VersionConflict",
    "translate",
    "translate_driver_errors",
]

# Server error codes for a document that would grow past the 16 MiB limit.
_DOCUMENT_TOO_LARGE_CODES = frozenset({10334, 17419, 17420})
# Server error codes of a passing condition (a failover, a shard or host out of reach, a
# shutdown), the ones pymongo itself treats as retryable. When they reach us, pymongo's one
# retry failed too: the database is unavailable for now.
_TRANSIENT_CODES = frozenset(
    {6, 7, 89, 91, 134, 189, 262, 9001, 10058, 10107, 11600, 11602, 13435, 13436}
)

if TYPE_CHECKING:
    _HTTPExceptionBase = Exception
else:
    try:
        from starlette.exceptions import HTTPException as _HTTPExceptionBase
    except ImportError:  # Starlette is optional: fall back to a plain exception.
        _HTTPExceptionBase = Exception


class HTTPException(_HTTPExceptionBase):
    """The database failed in a way the caller cannot fix by changing its input.

    ``status_code`` is an HTTP status (503 or 500 here) and ``detail`` a one-line explanation.
    The driver's own exception, when there is one, is chained as ``__cause__``.
    """

    status_code: int
    detail: str
    headers: Mapping[str, str] | None

    def __init__(
        self,
        status_code: int,
        detail: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if detail is None:
            detail = http.HTTPStatus(status_code).phrase
        if _HTTPExceptionBase is Exception:
            Exception.__init__(self, status_code, detail)
            self.status_code = status_code
            self.detail = detail
            self.headers = headers
        else:
            super().__init__(status_code, detail, headers)

    def __str__(self) -> str:
        return f"{self.status_code}: {self.detail}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status_code={self.status_code!r}, detail={self.detail!r})"


class VersionConflict(HTTPException):
    """Raised by ``set`` and ``delete`` with ``if_version`` when the item is not at that
    version; nothing was changed. Status 409.

    ``current_version`` is the item's version when the command ran, 0 if it was absent (or
    expired): pass it back as ``if_version`` after re-reading the item to try again.
    """

    key: str
    expected_version: int
    current_version: int

    def __init__(self, key: str, expected_version: int, current_version: int) -> None:
        found = f"is at version {current_version}" if current_version else "does not exist"
        expected = "absent" if expected_version == 0 else f"version {expected_version}"
        super().__init__(409, f"key {key!r} {found}, not {expected}")
        self.key = key
        self.expected_version = expected_version
        self.current_version = current_version


class DataStoreUnavailable(HTTPException):
    """Raised when the database cannot be reached, has no writable primary, or did not answer
    within the configured timeouts. Status 503: the same call may succeed later."""

    def __init__(self, detail: str | None = None, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(503, detail, headers)


class DataStoreError(HTTPException):
    """Raised when the database answered with an error that is not about the caller's input:
    missing privileges, a failed index build, an unexpected server error. Status 500."""

    def __init__(self, detail: str | None = None, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(500, detail, headers)


class TokenRejected(HTTPException):
    """Raised by a remote proxy when the store service refuses its token: missing, malformed,
    tampered with, signed with another secret, or expired. Status 401 (403 if a service in
    front of ours forbids the request). Nothing was read or changed; a new token from the
    runtime is the only fix."""

    def __init__(
        self,
        detail: str | None = None,
        status_code: int = 401,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(status_code, detail, headers)


def _name_items(keys: Sequence[str]) -> str:
    if not keys:
        return "the document"
    return "item " + ", ".join(repr(k) for k in keys[:5]) + (" ..." if len(keys) > 5 else "")


def _too_large(keys: Sequence[str], reason: str) -> ValueError:
    return ValueError(
        f"{_name_items(keys)} would exceed MongoDB's 16 MiB document limit ({reason})"
    )


def _describe(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    # pymongo appends the whole topology to a selection timeout: one line must stay readable
    text = text.split(", Topology Description:")[0]
    return f"{type(exc).__name__}: {text}"


@contextmanager
def translate_driver_errors(keys: Sequence[str] = ()) -> Iterator[None]:
    """Run a driver call and turn any pymongo error into this package's errors.

    ``keys`` names the items the call writes, so a size error can say which one it was.
    """
    try:
        yield
    except (pymongo_errors.PyMongoError, InvalidDocument, InvalidBSON) as exc:
        raise translate(exc, keys) from exc


def translate(
    exc: pymongo_errors.PyMongoError | InvalidDocument | InvalidBSON, keys: Sequence[str] = ()
) -> Exception:
    """This package's error for a driver error; the caller raises it ``from exc``."""
    if isinstance(exc, pymongo_errors.ConnectionFailure):
        # ServerSelectionTimeoutError, AutoReconnect, NetworkTimeout, NotPrimaryError and
        # WaitQueueTimeoutError: the server is away, or failing over.
        return DataStoreUnavailable(f"database unavailable ({_describe(exc)})")
    if isinstance(exc, pymongo_errors.ConfigurationError) and _is_dns_failure(exc):
        # a mongodb+srv:// URI is resolved on first use; a failed lookup means unreachable
        return DataStoreUnavailable(f"cannot resolve the database's hosts ({_describe(exc)})")
    if isinstance(exc, pymongo_errors.ExecutionTimeout):
        return DataStoreUnavailable(f"database did not answer in time ({_describe(exc)})")
    if isinstance(exc, (pymongo_errors.WriteConcernError, pymongo_errors.WTimeoutError)):
        return DataStoreUnavailable(
            "the write was not confirmed by the requested write concern and may or may not "
            f"have been applied; repeating it is safe ({_describe(exc)})"
        )
    if isinstance(exc, pymongo_errors.DocumentTooLarge):
        return _too_large(keys, "refused by the driver")
    if isinstance(exc, pymongo_errors.BulkWriteError):
        return _translate_bulk(exc, keys)
    if isinstance(exc, pymongo_errors.OperationFailure):
        if exc.code in _DOCUMENT_TOO_LARGE_CODES:
            return _too_large(keys, "with the metadata already stored")
        if exc.code in _TRANSIENT_CODES or exc.has_error_label("RetryableWriteError"):
            return DataStoreUnavailable(f"database temporarily unavailable ({_describe(exc)})")
        return DataStoreError(f"the database refused the operation ({_describe(exc)})")
    if isinstance(exc, InvalidDocument):
        return ValueError(f"cannot encode {_name_items(keys)} for MongoDB ({exc})")
    if isinstance(exc, InvalidBSON):  # e.g. a date written by hand outside Python's range
        return DataStoreError(f"a stored document cannot be decoded ({_describe(exc)})")
    return DataStoreError(f"database driver error ({_describe(exc)})")


def _is_dns_failure(exc: BaseException) -> bool:
    # pymongo chains dnspython's error as the cause from 4.16; before it, it raised its
    # ConfigurationError "from None", which leaves the error as the context only
    cause = exc.__cause__ or exc.__context__
    return cause is not None and type(cause).__module__.split(".")[0] == "dns"


def _translate_bulk(exc: pymongo_errors.BulkWriteError, keys: Sequence[str]) -> Exception:
    details: Mapping[str, Any] = exc.details or {}
    write_errors: list[dict[str, Any]] = details.get("writeErrors") or []
    too_large = [
        keys[e["index"]]
        for e in write_errors
        if e.get("code") in _DOCUMENT_TOO_LARGE_CODES and e.get("index", len(keys)) < len(keys)
    ]
    if too_large:
        return _too_large(too_large, "with the metadata already stored")
    if not write_errors and details.get("writeConcernErrors"):
        return DataStoreUnavailable(
            "the batch was not confirmed by the requested write concern and may or may not "
            "have been applied; repeating it is safe"
        )
    first = write_errors[0] if write_errors else {}
    return DataStoreError(
        f"the database refused {len(write_errors)} of the batch's writes "
        f"(first: code {first.get('code')}, {first.get('errmsg', 'no message')})"
    )
