"""What the hub says on a call, as TwiML built with the SDK's ``VoiceResponse`` (pure).

Every document ends the call itself (``<Hangup/>``) or hands it on (``<Redirect>``), so no
caller is left in silence when an input times out. Nothing here reads the database: the
callers pass in the clinic's name, the script and the URLs Twilio should post to.
"""

from __future__ import annotations

import re

import phonenumbers
from twilio.twiml.voice_response import Gather, VoiceResponse

GATHER_TIMEOUT_S = 6
"""Seconds of silence after a prompt before Twilio gives up waiting for a key."""
DEFAULT_VOICEMAIL_MAX_S = 120
"""Longest voicemail: Twilio transcribes recordings of at most two minutes."""
RECORD_SILENCE_S = 5
"""Seconds of silence that end a voicemail."""
SPEECH_LANGUAGES = {"en": "en-US", "es": "es-MX"}
"""Patient language -> the ``language`` Twilio's text-to-speech reads it in."""

MENU_OPTIONS = (
    "To confirm or cancel an appointment, press 1. "
    "To leave a message for the care team, press 2. "
    "If this is an emergency, press 0."
)
PHRASES = {
    "en": {
        "opt_out": "To stop receiving calls from us, press 9.",
        "once_more": "Once more.",
        "no_answer": "We did not receive an answer. Thank you, and goodbye.",
        "goodbye": "Goodbye.",
    },
    "es": {
        "opt_out": "Para no recibir más llamadas nuestras, oprima 9.",
        "once_more": "Una vez más.",
        "no_answer": "No recibimos respuesta. Gracias, y hasta luego.",
        "goodbye": "Hasta luego.",
    },
}
"""What the call machinery says around a script, in the script's language."""
EMERGENCY = (
    "If this is a medical emergency, please hang up now and dial your local emergency number, "
    "such as 9 1 1."
)
KEYPRESS_ANSWERS = {
    "confirm": "Thank you. Your appointment is confirmed. Goodbye.",
    "cancel": (
        "Your appointment has been cancelled. Our team will be in touch to find a new time. "
        "Goodbye."
    ),
    "opt_out": "You will not receive any more calls from us. Goodbye.",
    "noted": "Thank you. Your answer has been passed to the care team. Goodbye.",
}
"""Said after a keypress when no template answers it in the patient's language."""


def say_language(patient_language: str | None) -> str | None:
    """The ``language`` attribute for text in the patient's language (None: Twilio's default)."""
    return SPEECH_LANGUAGES.get((patient_language or "").split("-")[0].lower())


def _phrase(key: str, language: str | None) -> str:
    table = PHRASES.get((language or "en").split("-")[0], PHRASES["en"])
    return table[key]


def _say(parent: VoiceResponse | Gather, text: str, language: str | None = None) -> None:
    if language:
        parent.say(text, language=language)
    else:
        parent.say(text)


def _gather(response: VoiceResponse, action: str) -> Gather:
    return response.gather(
        num_digits=1, action=action, method="POST", timeout=GATHER_TIMEOUT_S, input="dtmf"
    )


def ivr_menu(clinic_name: str, open_now: bool, *, gather_action: str, no_input: str) -> str:
    """The greeting and the menu, read twice; a caller who presses nothing is taken to
    ``no_input`` (the voicemail), since they may be unable to use the keypad."""
    greeting = f"Thank you for calling {clinic_name}."
    if not open_now:
        greeting += (
            " Our office is closed right now. You can leave a message and the care team will "
            "call you back when we reopen."
        )
    response = VoiceResponse()
    _say(_gather(response, gather_action), f"{greeting} {MENU_OPTIONS}")
    _say(_gather(response, gather_action), f"Once more. {MENU_OPTIONS}")
    response.redirect(no_input, method="POST")
    return str(response)


def emergency() -> str:
    response = VoiceResponse()
    _say(response, EMERGENCY)
    response.hangup()
    return str(response)


def _record(
    response: VoiceResponse, action: str, transcribe_callback: str, max_length_s: int
) -> None:
    _say(
        response,
        "Please leave your message for the care team after the tone. "
        "When you have finished, hang up or press the pound key.",
    )
    # The action answers the caller; the status callback (same URL) says when the file can
    # be fetched, which the action cannot promise.
    response.record(
        action=action,
        method="POST",
        max_length=max_length_s,
        timeout=RECORD_SILENCE_S,
        finish_on_key="#",
        play_beep=True,
        transcribe=True,
        transcribe_callback=transcribe_callback,
        recording_status_callback=action,
        recording_status_callback_method="POST",
        recording_status_callback_event="completed absent",
    )
    # Reached only when the recording was empty: Twilio then skips the action.
    _say(response, "We did not receive a message. Goodbye.")
    response.hangup()


def voicemail(
    *, action: str, transcribe_callback: str, max_length_s: int = DEFAULT_VOICEMAIL_MAX_S
) -> str:
    response = VoiceResponse()
    _record(response, action, transcribe_callback, max_length_s)
    return str(response)


def voicemail_saved() -> str:
    response = VoiceResponse()
    _say(response, "Thank you. Your message has been passed to the care team. Goodbye.")
    response.hangup()
    return str(response)


