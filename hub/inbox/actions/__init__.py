"""Inbox actions (``do_*``): each opens one transaction, writes, audits PHI access by people,
records its side effects in the outbox, and commits. Split by flow to keep modules small."""

from hub.inbox.actions.delivery import (
    ClaimResult,
    QueuedMessage,
    SendTask,
    do_apply_status,
    do_claim_send,
    do_record_send_failure,
    do_record_sent,
    do_reply,
)
from hub.inbox.actions.intake import IntakeResult, Keyword, detect_keyword, do_receive_inbound
from hub.inbox.actions.media import do_fail_attachment, do_pending_attachment, do_store_attachment
from hub.inbox.actions.patients import (
    FIRST_RESPONSE_TARGETS,
    build_patient,
    do_add_staff_user,
    do_create_patient,
    do_ensure_team,
    do_find_patients_by_email,
    do_find_patients_by_phone,
    do_read_conversation,
    do_read_patient,
    do_record_inbound,
    view_patient,
)

__all__ = [
    "FIRST_RESPONSE_TARGETS",
    "ClaimResult",
    "IntakeResult",
    "Keyword",
    "QueuedMessage",
    "SendTask",
    "build_patient",
    "detect_keyword",
    "do_add_staff_user",
    "do_apply_status",
    "do_claim_send",
    "do_create_patient",
    "do_ensure_team",
    "do_fail_attachment",
    "do_find_patients_by_email",
    "do_find_patients_by_phone",
    "do_pending_attachment",
    "do_read_conversation",
    "do_read_patient",
    "do_receive_inbound",
    "do_record_inbound",
    "do_record_send_failure",
    "do_record_sent",
    "do_reply",
    "do_store_attachment",
    "view_patient",
]
