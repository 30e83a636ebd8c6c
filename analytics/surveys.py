"""The post-call survey: one answer per call, kept with the call's agent and queue."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from talk.models import CallRecord, Queue, SurveyAnswer


class SurveyError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class SurveyForm:
    call_id: str
    site_id: int
    answered: bool
    rating_question: str | None
    comment_question: str | None


async def survey_form(db: AsyncSession, call_id: str) -> SurveyForm:
    row = (await db.execute(
        select(CallRecord, Queue).join(Queue, Queue.id == CallRecord.queue_id).where(CallRecord.id == call_id)
    )).first()
    if row is None or row.CallRecord.answered_at is None:
        raise SurveyError("not_found", "no connected call with this id")
    answered = await db.get(SurveyAnswer, call_id) is not None
    return SurveyForm(call_id, row.CallRecord.site_id, answered, row.Queue.survey_rating_question,
                      row.Queue.survey_comment_question)


async def submit_survey(db: AsyncSession, call_id: str, rating: int, comment: str | None, now: datetime) -> None:
    call = await db.get(CallRecord, call_id)
    if call is None or call.answered_at is None:
        raise SurveyError("not_found", "no connected call with this id")
    if await db.get(SurveyAnswer, call_id) is not None:
        raise SurveyError("conflict", "this call's survey was already answered")
    db.add(SurveyAnswer(call_id=call_id, queue_id=call.queue_id, agent_id=call.agent_id, rating=rating,
                        comment=(comment or "").strip() or None, created_at=now))
    try:
        await db.flush()
    except IntegrityError:  # two answers racing: the first one wins
        raise SurveyError("conflict", "this call's survey was already answered") from None
