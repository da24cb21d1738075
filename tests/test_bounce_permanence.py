"""Which bounces are final, as a table: a report's Action decides, then its status class, and
a report or a bounce written for people that says neither is a failure. A delay notice (4.x.x,
"will retry") never marks an address unreachable; a failure is never counted as a delay."""

from __future__ import annotations

import pytest

from hub.channels.email_smtp.parse import parse_email
from tests.mail_reports import OUR_ID, plain, report


@pytest.mark.parametrize(
    ("raw", "permanent"),
    [
        # The Action decides, whatever the class.
        (report("Action: failed|Status: 5.1.1"), True),
        (report("Action: failed|Status: 4.4.7"), True),  # queue expired: gave up
        (report("Action: expired|Status:"), True),
        (report("Action: delayed|Status: 4.2.2"), False),
        (report("Action: delayed|Status: 5.0.0"), False),
        (report("Action: delivered|Status: 2.0.0"), False),
        # No Action: the class decides.
        (report("Status: 4.2.2"), False),  # a 4.x.x delay notice is not final
        (report("Status: 5.1.1"), True),
        (report("Status: 2.0.0"), False),
        # Neither: a failure, not a delay.
        (report("Diagnostic-Code: smtp; 550 mailbox unavailable"), True),
        # Written for people: the wording decides, then the class.
        (plain("This is a permanent error; I've given up."), True),
        (plain("Delivery to the following recipient failed."), True),  # no status: failed
        (plain("Status: 4.2.2 mailbox full. This is a warning only; will retry."), False),
        (plain("Status: 4.4.7 message expired, delivery has failed"), True),
        (plain("Status: 4.2.2 mailbox full"), False),  # a 4.x.x alone is still trying
        (plain("Delivery is delayed. We will keep trying."), False),
        (plain("Status: 5.1.1 user unknown"), True),
    ],
)
def test_which_bounces_are_final(raw: bytes, permanent: bool) -> None:
    email = parse_email(raw)
    assert email.bounce is not None
    assert email.bounce.original_message_id == OUR_ID.strip("<>")
    assert email.bounce.permanent is permanent
