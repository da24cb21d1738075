"""Template SQL. Callers own the session and the transaction."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.enums import Channel
from hub.templates.models import MessageTemplate, TemplateVariant


async def all_templates(session: AsyncSession) -> Sequence[MessageTemplate]:
    """Every template by key, variants loaded."""
    return (await session.scalars(select(MessageTemplate).order_by(MessageTemplate.key))).all()


async def template_by_key(
    session: AsyncSession, key: str, *, for_update: bool = False
) -> MessageTemplate | None:
    stmt = select(MessageTemplate).where(MessageTemplate.key == key)
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.scalars(stmt)).first()


async def variants_in(
    session: AsyncSession, key: str, channel: Channel, locales: Sequence[str]
) -> Sequence[TemplateVariant]:
    """The template's variants for one channel in any of ``locales`` (order not kept)."""
    stmt = (
        select(TemplateVariant)
        .join(MessageTemplate, MessageTemplate.id == TemplateVariant.template_id)
        .where(
            MessageTemplate.key == key,
            TemplateVariant.channel == channel,
            TemplateVariant.locale.in_(list(locales)),
        )
    )
    return (await session.scalars(stmt)).all()


async def variant_for_update(
    session: AsyncSession, template: MessageTemplate, channel: Channel, locale: str
) -> TemplateVariant | None:
    stmt = (
        select(TemplateVariant)
        .where(
            TemplateVariant.template_id == template.id,
            TemplateVariant.channel == channel,
            TemplateVariant.locale == locale,
        )
        .with_for_update()
    )
    return (await session.scalars(stmt)).first()


async def variants_of_locale(
    session: AsyncSession, template: MessageTemplate, locale: str
) -> Sequence[TemplateVariant]:
    """The template's variants in one locale, every channel, locked for a change."""
    stmt = (
        select(TemplateVariant)
        .where(TemplateVariant.template_id == template.id, TemplateVariant.locale == locale)
        .with_for_update()
    )
    return (await session.scalars(stmt)).all()
