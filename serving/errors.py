"""OpenAI-shaped API errors: ``{"error": {"message", "type", "param", "code"}}`` with an HTTP status."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse


class APIError(Exception):
    """An error the client caused (or a documented server condition), returned as OpenAI error JSON."""

    def __init__(
        self,
        message: str,
        status_code: int = 400,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """The JSON body OpenAI's clients expect."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        """This error as a response."""
        return JSONResponse(self.body(), status_code=self.status_code, headers=self.headers)


def model_not_found(name: str) -> APIError:
    """404 for a model name the server does not serve."""
    return APIError(f"The model `{name}` does not exist.", 404, "invalid_request_error", "model",
                    "model_not_found")


def wrong_model_type(name: str, kind: str, route: str) -> APIError:
    """400 for a model asked for what it cannot do (embeddings from a chat model and the reverse)."""
    return APIError(f"The model `{name}` is {kind}: use {route} with it.", 400, "invalid_request_error", "model",
                    "model_not_supported")


def validation_message(errors: list[dict[str, Any]]) -> tuple[str, str | None]:
    """One OpenAI-style message (and the ``param`` it names) for pydantic's validation errors."""
    # A validator's own message says more than the union branches that failed before it ("should be a string").
    first = next((e for e in errors if e.get("type") == "value_error"), errors[0] if errors else {})
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    param = ".".join(loc) or None
    if first.get("type") == "extra_forbidden":
        return f"Unrecognized request argument supplied: {param}", param
    if first.get("type") == "json_invalid":
        return "We could not parse the JSON body of your request: it is not valid JSON.", None
    message = str(first.get("msg", "invalid request")).removeprefix("Value error, ")
    return (f"{param}: {message}" if param else message), param
