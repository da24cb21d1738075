"""What staff are shown of an email: sanitized HTML, text made from HTML, and the reply without
its quoted history or signature.

Sanitizing is nh3 (Ammonia): an allow-list sanitizer written in Rust that parses like a
browser (html5ever), where bleach, the usual Python choice, is deprecated and its html5lib is
unmaintained. Quote detection is quotequail: it is conservative (it cuts only at a reply or
forward header it recognises, a header block, or a block of ">" lines), reads English, Spanish,
German, French, Portuguese, Dutch, Swedish and Russian headers, and has an HTML mode (not
needed here: HTML is made into text, blockquotes as "> " lines, before quotes are looked for).
mail-parser-reply was the alternative; it also cuts at sign-off words and "disclaimer" words,
so "Thanks, I'll come at 10" or "Warning: I am allergic to penicillin" vanish from a patient's
reply, which a clinic cannot accept; and its Spanish header pattern did not match Gmail's.
"""

from __future__ import annotations

import html as _html
import re
from html.parser import HTMLParser

import nh3
import quotequail

from hub.channels.email_smtp.quotes import find_quote

MAX_QUOTE_SCAN_LINES = 500
"""Quote detection reads only the first lines: quoted history follows the reply, and the
detector's cost grows faster than the text."""
MAX_SCAN_LINE_CHARS = 200
"""Longer lines are read cut short by quote detection (reply headers are far shorter)."""
MAX_QUOTE_DEPTH = 20
"""Nested blockquotes deeper than this are written at this depth in text made from HTML."""
MAX_HTML_DEPTH = 1000
"""HTML nested deeper than this is shown as text: the sanitizer's time grows with the square
of the depth, and no mail client nests that deep."""
MAX_SIGNATURE_LINES = 10
"""A "-- " delimiter with more lines after it than this is not taken for a signature."""

_ALLOWED_TAGS = frozenset(nh3.ALLOWED_TAGS) - {"area", "map", "details", "summary"}
_ALLOWED_ATTRIBUTES: dict[str, set[str]] = {
    "a": {"href", "title"},
    "img": {"src", "alt", "width", "height"},
    "td": {"colspan", "rowspan", "align"},
    "th": {"colspan", "rowspan", "align", "scope"},
    "ol": {"start"},
    "blockquote": set(),
}
_URL_SCHEMES = frozenset({"http", "https", "mailto", "tel", "cid"})
_DROP_WITH_CONTENT = frozenset(
    {"script", "style", "title", "template", "noscript", "textarea", "iframe", "frameset"}
    | {"noframes", "object", "embed", "noembed", "applet", "svg", "math"}
)

_TAG = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9]*)")
_UNNESTED_TAGS = frozenset(
    {"br", "img", "hr", "meta", "link", "input", "area", "base", "col", "wbr", "source"}
    | {"track", "embed", "param", "p", "li", "td", "th", "tr", "dt", "dd", "option"}
    | {"tbody", "thead", "tfoot", "colgroup", "rp", "rt"}
)
"""Void elements and those whose end tag may be left out: they never build up nesting."""
_BLOCK_TAGS = frozenset(
    {"p", "div", "br", "li", "tr", "blockquote", "pre", "table", "ul", "ol", "hr", "dd", "dt"}
    | {"h1", "h2", "h3", "h4", "h5", "h6", "section", "article", "header", "footer", "figure"}
    | {"figcaption", "center"}
)
_MOBILE_FOOTER = re.compile(
    r"^(sent from my \S.{0,40}|get outlook for (ios|android).{0,60}|enviado desde mi \S.{0,40}|"
    r"von meinem \S.{0,30} gesendet|envoyé de mon \S.{0,30}|inviato da \S.{0,30}|"
    r"enviado do meu \S.{0,30}|verstuurd vanaf mijn \S.{0,30}|sendt fra min \S.{0,30}|"
    r"skickat från min \S.{0,30}|отправлено с \S.{0,30})$",  # noqa: RUF001 (Cyrillic)
    re.IGNORECASE,
)
# Containers mail clients put quoted history in, when they write HTML only.
_QUOTE_CLASSES = frozenset(
    {"gmail_quote", "gmail_quote_container", "moz-cite-prefix", "yahoo_quoted", "protonmail_quote"}
)
# Outlook (desktop, web, Windows Mail) writes the quoted mail as siblings after these, not
# inside them: from there to the end is history.
_QUOTE_FROM_HERE_IDS = frozenset(
    {"appendonsend", "divrplyfwdmsg", "x_appendonsend", "x_divrplyfwdmsg", "stopspelling"}
)
_OUTLOOK_RULE = re.compile(r"border-top:\s*solid\s+#(b5c4df|e1e1e1)\s+1(\.0)?pt", re.I)
_VOID_TAGS = frozenset({"br", "img", "hr", "meta", "link", "input", "wbr", "col", "source"})


