"""The Files API (OpenAI reference order): the file object, its list and the deletion answer."""

from __future__ import annotations

from typing import Literal

from serving.protocol.common import ResponseModel

FilePurpose = Literal["assistants", "batch", "fine-tune", "vision", "user_data", "evals"]
UPLOAD_PURPOSES: tuple[str, ...] = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
"""Purposes a client may upload with (``batch_output`` is the server's own)."""


class FileObject(ResponseModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    expires_at: int | None = None
    filename: str
    purpose: str
    """One of the upload purposes, or ``batch_output`` for a batch's output and error files."""
    status: Literal["uploaded", "processed", "error"] = "processed"
    status_details: str | None = None


class FileList(ResponseModel):
    object: Literal["list"] = "list"
    data: list[FileObject]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False


class FileDeleted(ResponseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool = True
