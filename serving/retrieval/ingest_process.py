"""Text extraction in a child process with a time limit: a document that makes a parser loop, or eat memory
until the kernel kills it, fails with a reason instead of holding a thread (and memory) of the server.

The child is started with ``spawn`` (the server has threads; ``fork`` would copy their locks) and imports only
``serving.retrieval.ingest`` and the parsing libraries: about 0.1-0.3 s per document.
"""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

from serving.retrieval.ingest import extract_text
from serving.retrieval.ingest_base import IngestError, IngestLimits


def _child(conn: Any, path: str, filename: str, limits: IngestLimits) -> None:
    try:
        conn.send(("ok", extract_text(Path(path), filename, limits)))
    except IngestError as err:
        conn.send(("error", err.code, err.message))
    except BaseException as err:  # anything else is a reason too, never a crash
        conn.send(("error", "invalid_file", f"the document could not be read: {type(err).__name__}"))
    finally:
        conn.close()


def extract_isolated(path: Path, filename: str, limits: IngestLimits, timeout_s: float) -> str:
    """:func:`extract_text` in a child process; :class:`IngestError` when it fails, dies or runs past
    ``timeout_s`` (the child is killed)."""
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=_child, args=(sender, str(path), filename, limits), daemon=True,
                              name="nexus-k-ingest")
    process.start()
    sender.close()
    try:
        if not receiver.poll(timeout_s):
            raise IngestError(f"reading the document took longer than {timeout_s:g} s")
        try:
            message = receiver.recv()
        except EOFError:
            raise IngestError("the document reader stopped without an answer (out of memory?)") from None
    finally:
        if process.is_alive():
            process.kill()
        process.join(5)
        receiver.close()
    if message[0] == "ok":
        return message[1]
    raise IngestError(message[2], message[1])