def _keep_attribute(tag: str, attribute: str, value: str) -> str | None:
    # Remote images are how senders learn when and where staff opened a mail (tracking
    # pixels); only images carried inside the message itself (cid:) may load.
    if tag == "img" and attribute == "src":
        return value if value.strip().lower().startswith("cid:") else None
    if attribute == "href" and value.strip().lower().startswith("cid:"):
        return None
    return value


def _too_deep(html: str) -> bool:
    depth = 0
    for match in _TAG.finditer(html):
        if match.group(2).lower() in _UNNESTED_TAGS:
            continue
        if match.group(1):
            depth = max(0, depth - 1)
        else:
            depth += 1
            if depth > MAX_HTML_DEPTH:
                return True
    return False


def sanitize_html(html: str) -> str:
    """The HTML part made safe to show staff inside the hub's own page: no scripts, styles,
    frames, forms, event handlers, javascript: or relative URLs, nor remote images; links open
    in a new tab without a referrer."""
    if _too_deep(html):
        text = " ".join(_html.unescape(re.sub(r"<[^>]*>", " ", html)).split())
        return f"<p>{_html.escape(text)}</p>"
    return nh3.clean(
        html,
        tags=set(_ALLOWED_TAGS),
        clean_content_tags=set(_DROP_WITH_CONTENT),
        attributes={tag: set(names) for tag, names in _ALLOWED_ATTRIBUTES.items()},
        attribute_filter=_keep_attribute,
        url_schemes=set(_URL_SCHEMES),
        # A relative link would point into the hub itself, under the staff member's session.
        url_relative="deny",
        link_rel="noopener noreferrer",
        set_tag_attribute_values={"a": {"target": "_blank"}},
        strip_comments=True,
    ).strip()


