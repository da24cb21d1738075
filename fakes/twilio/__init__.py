"""A local stand-in for Twilio's Programmable Messaging REST API and its webhooks.

It speaks the real wire protocol, so the real ``twilio`` SDK runs against it unchanged::

    fake = FakeTwilio("AC" + "a" * 32, "token")
    runner, base_url = await start_fake_twilio(fake)
    client = Client(fake.account_sid, fake.auth_token, http_client=AsyncTwilioHttpClient())
    client.api.base_url = base_url
    msg = await client.messages.create_async(to=..., from_=..., body=..., status_callback=url)
    await fake.wait_for(lambda f: len(f.callbacks) == 2)
    await runner.cleanup()  # cancels pending callbacks, closes the callback session

What it serves (all paths need HTTP Basic auth AccountSid:AuthToken, else 401 code 20003):

- ``POST /2010-04-01/Accounts/{AccountSid}/Messages.json``: create. 400 with 21604 (no To),
  21211 (To not E.164), 21603 (neither From nor MessagingServiceSid), 21602 (no Body, MediaUrl
  or ContentSid). Answers 201 with the Message resource: status ``queued``, or ``accepted`` when
  sent through a Messaging Service, as Twilio does. Sids start with MM when media is attached.
- ``GET .../Messages.json``: the list, newest first, shaped like Twilio's (``messages``,
  ``next_page_uri``, ...). Filters ``To``, ``From``, ``DateSent`` (that day),
  ``DateSent<`` (on or before), ``DateSent>`` (on or after), as the SDK's
  ``messages.list(to=..., date_sent_after=...)`` sends them; a message not yet ``sent`` has no
  date_sent and no date filter matches it. ``PageSize`` (50, at most 1000) pages through
  ``PageToken``, so messages created meanwhile never shift a page.
- ``GET .../Messages/{Sid}.json``: the message as it is now.
- ``GET .../Messages/{MessageSid}/Media/{MediaSid}``: bytes registered with :meth:`add_media`.
- ``GET /_fake/stats`` (no auth, no latency, not recorded): counts for a benchmark to poll.
- ``GET /_fake/faults``: how many of the faults below were injected so far.

``api_latency`` seconds pass (``asyncio.sleep``, so concurrent calls overlap) before each answer.

After a create the message walks through an outcome in the background, one status per step,
``callback_delay`` seconds apart, each POSTed to its StatusCallback (if any) with the form
fields of a real status callback and a valid ``X-Twilio-Signature``. Defaults: ``sent``,
``delivered``; through a Messaging Service ``queued``, ``sent``, ``delivered``.

Scripting, per recipient number (To), each queue consumed front first:

- ``fake.script(to, api_errors=[21610])`` / ``fake.script(to, api_statuses=[500, 201])``: one
  entry per create request to ``to`` that passes validation. Both names feed the same queue
  (api_errors first). An entry is an HTTP status (201 = create normally, 4xx/5xx = answer that
  status with Twilio's error JSON, code 20000+status) or a Twilio error code (answered as 400,
  or 401/404/429/5xx for 20003/20404/20429/205xx). An empty queue means "create normally".
- ``fake.script(to, outcomes=[["sent", "undelivered:30003"], ["sent", "delivered"]])``: one
  entry per message created to ``to``. A step is ``status`` or ``status:ErrorCode``. Steps are
  posted in the order given, so ``[["delivered", "sent"]]`` simulates a late ``sent``. The
  resource's own status never moves backwards, as on Twilio.

Faults, for fault-injection tests (``FakeTwilio(..., fail_rate=0.1, stall_rate=0.05,
stall_s=2, disorder_rate=0.5, seed=1)`` or ``--fail-rate``, ``--stall-rate``, ``--stall-ms``,
``--disorder-rate``, ``--seed``), applied to creates and messages nothing is scripted for:
a create answered 500 or 503 without creating; a create held ``stall_s`` and then dropped
without any answer (nothing created: the SDK sees a transport error, as on a timeout); a
message whose status callbacks are posted shuffled with one of them twice, the final status
never last. Counted in :attr:`faults`. ``faults_in_a_row=N`` (``--faults-in-a-row``) caps
the failures injected in a row for one recipient, so retries always get through.

Recorded: :attr:`messages` (:class:`FakeMessage`), :attr:`requests` (every REST request,
rejected ones too), :attr:`callbacks` and :attr:`inbound` (:class:`Webhook`: each POST to the
hub, with its answer). :meth:`wait_for` waits on any of it without sleeping.
:meth:`send_inbound` plays a patient texting the hub (``await fake.aclose()`` afterwards if the
server was never started, to close the HTTP session).

Calls (``fakes/twilio/calls.py``): ``POST``/``GET .../Calls.json`` place and list calls; the
fake fetches each call's TwiML from its Url (signed), keeps it in ``fake.calls[i].twiml``, and
plays the patient's side with ``press``, ``no_input``, ``hang_up``, ``start_inbound_call``,
``recording_done`` and ``transcription_done``; ``script_call(to, outcome)`` makes calls go
unanswered, busy, failed or to a machine.
``DELETE .../Recordings/{RecordingSid}.json`` deletes a recording (204, no body; 404 with 20404
when the fake does not hold it, a repeated deletion included); ``add_recording`` gives the fake
one, ``deleted_recordings`` lists what was deleted, ``script_recording_deletes(500, ...)`` makes
the next deletions fail.

Standalone, for other processes (a benchmark): ``python -m fakes.twilio --port 0
--latency-ms 20 [--no-callbacks]`` prints its base URL on stdout and serves until SIGTERM.
Credentials come from ``TWILIO_ACCOUNT_SID`` / ``TWILIO_AUTH_TOKEN`` or the flags. Recording
is O(1) per message and nothing is notified while no one waits, so thousands of calls a second
cost little.
"""

from fakes.twilio.calls import FakeCall
from fakes.twilio.resources import (
    API_VERSION,
    DEFAULT_PAGE_SIZE,
    ERROR_MESSAGES,
    MAX_PAGE_SIZE,
    ApiRequest,
    FakeMessage,
    Webhook,
    new_sid,
    num_segments,
    twilio_error,
)
from fakes.twilio.server import FORM, FakeTwilio, create_app, start_fake_twilio

__all__ = [
    "API_VERSION",
    "DEFAULT_PAGE_SIZE",
    "ERROR_MESSAGES",
    "FORM",
    "MAX_PAGE_SIZE",
    "ApiRequest",
    "FakeCall",
    "FakeMessage",
    "FakeTwilio",
    "Webhook",
    "create_app",
    "new_sid",
    "num_segments",
    "start_fake_twilio",
    "twilio_error",
]
