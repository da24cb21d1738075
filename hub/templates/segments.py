"""SMS segment math: how many segments a text costs, in GSM-7 or UCS-2.

A single SMS carries 140 bytes: 160 GSM-7 septets or 70 UCS-2 code units. A longer text is
split into parts that each lose room to the concatenation header: 153 septets or 67 code units.
Characters of the GSM-7 extension table take two septets (an escape plus the character), and a
phone never splits an escape from its character, nor a UTF-16 surrogate pair across parts, so a
part may end a unit short; counting parts by packing them, rather than dividing, gets that right.

Pure: no I/O. Carriers that apply national language shift tables may fit some texts in fewer
segments; this is the worst case Twilio bills for.
"""

from __future__ import annotations

from dataclasses import dataclass, field

GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
"""Characters of the GSM 03.38 default alphabet (one septet each; the escape itself excluded)."""
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")
"""Characters of the GSM 03.38 extension table: an escape plus the character, two septets."""

GSM7_SINGLE = 160
"""Septets in a one-segment GSM-7 message."""
GSM7_PART = 153
"""Septets per part of a multi-segment GSM-7 message (7 go to the concatenation header)."""
UCS2_SINGLE = 70
"""UTF-16 code units in a one-segment UCS-2 message."""
UCS2_PART = 67
"""UTF-16 code units per part of a multi-segment UCS-2 message."""

GSM7 = "GSM-7"
UCS2 = "UCS-2"


@dataclass(frozen=True)
class SegmentInfo:
    encoding: str
    """"GSM-7" or "UCS-2"."""
    units: int
    """Septets (GSM-7) or UTF-16 code units (UCS-2) the whole text takes."""
    segments: int
    """Parts the text is sent (and billed) as; 0 for an empty text."""
    per_segment: int
    """Room in each part: 160 or 153 (GSM-7), 70 or 67 (UCS-2)."""
    non_gsm: tuple[str, ...] = field(default=())
    """The distinct characters that forced UCS-2, in order of appearance (empty for GSM-7)."""

    def __str__(self) -> str:
        parts = "segment" if self.segments == 1 else "segments"
        unit = "characters" if self.encoding == GSM7 else "UCS-2 units"
        return f"{self.segments} {parts} ({self.units} {unit}, {self.encoding})"


def _septets(char: str) -> int:
    return 2 if char in GSM7_EXTENSION else 1


def _utf16_units(char: str) -> int:
    return 2 if ord(char) > 0xFFFF else 1


def _pack(costs: list[int], part: int) -> int:
    """Parts needed when no character's units may straddle two parts."""
    parts, used = 1, 0
    for cost in costs:
        if used + cost > part:
            parts, used = parts + 1, 0
        used += cost
    return parts


def non_gsm_characters(text: str) -> tuple[str, ...]:
    """The distinct characters of ``text`` that GSM-7 cannot carry, in order of appearance."""
    return tuple(dict.fromkeys(c for c in text if c not in GSM7_BASIC and c not in GSM7_EXTENSION))


def segment_info(text: str) -> SegmentInfo:
    """Encoding, size and segment count of ``text`` sent as one SMS."""
    outside = non_gsm_characters(text)
    if not outside:
        costs = [_septets(c) for c in text]
        single, part, encoding = GSM7_SINGLE, GSM7_PART, GSM7
    else:
        costs = [_utf16_units(c) for c in text]
        single, part, encoding = UCS2_SINGLE, UCS2_PART, UCS2
    units = sum(costs)
    if units == 0:
        return SegmentInfo(encoding, 0, 0, single)
    if units <= single:
        return SegmentInfo(encoding, units, 1, single, outside)
    return SegmentInfo(encoding, units, _pack(costs, part), part, outside)