class _TextWriter(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lines: list[str] = []
        self.current: list[str] = []
        self.quote_depth = 0
        self.pre_depth = 0
        self.href: str | None = None
        self.link_text: list[str] = []

    def _break(self) -> None:
        text = "".join(self.current)
        if self.pre_depth == 0:
            text = " ".join(text.split())
        prefix = "> " * min(self.quote_depth, MAX_QUOTE_DEPTH)
        self.lines.append(f"{prefix}{text}".rstrip() if text or prefix else "")
        self.current = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _BLOCK_TAGS:
            self._break()
        if tag == "blockquote":
            self.quote_depth += 1
        elif tag == "pre":
            self.pre_depth += 1
        elif tag == "li":
            self.current.append("- ")
        elif tag == "a":
            self.href = dict(attrs).get("href")
            self.link_text = []
        elif tag in ("td", "th"):
            self.current.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self.href:
            shown = "".join(self.link_text).strip()
            # The address of a link is part of what was written, when the text does not say it.
            if self.href.startswith(("http://", "https://")) and self.href not in shown:
                self.current.append(f" ({self.href})")
            self.href = None
        if tag == "blockquote":
            self._break()
            self.quote_depth = max(0, self.quote_depth - 1)
        elif tag == "pre":
            self.pre_depth = max(0, self.pre_depth - 1)
        if tag in _BLOCK_TAGS:
            self._break()

    def handle_data(self, data: str) -> None:
        self.current.append(data)
        if self.href is not None:
            self.link_text.append(data)

    def text(self) -> str:
        self._break()
        return _tidy("\n".join(self.lines))


def _tidy(text: str) -> str:
    text = re.sub(r"\n{3,}", "\n\n", text.replace("\r\n", "\n").replace("\r", "\n"))
    return text.strip("\n").rstrip()


class _QuoteCutter(HTMLParser):
    """Writes the HTML back without the quote containers clients mark: Gmail's
    div.gmail_quote, Apple's and Thunderbird's blockquote type="cite" (and Thunderbird's
    moz-cite-prefix line above it), Yahoo's and Proton's, and Outlook's reply header
    (#divRplyFwdMsg, #appendonsend, the bordered header div) with everything after it."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)
        self.out: list[str] = []
        self.skipping: str | None = None
        self.depth = 0
        self.ended = False
        self.removed = False

    def _starts_quote(self, tag: str, attrs: list[tuple[str, str | None]]) -> str | None:
        found = {name.lower(): (value or "") for name, value in attrs}
        if found.get("id", "").lower() in _QUOTE_FROM_HERE_IDS or _OUTLOOK_RULE.search(
            found.get("style", "")
        ):
            return "end"
        if set(found.get("class", "").lower().split()) & _QUOTE_CLASSES or (
            tag == "blockquote" and found.get("type", "").lower() == "cite"
        ):
            return "element"
        return None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self.ended:
            return
        if self.skipping is not None:
            # Only the skipped element's own name is counted: mail HTML leaves <p> and <li>
            # open, and counting every tag would never find the element's end.
            self.depth += tag == self.skipping
            return
        kind = self._starts_quote(tag, attrs)
        if kind == "end":
            self.ended = self.removed = True
        elif kind == "element":
            self.removed = True
            if tag not in _VOID_TAGS:
                self.skipping, self.depth = tag, 1
        else:
            self.out.append(self.get_starttag_text() or "")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if not self.ended and self.skipping is None and self._starts_quote(tag, attrs) is None:
            self.out.append(self.get_starttag_text() or "")

    def handle_endtag(self, tag: str) -> None:
        if self.ended:
            return
        if self.skipping is not None:
            if tag == self.skipping:
                self.depth -= 1
                if self.depth == 0:
                    self.skipping = None
            return
        self.out.append(f"</{tag}>")

    def handle_data(self, data: str) -> None:
        if not self.ended and self.skipping is None:
            self.out.append(_html.escape(data, quote=False))

    def handle_entityref(self, name: str) -> None:
        self.handle_data(_html.unescape(f"&{name};"))

    def handle_charref(self, name: str) -> None:
        self.handle_data(_html.unescape(f"&#{name};"))


def html_without_quotes(html: str) -> str | None:
    """The HTML without the quoted history its client marked, or None when it marked none
    (or the markup cannot be read)."""
    cutter = _QuoteCutter()
    try:
        cutter.feed(html)
        cutter.close()
    except Exception:  # html.parser asserts on some malformed markup: no cut, nothing lost
        return None
    return "".join(cutter.out) if cutter.removed else None


def html_to_text(html: str) -> str:
    """Plain text of an HTML body, quotes as "> " lines so quote detection still sees them.
    Expects sanitized HTML (no script or style content left to skip)."""
    writer = _TextWriter()
    try:
        writer.feed(html)
        writer.close()
        return writer.text()
    except Exception:  # html.parser asserts on some malformed markup; text is still wanted
        return _tidy(nh3.clean(html, tags=set()))


def _strip_signature(text: str) -> str:
    lines = text.split("\n")
    for index in range(len(lines) - 1, -1, -1):
        if lines[index].rstrip() == "--":
            if sum(1 for line in lines[index + 1 :] if line.strip()) <= MAX_SIGNATURE_LINES:
                lines = lines[:index]
            break
    while lines and not lines[-1].strip():
        lines.pop()
    if lines and _MOBILE_FOOTER.match(lines[-1].strip()):
        lines.pop()
    return "\n".join(lines).rstrip()


def _blank_run(lines: list[str]) -> int:
    count = 0
    for line in lines:
        if line.strip():
            break
        count += 1
    return count


def _quote_split(text: str) -> tuple[str, str] | None:
    """(text above the quoted history, text below it), or None when no quote is found.

    Our own table of reply headers in many languages (quotes.py) is read first, then
    quotequail for what only it knows (">" blocks and its own patterns). Both read a bounded
    copy (first lines, each cut short): quotequail's patterns backtrack on long lines and its
    header search is quadratic in header-like lines; what they find is mapped back onto the
    whole lines by position."""
    lines = text.split("\n")
    scan = [line[:MAX_SCAN_LINE_CHARS] for line in lines[:MAX_QUOTE_SCAN_LINES]]
    span = find_quote(scan)
    if span is not None:
        below = span.end < len(scan) and len(scan) == len(lines)
        bottom = "\n".join(lines[span.end :]) if below else ""
        return "\n".join(lines[: span.start]).strip(), bottom.strip()
    try:
        found = quotequail.unwrap("\n".join(scan))
    except Exception:  # a quoting heuristic failing must not lose the message
        return None
    if not found or not (found.get("text_top") or found.get("text_bottom")):
        return None
    top = ""
    if found.get("text_top"):
        first = _blank_run(scan)
        top = "\n".join(lines[first : first + found["text_top"].count("\n") + 1])
    bottom = ""
    # Text below a quote is the sender's too (an inline answer), unless the scan stopped
    # short of the end and "below" would be cut off mid-message.
    if found.get("text_bottom") and len(scan) == len(lines):
        last = len(lines) - _blank_run(lines[::-1])
        start = max(0, last - found["text_bottom"].count("\n") - 1)
        bottom = "\n".join(lines[start:last])
    return top.strip(), bottom.strip()


def visible_text_of(text: str) -> str:
    """The reply itself: quoted history and signature removed. Never empty when ``text`` is
    not: a message that is all quote (a bare forward) is shown whole."""
    split = _quote_split(text)
    visible = "\n\n".join(part for part in split if part) if split else text
    visible = _strip_signature(visible).strip("\n")
    return visible if visible.strip() else text
