"""Template tables. Template text is clinic configuration, not PHI: it is stored in clear.

A template is a key ("appointment_reminder") with the consent purpose its sends fall under; a
variant is its text for one channel in one locale. Seeded rows come from the files under
``hub/templates/seed``; ``edited_at`` marks a variant a clinic has changed, which seeding then
never touches.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from hub.consent.models import Purpose
from hub.db import Base, new_id, utcnow
from hub.enums import Channel, str_enum


class MessageTemplate(Base):
    __tablename__ = "template_template"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    key: Mapped[str] = mapped_column(String(80), unique=True)
    purpose: Mapped[Purpose] = mapped_column(str_enum(Purpose, "purpose"))
    """The consent purpose a send of this template is checked against."""
    description: Mapped[str] = mapped_column(String(200), default="", server_default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    variants: Mapped[list[TemplateVariant]] = relationship(
        back_populates="template",
        lazy="selectin",
        cascade="all, delete-orphan",
        order_by="[TemplateVariant.channel, TemplateVariant.locale]",
    )


class TemplateVariant(Base):
    __tablename__ = "template_variant"
    __table_args__ = (UniqueConstraint("template_id", "channel", "locale"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    template_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("template_template.id", ondelete="CASCADE")
    )
    channel: Mapped[Channel] = mapped_column(str_enum(Channel, "channel"))
    locale: Mapped[str] = mapped_column(String(16))
    """A BCP 47 tag: "en", "es", "pt-BR"."""
    subject: Mapped[str | None] = mapped_column(Text)
    """Email only."""
    body: Mapped[str] = mapped_column(Text, default="", server_default="")
    """The SMS, chat or email text, or the voice script."""
    html: Mapped[str | None] = mapped_column(Text)
    """Email only; optional (the text body is always sent too)."""
    edited_at: Mapped[datetime | None]
    """When a person last changed this variant; None while it is the shipped seed text."""
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    template: Mapped[MessageTemplate] = relationship(back_populates="variants")