def appointment_menu(*, gather_action: str, no_input: str) -> str:
    """An inbound caller with an appointment waiting for confirmation. No date or place is
    read out: caller ID can be spoofed, and the patient has the reminder already."""
    prompt = (
        "You have an appointment waiting for your confirmation. "
        "To confirm it, press 1. To cancel it, press 2."
    )
    response = VoiceResponse()
    _say(_gather(response, gather_action), prompt)
    _say(_gather(response, gather_action), f"Once more. {prompt}")
    response.redirect(no_input, method="POST")
    return str(response)


def no_open_appointment(
    *, action: str, transcribe_callback: str, max_length_s: int = DEFAULT_VOICEMAIL_MAX_S
) -> str:
    """Nothing to confirm for this caller: say so, and take a message instead."""
    response = VoiceResponse()
    _say(
        response,
        "We could not find an appointment waiting for your confirmation from this number. "
        "The care team can help.",
    )
    _record(response, action, transcribe_callback, max_length_s)
    return str(response)


def reminder_call(script: str, *, gather_action: str, language: str | None = None) -> str:
    """An automated call: the script inside a one-key Gather (the script itself says what 1
    and 2 do), with the opt-out every automated call must offer. No key: the script once
    more, then a polite goodbye."""
    text = f"{script} {_phrase('opt_out', language)}"
    response = VoiceResponse()
    _say(_gather(response, gather_action), text, language)
    _say(_gather(response, gather_action), f"{_phrase('once_more', language)} {text}", language)
    _say(response, _phrase("no_answer", language), language)
    response.hangup()
    return str(response)


def spoken_message(script: str, *, language: str | None = None) -> str:
    """A message from a person at the clinic, read twice so it can be caught."""
    response = VoiceResponse()
    _say(response, script, language)
    response.pause(length=1)
    _say(response, f"{_phrase('once_more', language)} {script}", language)
    _say(response, _phrase("goodbye", language), language)
    response.hangup()
    return str(response)


def after_keypress(kind: str, spoken: str | None = None, *, language: str | None = None) -> str:
    """The answer to a keypress: ``spoken`` (the step's reply template, in the patient's
    language) or the built-in sentence for ``kind``."""
    response = VoiceResponse()
    if spoken:
        _say(response, spoken, language)
    else:
        _say(response, KEYPRESS_ANSWERS[kind])
    response.hangup()
    return str(response)


def speakable_number(number: str) -> str:
    """A phone number as text-to-speech reads it best: digit by digit, in its national groups
    ("+15550109999" -> "5 5 5, 0 1 0, 9 9 9 9")."""
    try:
        national = phonenumbers.format_number(
            phonenumbers.parse(number, None), phonenumbers.PhoneNumberFormat.NATIONAL
        )
    except phonenumbers.NumberParseException:
        national = number
    return ", ".join(" ".join(group) for group in re.findall(r"\d+", national))


def machine_message(clinic_name: str, callback_number: str | None) -> str:
    """Left on an answering machine, which anyone in the household may play: the clinic's
    name and a number to call back, nothing about the patient or the appointment."""
    back = (
        f"Please call us back at {speakable_number(callback_number)}."
        if callback_number
        else "Please call the clinic back."
    )
    response = VoiceResponse()
    _say(response, f"Hello, this is a message from {clinic_name}. {back} Thank you. Goodbye.")
    response.hangup()
    return str(response)


def unknown_input(redirect: str) -> str:
    response = VoiceResponse()
    _say(response, "Sorry, that is not one of the choices.")
    response.redirect(redirect, method="POST")
    return str(response)


def goodbye(text: str = "Thank you for calling. Goodbye.") -> str:
    response = VoiceResponse()
    _say(response, text)
    response.hangup()
    return str(response)


CANCEL_PIN_PROMPT = (
    "To cancel, please enter your date of birth: two digits for the month, then two for the "
    "day. For example, for March 7th, press 0 3 0 7."
)
PIN_ANSWERS = {
    "refused": (
        "That does not match our records, so nothing was cancelled. If you need to cancel, "
        "please call us during opening hours or reply to your reminder. Goodbye."
    ),
    "locked": (
        "We cannot take a cancellation by phone right now, so nothing was cancelled. "
        "The care team can help during opening hours. Goodbye."
    ),
    "no_birth_date": (
        "We cannot check your details by phone, so nothing was cancelled. "
        "The care team can help during opening hours. Goodbye."
    ),
    "unknown_caller": "Nothing was cancelled. The care team can help. Goodbye.",
}
"""Said when a cancellation PIN was not accepted (hub.inbox.actions.voice_pin outcomes)."""


def cancel_pin_prompt(*, gather_action: str) -> str:
    """Ask for the patient's month and day of birth before a cancellation (four keys, or
    fewer ended with #). No key: nothing is cancelled, and the caller is told so."""
    response = VoiceResponse()
    gather = response.gather(
        num_digits=4,
        finish_on_key="#",
        action=gather_action,
        method="POST",
        timeout=GATHER_TIMEOUT_S * 2,
        input="dtmf",
    )
    _say(gather, CANCEL_PIN_PROMPT)
    _say(response, "We did not receive an answer, so nothing was cancelled. Goodbye.")
    response.hangup()
    return str(response)


def pin_not_accepted(outcome: str) -> str:
    response = VoiceResponse()
    _say(response, PIN_ANSWERS.get(outcome, PIN_ANSWERS["refused"]))
    response.hangup()
    return str(response)
