"""Email Message-IDs at rest: a blind index to look them up by, the original sealed.

A patient's mail client writes their address or machine name into its Message-IDs
("<1a2b.avery@example.org>"), so an inbound Message-ID, and any In-Reply-To or References value
compared with it, is PHI. Threading and idempotency need only equality, which a keyed HMAC of
the normalized id gives; the original is kept encrypted on the message because a reply must send
it back in In-Reply-To and References.

Message-IDs the hub makes itself ("<uuid@our-domain>", ``compose.make_message_id``) name a hub
message and our own domain, nothing of the patient's, so they stay in clear: bounces and
complaints find our mail by them, and a patient's reply threads by the uuid in them
(``compose.hub_message_id_of``) before any index is consulted.
"""

from __future__ import annotations

from hub.crypto import KeyRing
from hub.inbox.models import Message

INDEX_PREFIX = "mid:"
"""Marks a stored provider id as the blind index of a Message-ID (never a provider's own id)."""


def email_id_index(ring: KeyRing, message_id: str) -> str:
    """What is stored and compared for a Message-ID a patient's mail carried. ``message_id``
    is already normalized (``mime.normalize_message_id``: no brackets, no spaces)."""
    return INDEX_PREFIX + ring.blind_index("message_id", message_id).hex()


def email_id_of(ring: KeyRing, message: Message) -> str | None:
    """The Message-ID a mail in the thread had, to send back in References: the sealed
    original for inbound mail, the stored value for ours."""
    if message.provider_message_id_enc is not None:
        return message.unseal(ring, "provider_message_id")
    return message.provider_message_id
