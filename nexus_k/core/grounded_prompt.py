"""The user turn of a grounded question: numbered sources the model answers from and cites as ``[n]``.

One format for the server's ``file_search`` tool (``serving.handlers.file_search``) and for the training data
that teaches the demo model to answer from it (``training.rag_data``), so the model is trained on exactly the
prompt it is served.
"""

from __future__ import annotations

from collections.abc import Sequence

SOURCES_INTRO = ("다음은 질문과 관련하여 검색된 자료입니다. 자료에 근거하여 답하고, 근거로 쓴 자료의 번호를 [1]처럼 "
                 "문장 끝에 표시하세요. 자료에 없는 내용이면 모른다고 답하세요.")
"""The instruction before the sources."""
QUESTION_LABEL = "질문: "
"""What precedes the user's question after the sources."""


def sources_prompt(question: str, sources: Sequence[tuple[str, str]]) -> str:
    """The user turn for ``question`` with ``sources`` as (filename, text) pairs numbered from 1 in order."""
    listing = "\n\n".join(f"[{n}] ({filename})\n{text}" for n, (filename, text) in enumerate(sources, start=1))
    return f"{SOURCES_INTRO}\n\n{listing}\n\n{QUESTION_LABEL}{question}"
