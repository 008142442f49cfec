"""Synthetic office documents (규정, 지침, 안내) for ``training.rag_data``: the register agencies upload.

KoBEST BoolQ teaches yes/no and KoBBQ teaches naming a person; neither asks "how many days / how much / by
when" of a regulation, so a model trained on them alone answers such questions with "not in the sources".
Here each document is four to seven numbered articles (``제n조(제목) ...``) drawn from ``ARTICLES`` with random
numbers, so a question can only be answered by copying the number from the passage, never from memory.
Negatives ask about an article the document does not contain: the same register, told apart by content.

The articles are written for this project (no outside text). Sick leave (병가) is deliberately not among them:
the web UI's screenshot and its live check ask about it, so they test a topic the model never trained on.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from training.rag_sources import GroundedItem


@dataclass(frozen=True)
class Article:
    """One article kind: its title, its text and answer with ``{n}`` (and ``{m}``) for random numbers."""

    title: str
    text: str
    questions: tuple[str, ...]
    answer: str
    n: tuple[int, int]
    m: tuple[int, int] = (0, 0)


ARTICLES: tuple[Article, ...] = (
    Article("연차휴가",
            "직원은 1년간 80퍼센트 이상 출근한 경우 {n}일의 연차휴가를 받는다.",
            ("연차휴가는 며칠인가요?", "1년에 연차를 며칠 쓸 수 있나요?"),
            "연차휴가는 {n}일입니다.", (11, 25)),
    Article("공가",
            "직원이 병역검사나 투표 등 공적인 일로 근무할 수 없을 때에는 필요한 기간 중 최대 {n}일의 공가를 받는다.",
            ("공가는 최대 며칠인가요?", "투표 때문에 받을 수 있는 공가는 며칠까지인가요?"),
            "공가는 최대 {n}일까지 받을 수 있습니다.", (1, 5)),
    Article("경조사휴가",
            "본인이 결혼하는 경우 {n}일, 자녀가 결혼하는 경우 {m}일의 경조사휴가를 받는다.",
            ("본인 결혼 때 경조사휴가는 며칠인가요?", "결혼하면 휴가를 며칠 받나요?"),
            "본인이 결혼하는 경우 {n}일입니다.", (3, 7), (1, 2)),
    Article("출산휴가",
            "임신 중인 직원은 출산 전후를 합하여 {n}일의 출산휴가를 받으며, 출산 후에 {m}일 이상이 되도록 한다.",
            ("출산휴가는 며칠인가요?", "출산 전후 휴가 기간은 얼마나 되나요?"),
            "출산휴가는 출산 전후를 합하여 {n}일입니다.", (60, 120), (30, 59)),
    Article("근무시간",
            "직원의 근무시간은 오전 {n}시부터 오후 {m}시까지로 하며, 점심시간은 1시간으로 한다.",
            ("근무는 몇 시에 시작하나요?", "출근 시간은 언제인가요?"),
            "근무시간은 오전 {n}시부터 오후 {m}시까지입니다.", (7, 10), (4, 7)),
    Article("유연근무",
            "유연근무를 하려는 직원은 시작하기 {n}일 전까지 부서장에게 신청하여야 한다.",
            ("유연근무는 언제까지 신청해야 하나요?", "유연근무 신청 기한은 어떻게 되나요?"),
            "유연근무는 시작하기 {n}일 전까지 부서장에게 신청해야 합니다.", (2, 14)),
    Article("출장비",
            "국내 출장의 일비는 하루 {n}만 원, 숙박비는 하룻밤 {m}만 원 이내에서 실비로 지급한다.",
            ("출장 숙박비는 얼마까지 나오나요?", "국내 출장 숙박비 한도는 얼마인가요?"),
            "숙박비는 하룻밤 {m}만 원 이내에서 실비로 지급합니다.", (2, 5), (6, 15)),
    Article("출장 보고",
            "출장을 마친 직원은 돌아온 날부터 {n}일 이내에 출장 결과를 보고하여야 한다.",
            ("출장 보고서는 언제까지 내야 하나요?", "출장 결과 보고 기한은요?"),
            "돌아온 날부터 {n}일 이내에 보고해야 합니다.", (3, 10)),
    Article("교육훈련",
            "직원은 매년 {n}시간 이상의 직무 교육을 이수하여야 한다.",
            ("1년에 교육을 몇 시간 받아야 하나요?", "직무 교육 이수 시간은 얼마인가요?"),
            "매년 {n}시간 이상의 직무 교육을 이수해야 합니다.", (20, 100)),
    Article("비밀번호",
            "업무용 컴퓨터의 비밀번호는 {n}자 이상으로 하고 {m}일마다 바꾸어야 한다.",
            ("비밀번호는 며칠마다 바꿔야 하나요?", "컴퓨터 비밀번호 변경 주기는 어떻게 되나요?"),
            "비밀번호는 {m}일마다 바꿔야 합니다.", (8, 12), (30, 180)),
    Article("민원 처리",
            "접수된 민원은 접수한 날부터 {n}일 이내에 처리하고 그 결과를 민원인에게 알려야 한다.",
            ("민원은 며칠 안에 처리해야 하나요?", "민원 처리 기한은 얼마인가요?"),
            "민원은 접수한 날부터 {n}일 이내에 처리해야 합니다.", (3, 30)),
    Article("회의실 사용",
            "회의실은 사용하기 {n}일 전까지 예약하여야 하며, 한 번에 {m}시간까지 사용할 수 있다.",
            ("회의실은 한 번에 몇 시간 쓸 수 있나요?", "회의실 사용 시간 제한이 있나요?"),
            "회의실은 한 번에 {m}시간까지 사용할 수 있습니다.", (1, 7), (2, 4)),
    Article("문서 보존",
            "업무 문서는 생산한 해의 다음 해부터 {n}년간 보존한다.",
            ("업무 문서는 몇 년 동안 보관하나요?", "문서 보존 기간은 얼마인가요?"),
            "업무 문서는 {n}년간 보존합니다.", (3, 30)),
    Article("당직",
            "당직 근무를 한 직원에게는 다음 날 {n}시간의 휴식을 주고 당직비 {m}만 원을 지급한다.",
            ("당직비는 얼마인가요?", "당직을 서면 수당이 얼마나 나오나요?"),
            "당직비는 {m}만 원입니다.", (4, 8), (3, 10)),
    Article("육아시간",
            "만 {n}세 이하의 자녀가 있는 직원은 하루 {m}시간의 육아시간을 쓸 수 있다.",
            ("육아시간은 하루에 몇 시간인가요?", "자녀가 있으면 하루에 얼마나 육아시간을 쓸 수 있나요?"),
            "하루 {m}시간의 육아시간을 쓸 수 있습니다.", (5, 8), (1, 2)),
    Article("포상",
            "우수 직원으로 선정된 사람에게는 포상금 {n}만 원과 {m}일의 포상휴가를 준다.",
            ("우수 직원 포상금은 얼마인가요?", "우수 직원이 되면 상금이 얼마인가요?"),
            "포상금은 {n}만 원입니다.", (10, 100), (1, 5)),
    Article("겸직",
            "직원이 다른 직무를 겸하려면 시작하기 {n}일 전까지 기관장의 허가를 받아야 한다.",
            ("겸직 허가는 언제까지 받아야 하나요?", "다른 일을 겸하려면 어떻게 해야 하나요?"),
            "시작하기 {n}일 전까지 기관장의 허가를 받아야 합니다.", (7, 30)),
    Article("초과근무",
            "초과근무는 하루 {n}시간, 한 달 {m}시간을 넘을 수 없다.",
            ("한 달에 초과근무는 몇 시간까지 할 수 있나요?", "월 초과근무 한도는 얼마인가요?"),
            "초과근무는 한 달 {m}시간을 넘을 수 없습니다.", (2, 4), (30, 57)),
)
"""The article kinds a synthetic document draws from."""

_DOCUMENT_TITLES = ("복무 지침", "인사 규정", "업무 처리 지침", "직원 안내", "운영 규정", "근무 규칙")


def _numbers(article: Article, rng: random.Random) -> dict[str, int]:
    return {"n": rng.randint(*article.n), "m": rng.randint(*article.m)}


def office_items(count: int, negatives: int, seed: int) -> list[GroundedItem]:
    """``count`` answerable and ``negatives`` unanswerable items (``holds_answer=False``), one document each."""
    rng = random.Random(seed)
    items = []
    for index in range(count + negatives):
        chosen = rng.sample(ARTICLES, rng.randint(5, 8))
        asked = chosen[0]
        shown = chosen[1:] if index >= count else chosen[:-1]  # a negative never shows the article it asks
        rng.shuffle(shown)
        lines, numbers = [rng.choice(_DOCUMENT_TITLES)], {}
        for number, article in enumerate(shown, start=1):
            numbers[article.title] = _numbers(article, rng)
            lines.append(f"제{number}조({article.title}) " + article.text.format(**numbers[article.title]))
        answer = asked.answer.format(**numbers[asked.title]) if asked.title in numbers else ""
        items.append(GroundedItem(source="office", group=f"office-{seed}-{index}", passage="\n".join(lines),
                                  question=rng.choice(asked.questions), answer=answer,
                                  holds_answer=index < count))
    return items
