"""Protocol errors: one class per Tencent Cloud API error Code.

Every error the server returns to a client is an ``ApiError`` subclass whose ``code``
is the wire Code and whose docstring is the default message. Raising one anywhere in
the request path produces an HTTP 200 error envelope (see ``protocol/envelope.py``).

    ApiError
    ├── AuthFailure                       (the five AuthFailure.* codes of signature v3,
    │   ├── InvalidAuthorization            plus InvalidAuthorization)
    │   ├── InvalidSecretId
    │   ├── SecretIdNotFound
    │   ├── SignatureExpire
    │   ├── SignatureFailure
    │   └── TokenFailure
    ├── InvalidAction
    ├── NoSuchVersion
    ├── UnsupportedProtocol
    ├── UnsupportedOperation
    ├── MissingParameter
    ├── InvalidParameter
    │   ├── ModelNotSupported             (InvalidParameter.ModelNotSupported)
    │   └── ViolationContent              (InvalidParameter.ViolationContent)
    ├── FailedOperation                   (e.g. content review unavailable: fail closed)
    │   ├── TaskFinished                  (FailedOperation.TaskFinished: nothing left to cancel)
    │   └── TaskNotFinished               (FailedOperation.TaskNotFinished: cancel before deleting)
    ├── InvalidParameterValue
    ├── UnknownParameter
    ├── RequestSizeLimitExceeded
    ├── RequestLimitExceeded
    ├── CreateTaskLimitExceeded           (LimitExceeded.CreateTask)
    ├── TaskNotFound                      (ResourceNotFound.TaskNotFound)
    └── InternalError

This module knows nothing of HTTP: it only names what went wrong. The service's own errors
(aigc_image/errors.py) that a request can cause become one of these in ``from_task_error``.
"""

from __future__ import annotations

from aigc_image.errors import ContentRefused, NotSupported, TaskError, UnknownModel


class ApiError(Exception):
    """An error reported to the client as ``{"Error": {"Code", "Message"}}``."""

    code = "InternalError"

    def __init__(self, message: str | None = None, *, param: str | None = None) -> None:
        self.message = message or (self.__doc__ or self.code).strip()
        self.param = param  # the parameter at fault, where one is (e.g. "ExtraParameters.OutputFormat")
        super().__init__(self.message)


class AuthFailure(ApiError):
    """Authentication failed."""

    code = "AuthFailure"


class InvalidAuthorization(AuthFailure):
    """The Authorization header is missing or malformed."""

    code = "AuthFailure.InvalidAuthorization"


class InvalidSecretId(AuthFailure):
    """The SecretId is not a valid API key id."""

    code = "AuthFailure.InvalidSecretId"


class SecretIdNotFound(AuthFailure):
    """The SecretId does not exist or is disabled."""

    code = "AuthFailure.SecretIdNotFound"


class SignatureExpire(AuthFailure):
    """The request timestamp differs from server time by more than five minutes."""

    code = "AuthFailure.SignatureExpire"


class SignatureFailure(AuthFailure):
    """The provided credentials could not be validated. Please check your signature is correct."""

    code = "AuthFailure.SignatureFailure"


class TokenFailure(AuthFailure):
    """Temporary credentials (a security token) are not accepted by this server."""

    code = "AuthFailure.TokenFailure"


class InvalidAction(ApiError):
    """The requested action does not exist."""

    code = "InvalidAction"


class NoSuchVersion(ApiError):
    """The requested API version does not exist; use 2019-06-12."""

    code = "NoSuchVersion"


class UnsupportedProtocol(ApiError):
    """Only GET and POST requests are supported."""

    code = "UnsupportedProtocol"


class UnsupportedOperation(ApiError):
    """This operation is not supported by this server."""

    code = "UnsupportedOperation"


class MissingParameter(ApiError):
    """A required parameter is missing."""

    code = "MissingParameter"


class InvalidParameter(ApiError):
    """A parameter is malformed or has the wrong type."""

    code = "InvalidParameter"


class ModelNotSupported(InvalidParameter):
    """The requested model, or a feature of the request, is not supported by the model."""

    code = "InvalidParameter.ModelNotSupported"


class ViolationContent(InvalidParameter):
    """The content was refused by content review."""

    code = "InvalidParameter.ViolationContent"


class FailedOperation(ApiError):
    """The operation failed; nothing was created."""

    code = "FailedOperation"


class TaskFinished(FailedOperation):
    """The task has already finished; there is nothing to cancel."""

    code = "FailedOperation.TaskFinished"


class TaskNotFinished(FailedOperation):
    """The task is waiting or running; cancel it first (CancelAigcImageTask), then delete it."""

    code = "FailedOperation.TaskNotFinished"


class InvalidParameterValue(ApiError):
    """A parameter value is out of range or not allowed."""

    code = "InvalidParameterValue"


class UnknownParameter(ApiError):
    """The request contains a parameter this action does not define."""

    code = "UnknownParameter"


class RequestSizeLimitExceeded(ApiError):
    """The request is too large."""

    code = "RequestSizeLimitExceeded"


class CreateTaskLimitExceeded(ApiError):
    """This key has as many tasks waiting or running as it may; wait for some to finish."""

    code = "LimitExceeded.CreateTask"


class RequestLimitExceeded(ApiError):
    """Too many requests; slow down and retry."""

    code = "RequestLimitExceeded"


class TaskNotFound(ApiError):
    """The task does not exist."""

    code = "ResourceNotFound.TaskNotFound"


class InternalError(ApiError):
    """An internal error occurred; the request may be retried."""

    code = "InternalError"


def all_error_classes() -> list[type[ApiError]]:
    """Every concrete error class the server can return (used by the docs test)."""
    found: list[type[ApiError]] = []
    pending: list[type[ApiError]] = [ApiError]
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return [cls for cls in found if cls not in (ApiError, AuthFailure)]


def from_task_error(error: TaskError) -> ApiError:
    """The wire error for a domain error met while handling a request."""
    if isinstance(error, UnknownModel | NotSupported):
        return ModelNotSupported(str(error))
    if isinstance(error, ContentRefused):
        return ViolationContent(str(error))
    return FailedOperation(str(error))
