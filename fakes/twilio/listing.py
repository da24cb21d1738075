"""The Messages list endpoint: filters by To, From and DateSent, pages by PageToken."""

from __future__ import annotations

import bisect
import operator
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, date, datetime
from urllib.parse import urlencode

from aiohttp import web

from fakes.twilio.resources import (
    API_VERSION,
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    FakeMessage,
    twilio_error,
)


def list_messages(
    query: Mapping[str, str],
    account_sid: str,
    messages: list[FakeMessage],
    by_to: Mapping[str, list[FakeMessage]],
    by_sid: Mapping[str, FakeMessage],
) -> web.Response:
    """Answer ``GET .../Messages.json`` with ``query``: ``messages`` in creation order, indexed
    by recipient in ``by_to`` and by sid in ``by_sid`` (see the package doc for the filters)."""
    try:
        size = min(int(query.get("PageSize", DEFAULT_PAGE_SIZE)), MAX_PAGE_SIZE)
        page = int(query.get("Page", 0))
        if size < 1 or page < 0:
            raise ValueError("PageSize and Page must be positive whole numbers")
        dated = _date_test(query)
        pool = by_to.get(query["To"], []) if "To" in query else messages
        older, candidates = _page_order(pool, query.get("PageToken", ""), by_sid)
    except ValueError as exc:
        return twilio_error(400, 20001, str(exc))
    sender = query.get("From")
    items: list[FakeMessage] = []
    for message in candidates:  # one more than a page tells whether a next page exists
        if sender in (None, message.from_ or message.sender) and (dated is None or dated(message)):
            items.append(message)
            if len(items) > size:
                break
    more = len(items) > size or not older  # a previous-page token came from an older page
    items = items[:size] if older else items[:size][::-1]
    base = {k: query[k] for k in ("To", "From", "DateSent", "DateSent<", "DateSent>") if k in query}
    uri = f"/{API_VERSION}/Accounts/{account_sid}/Messages.json?"

    def page_uri(number: int, token: str | None = None) -> str:
        params = base | {"PageSize": size, "Page": number}
        return uri + urlencode(params | ({"PageToken": token} if token else {}))

    start = page * size
    body = {
        "first_page_uri": page_uri(0),
        "end": start + max(len(items) - 1, 0),
        "previous_page_uri": page_uri(page - 1, "PB" + items[0].sid) if page and items else None,
        "messages": [m.resource(account_sid) for m in items],
        "uri": page_uri(page, query.get("PageToken")),
        "page_size": size,
        "start": start,
        "next_page_uri": page_uri(page + 1, "PA" + items[-1].sid) if more and items else None,
        "page": page,
    }
    return web.json_response(body)


def _page_order(
    pool: list[FakeMessage], token: str, by_sid: Mapping[str, FakeMessage]
) -> tuple[bool, Iterator[FakeMessage]]:
    """(newest first?, the messages of ``pool`` from where ``token`` left off): PA<sid> goes
    on with those older than sid, PB<sid> back with those newer."""
    if not token:
        return True, reversed(pool)
    anchor = by_sid.get(token[2:])
    if token[:2] not in ("PA", "PB") or anchor is None:
        raise ValueError(f"PageToken {token!r} was not given out by this API")
    if token[:2] == "PA":
        at = bisect.bisect_left(pool, anchor.seq, key=operator.attrgetter("seq"))
        return True, (pool[i] for i in range(at - 1, -1, -1))
    at = bisect.bisect_right(pool, anchor.seq, key=operator.attrgetter("seq"))
    return False, iter(pool[at:])


def _sent_bound(raw: str) -> date | datetime:
    try:
        if len(raw) == len("YYYY-MM-DD"):
            return date.fromisoformat(raw)
        when = datetime.fromisoformat(raw)
    except ValueError:
        raise ValueError(f"DateSent {raw!r} is not YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ") from None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).replace(microsecond=0)


def _date_test(query: Mapping[str, str]) -> Callable[[FakeMessage], bool] | None:
    """Twilio's DateSent filters: DateSent by day; DateSent< and DateSent> (both inclusive) by
    day when given a date, by the second when given a time."""
    ops = {"DateSent": operator.eq, "DateSent<": operator.le, "DateSent>": operator.ge}
    bounds = [(ops[key], _sent_bound(query[key])) for key in ops if key in query]
    # The SDK sends a date as that day's midnight; "sent on" means the day, whatever the time.
    bounds = [
        (op, b.date() if op is operator.eq and isinstance(b, datetime) else b) for op, b in bounds
    ]
    if not bounds:
        return None

    def test(message: FakeMessage) -> bool:
        sent = message.date_sent
        if sent is None:
            return False
        return all(
            op(sent.replace(microsecond=0) if isinstance(b, datetime) else sent.date(), b)
            for op, b in bounds
        )

    return test
