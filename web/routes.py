"""One flat, named route table."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from web import (
    account,
    admin,
    admin_phone,
    admin_routing,
    admin_security,
    admin_templates,
    api,
    chat,
    compose,
    email,
    handling,
    health,
    journey_builder,
    journey_launch,
    journey_versions_api,
    journeys,
    mentions,
    openapi,
    pages,
    patient_rights,
    patients,
    reports,
    reports_api,
    sign_in_code,
    voice,
    webhooks,
    workspace,
)

STATIC = Path(__file__).resolve().parent / "static"


def setup_routes(app: web.Application) -> None:
    app.router.add_routes(
        [
            web.get("/healthz", health.healthz, name="healthz"),
            web.get("/metrics", health.metrics, name="metrics"),
            web.post("/webhooks/twilio/sms", webhooks.twilio_sms, name="twilio_sms"),
            web.post("/webhooks/twilio/status", webhooks.twilio_status, name="twilio_status"),
            web.post("/webhooks/twilio/voice", voice.incoming_call, name="twilio_voice"),
            web.post("/webhooks/twilio/voice/gather", voice.gather, name="twilio_voice_gather"),
            web.post(
                "/webhooks/twilio/voice/outbound", voice.outbound_call, name="twilio_voice_outbound"
            ),
            web.post(
                "/webhooks/twilio/voice/recording", voice.recording, name="twilio_voice_recording"
            ),
            web.post(
                "/webhooks/twilio/voice/transcription",
                voice.transcription,
                name="twilio_voice_transcription",
            ),
            web.post(
                "/webhooks/twilio/voice/status", voice.call_status, name="twilio_voice_status"
            ),
            web.post("/webhooks/email/inbound", email.inbound_webhook, name="email_inbound"),
            web.get("/unsubscribe/{token}", email.unsubscribe_page, name="unsubscribe_page"),
            web.post("/unsubscribe/{token}", email.unsubscribe, name="unsubscribe"),
            # staff UI
            web.get("/login", pages.login_form, name="login_form"),
            web.post("/login", pages.login, name="login"),
            web.get("/login/code", sign_in_code.code_form, name="login_code_form"),
            web.post("/login/code", sign_in_code.submit_code, name="login_code"),
            web.post("/logout", pages.logout, name="logout"),
            web.get("/password", pages.password_form, name="password_form"),
            web.post("/password", pages.change_password, name="change_password"),
            *workspace.routes(),
            *handling.routes(),
            *admin_templates.routes(),
            *admin_routing.routes(),
            web.get("/admin/phone", admin_phone.phone_page, name="admin_phone"),
            web.post("/admin/phone", admin_phone.save_phone, name="admin_save_phone"),
            web.get("/attachments/{id}", pages.attachment, name="attachment"),
            # admin
            web.get("/admin/staff", admin.staff_page, name="admin_staff"),
            web.post("/admin/staff", admin.add_staff, name="admin_add_staff"),
            web.post("/admin/staff/{action}", admin.staff_action, name="admin_staff_action"),
            web.get("/admin/teams", admin.teams_page, name="admin_teams"),
            web.post("/admin/teams", admin.save_team, name="admin_save_team"),
            web.get("/admin/canned", admin.canned_page, name="admin_canned"),
            web.post("/admin/canned", admin.save_canned, name="admin_save_canned"),
            *journeys.routes(),
            *patients.routes(),
            *account.routes(),
            *mentions.routes(),
            *admin_security.routes(),
            *journey_launch.routes(),
            *journey_builder.routes(),
            *journey_versions_api.routes(),
            *reports.routes(),
            *reports_api.routes(),
            # REST API
            web.get("/api/openapi.json", openapi.openapi, name="api_openapi"),
            *compose.routes(),
            web.get("/chat/{token}", chat.chat_page, name="chat_page"),
            web.post("/conversations/{id}/chat-invite", chat.send_chat_invite, name="chat_invite"),
            web.get("/api/me", api.me, name="api_me"),
            web.get("/api/conversations", api.list_conversations, name="api_conversations"),
            web.post("/api/conversations/claim-next", api.claim_next, name="api_claim_next"),
            web.get("/api/conversations/{id}", api.get_conversation, name="api_conversation"),
            web.post("/api/conversations/{id}/messages", compose.post_message, name="api_reply"),
            web.post("/api/conversations/{id}/notes", api.post_note, name="api_note"),
            web.post("/api/conversations/{id}/status", api.post_status, name="api_status"),
            web.post("/api/conversations/{id}/priority", api.post_priority, name="api_priority"),
            web.post("/api/conversations/{id}/assign", api.post_assign, name="api_assign"),
            web.get(
                "/api/patients/{id}/consents.fhir", api.export_consents, name="api_consents_fhir"
            ),
            *patient_rights.routes(),
            web.get("/api/canned-responses", api.list_canned, name="api_canned"),
            web.get("/api/templates", api.list_templates, name="api_templates"),
            web.put(
                "/api/templates/{key}/{channel}/{locale}",
                api.put_template_variant,
                name="api_template_variant",
            ),
            web.get(
                "/api/canned-responses/{id}/render", api.render_canned, name="api_canned_render"
            ),
            web.static("/static/", STATIC, name="static", append_version=False),
        ]
    )
