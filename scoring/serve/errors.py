"""What a request can get wrong, and the status each protocol answers it with.

Every dialect (the original API, MLflow's, the Open Inference Protocol; HTTP and gRPC) raises these,
and the HTTP app and the gRPC servicers map them to a status in one place each. Messages name the field
and the reason, never a value from the request.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence

from scoring.model.rows import RowProblem

log = logging.getLogger(__name__)

# At most this many bad records are listed in one error; the count says how many there were.
LISTED_PROBLEMS = 20


class RequestError(Exception):
    """A request the service refuses; ``http_status`` and ``grpc_code`` say how it answers."""

    http_status = 400
    grpc_code = "INVALID_ARGUMENT"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_json(self) -> dict:
        """The error body of the original API."""
        return {"error": self.message}


class BadRequest(RequestError):
    """The body is not JSON, or not in the dialect's shape."""


class InvalidRecords(RequestError):
    """Records fail the batch quarantine's row checks: 422, with the batch job's reason codes."""

    http_status = 422

    def __init__(self, problems: Sequence[RowProblem]) -> None:
        listed = "; ".join(p.describe() for p in problems[:LISTED_PROBLEMS])
        more = f"; and {len(problems) - LISTED_PROBLEMS} more" if len(problems) > LISTED_PROBLEMS else ""
        super().__init__(f"{len(problems)} record(s) cannot be scored: {listed}{more}")
        self.problems = list(problems)

    def to_json(self) -> dict:
        """The message and, per bad record, its position, field and reason code."""
        return {
            "error": self.message,
            "rejects": [
                {"record": p.row, "field": p.field, "reason": p.code, "reject_reason": p.reason}
                for p in self.problems[:LISTED_PROBLEMS]
            ],
            "rejected": len(self.problems),
        }


class TooLarge(RequestError):
    """The body or the number of records is over the configured limit."""

    http_status = 413
    grpc_code = "RESOURCE_EXHAUSTED"


class UnsupportedMediaType(RequestError):
    """A body in a content type (or an extension of the protocol) this server does not read."""

    http_status = 415


class Unauthorized(RequestError):
    """The API key is missing or wrong."""

    http_status = 401
    grpc_code = "UNAUTHENTICATED"


class NotFound(RequestError):
    """The request names a model this server does not serve."""

    http_status = 404
    grpc_code = "NOT_FOUND"


class NotConfigured(RequestError):
    """The request needs what this server was not started with (an ensemble, an A/B split)."""

    http_status = 404
    grpc_code = "FAILED_PRECONDITION"


class ModelFailed(RequestError):
    """The model raised while scoring valid records; the input is not repeated."""

    http_status = 500
    grpc_code = "INTERNAL"


class NotReady(RequestError):
    """No model is loaded yet."""

    http_status = 503
    grpc_code = "UNAVAILABLE"


class Overloaded(RequestError):
    """The worker holds as many requests as it queues (``max_queue``): refused at once, to retry later."""

    http_status = 503
    grpc_code = "RESOURCE_EXHAUSTED"

    # Seconds a client should wait before it retries (HTTP ``Retry-After``).
    retry_after_s = 1


@contextlib.contextmanager
def malformed_is_bad_request() -> Iterator[None]:
    """Around parsing and checking a request: what trips it in a way the parsers do not name is a 400.

    The parsers name what they expect (``BadRequest``); should a request get past them malformed in a
    way they did not foresee, the fault is still the request's: a 400 (``INVALID_ARGUMENT``), never a
    500 that alerts the server's owner and makes clients retry. Logged with the error's type only: its
    message could quote the request's values.

    Raises:
        BadRequest: For a ``TypeError``, ``ValueError``, ``KeyError``, ``IndexError``,
            ``AttributeError``, ``OverflowError`` or ``RecursionError`` raised inside.
    """
    try:
        yield
    except RequestError:
        raise
    except (TypeError, ValueError, KeyError, IndexError, AttributeError, OverflowError, RecursionError) as e:
        log.warning("a malformed request got past the parsers: %s", type(e).__name__)
        raise BadRequest("request: not in the shape this route takes (see /docs)") from e
