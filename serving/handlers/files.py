"""``/v1/files``: uploads streamed to disk as they arrive (never whole in memory), list, retrieve, content,
delete. Every lookup is scoped to the caller's organisation: another organisation's file answers 404."""

from __future__ import annotations

from typing import IO, Any

from anyio import to_thread
from fastapi import Request
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from serving.errors import APIError
from serving.protocol.files import UPLOAD_PURPOSES, FileList, FileObject
from serving.state import ServerState
from serving.storage.batches import batch_store
from serving.storage.files import FileRecord, FileStore, file_store
from serving.usage import UsageRecord

MAX_FIELD_BYTES = 65_536
"""Largest plain form field (``purpose``) accepted beside the file."""


def store_of(state: ServerState) -> FileStore:
    """The server's file store."""
    return file_store(state.settings.database_url, state.settings.data_dir)


def file_object(record: FileRecord) -> FileObject:
    """A stored file as the API shows it."""
    return FileObject(id=record.id, bytes=record.bytes, created_at=int(record.created_at.timestamp()),
                      filename=record.filename, purpose=record.purpose)


def not_found(file_id: str) -> APIError:
    """404 for a file that does not exist or belongs to another organisation."""
    return APIError(f"No such File object: {file_id}", 404, "invalid_request_error", "id", "file_not_found")


def _malformed(err: FormParserError) -> APIError:
    return APIError(f"The upload is not valid multipart/form-data: {err}", 400, code="invalid_multipart")


class UploadParser:
    """A multipart/form-data body fed chunk by chunk: the ``file`` part goes to ``out``, fields to memory."""

    def __init__(self, boundary: bytes, out: IO[bytes]) -> None:
        self.out = out
        self.fields: dict[str, str] = {}
        self.filename: str | None = None
        self.files = 0
        self._header_name = b""
        self._header_value = b""
        self._disposition = b""
        self._field: bytearray | None = None
        self._name = ""
        callbacks: Any = {
            "on_part_begin": self._part_begin, "on_header_field": self._header_field,
            "on_header_value": self._header_value_part, "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished, "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }
        self.parser = MultipartParser(boundary, callbacks)

    def write(self, chunk: bytes) -> None:
        """Parse the next piece of the body (a malformed one is a 400)."""
        try:
            self.parser.write(chunk)
        except FormParserError as err:
            raise _malformed(err) from None

    def finish(self) -> None:
        """The body has ended."""
        try:
            self.parser.finalize()
        except FormParserError as err:
            raise _malformed(err) from None

    def _part_begin(self) -> None:
        self._disposition, self._field, self._name = b"", None, ""

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _header_value_part(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        if self._header_name.lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_name, self._header_value = b"", b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        self._name = options.get(b"name", b"").decode("utf-8", "replace")
        if self._name == "file" and b"filename" in options:
            self.files += 1
            if self.files > 1:
                raise APIError("Send exactly one `file` part.", 400, param="file")
            self.filename = options[b"filename"].decode("utf-8", "replace") or "upload"
        else:
            self._field = bytearray()

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._field is None:
            self.out.write(data[start:end])
            return
        self._field += data[start:end]
        if len(self._field) > MAX_FIELD_BYTES:
            raise APIError(f"Form field {self._name!r} is longer than {MAX_FIELD_BYTES} bytes.", 400,
                           param=self._name)

    def _part_end(self) -> None:
        if self._field is not None and self._name:
            self.fields[self._name] = self._field.decode("utf-8", "replace")
        self._field = None


def check_purpose(purpose: str | None) -> str:
    """The upload's purpose, or OpenAI's 400 for a missing or unknown one."""
    if purpose is None:
        raise APIError("Missing required parameter: 'purpose'.", 400, param="purpose",
                       code="missing_required_parameter")
    if purpose not in UPLOAD_PURPOSES:
        raise APIError(f"{purpose!r} is not one of {list(UPLOAD_PURPOSES)} - 'purpose'", 400, param="purpose",
                       code="invalid_value")
    return purpose


async def create_file(request: Request, state: ServerState, usage: UsageRecord, owner: int | None) -> FileObject:
    """Stream a multipart upload into a new file owned by ``owner`` (the body size is capped by the security
    layer, which answers 413 beyond ``max_file_bytes``)."""
    usage.start("files", None, None)
    kind, options = parse_options_header(request.headers.get("content-type", ""))
    if kind != b"multipart/form-data" or not options.get(b"boundary"):
        raise APIError("Upload the file as multipart/form-data with a `file` and a `purpose` field.", 400)
    store = store_of(state)
    pending = store.begin()
    try:
        with pending.partial.open("wb") as out:
            parser = UploadParser(options[b"boundary"], out)
            async for chunk in request.stream():
                if chunk:
                    await to_thread.run_sync(parser.write, chunk)
            parser.finish()
        if parser.filename is None:
            raise APIError("Missing required parameter: 'file'.", 400, param="file", code="missing_required_parameter")
        purpose = check_purpose(parser.fields.get("purpose"))
        record = await to_thread.run_sync(store.commit, pending, owner, parser.filename, purpose)
    except BaseException:
        store.discard(pending)
        raise
    usage.resources.append(record.id)
    return file_object(record)


async def owned_file(state: ServerState, file_id: str, owner: int | None, usage: UsageRecord) -> FileRecord:
    """The caller's file ``file_id``, or 404."""
    usage.start("files", None, None)
    usage.resources.append(file_id)
    record = await to_thread.run_sync(store_of(state).get, file_id, owner)
    if record is None:
        raise not_found(file_id)
    return record


async def list_files(state: ServerState, owner: int | None, purpose: str | None, limit: int, after: str | None,
                     order: str, usage: UsageRecord) -> FileList:
    """A page of the caller's files."""
    usage.start("files", None, None)
    rows, more = await to_thread.run_sync(store_of(state).page, owner, purpose, limit, after, order)
    data = [file_object(r) for r in rows]
    return FileList(data=data, has_more=more, first_id=data[0].id if data else None,
                    last_id=data[-1].id if data else None)


async def delete_file(state: ServerState, file_id: str, owner: int | None, usage: UsageRecord) -> None:
    """Delete the caller's file, unless a batch that has not ended reads it (409)."""
    record = await owned_file(state, file_id, owner, usage)
    if await to_thread.run_sync(batch_store(state.settings.database_url).file_in_use, file_id):
        raise APIError(f"File {file_id} is the input of a batch in progress; cancel the batch or wait for it to end.",
                       409, "invalid_request_error", "file_id", "file_in_use")
    await to_thread.run_sync(store_of(state).delete, record)
