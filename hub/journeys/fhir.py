"""FHIR R4 Bundles of Appointment and Patient resources, read into what enrollment needs.

Pure: a dict in (the parsed JSON), plain dataclasses out. A bundle that is not valid FHIR for
what we read (a wrong type, a missing required element, a start without its offset, an unknown
status code) raises ``BundleInvalid`` naming the entry and the field, before anything is
stored. A valid appointment the hub cannot act on (no id, no patient, a patient without phone
or email) is kept with its ``problem``, reported per entry while the others go on.

Only the elements listed here are read; fhir.resources is not needed at run time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from hub.contact import InvalidCountry, language_named, language_tag, read_country
from hub.errors import HubError

TIMEZONE_EXTENSION = "http://hl7.org/fhir/StructureDefinition/timezone"
"""IANA zone of a Patient or Appointment (valueCode); reminders keep the patient's local time."""
BUNDLE_TYPES = frozenset(
    {
        "document",
        "message",
        "transaction",
        "transaction-response",
        "batch",
        "batch-response",
        "history",
        "searchset",
        "collection",
    }
)
ENROLL_STATUSES = frozenset({"booked", "pending", "arrived", "checked-in", "fulfilled"})
"""On the schedule: enrolled (steps already due when it arrives are skipped, never sent late)."""
CANCEL_STATUSES = frozenset({"cancelled", "noshow", "entered-in-error"})
"""Off the schedule: its pending steps are cancelled."""
WAIT_STATUSES = frozenset({"proposed", "waitlist"})
"""Not booked yet: nothing to remind of; left alone until a bundle says booked."""
MAX_EXTERNAL_ID = 120
"""Length of journey_appointment.external_id."""
BCP47 = "urn:ietf:bcp:47"
"""The code system of Patient.communication.language's binding (CommonLanguages)."""

# FHIR's instant: seconds and a zone are required (a reminder needs an unambiguous moment).
_INSTANT = re.compile(
    r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$", re.ASCII
)

Action = Literal["enroll", "cancel", "wait"]


class BundleInvalid(HubError):
    """The bundle breaks FHIR where we read it; ``field`` is a path like entry[2].resource.start."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


@dataclass(frozen=True)
class FhirPatient:
    name: str | None
    phone: str | None
    email: str | None
    language: str | None
    time_zone: str | None
    identifier: str | None
    """"system|value" of the first identifier (an MRN, say): kept as the new patient's record
    number, and a patient known by it is matched by it (``cohort.match_or_create_patient``)."""
    country: str | None = None
    """ISO 3166 alpha-2 of the home address: national phone numbers are read there."""
    problem: str | None = None
    """Why this patient cannot be enrolled as sent (a language or country nobody can read)."""

    def __repr__(self) -> str:  # keep PHI out of tracebacks and debug output
        return "FhirPatient(...)"

    def contact_row(self, default_zone: str) -> dict[str, str]:
        """The shape ``cohort.match_or_create_patient`` takes."""
        row = {
            "name": self.name,
            "phone": self.phone,
            "email": self.email,
            "language": self.language,
            "country": self.country,
            "time_zone": self.time_zone or default_zone,
            "identifier": self.identifier,
        }
        return {k: v for k, v in row.items() if v}


@dataclass(frozen=True)
class FhirAppointment:
    entry: int
    """Index in Bundle.entry, for reports."""
    external_id: str | None
    status: str
    action: Action
    start: datetime | None
    patient: FhirPatient | None
    time_zone: str | None
    location: str | None
    provider: str | None
    problem: str | None = None
    """Why the hub cannot act on this appointment (reported for its entry; others go on)."""


@dataclass(frozen=True)
class ParsedBundle:
    appointments: list[FhirAppointment]
    patients: int
    ignored: int
    """Entries of other resource types (Practitioner, Location...), not used."""


def _obj(value: Any, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BundleInvalid(field, "expected a JSON object")
    return value


def _list(container: dict[str, Any], name: str, field: str) -> list[Any]:
    value = container.get(name, [])
    if not isinstance(value, list):
        raise BundleInvalid(f"{field}.{name}", "expected a JSON array")
    return value


def _str(container: dict[str, Any], name: str, field: str) -> str | None:
    value = container.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise BundleInvalid(f"{field}.{name}", "expected a non-empty string")
    return value.strip()


def _zone(resource: dict[str, Any], field: str) -> str | None:
    for i, ext in enumerate(_list(resource, "extension", field)):
        ext = _obj(ext, f"{field}.extension[{i}]")
        if ext.get("url") == TIMEZONE_EXTENSION:
            return _str(ext, "valueCode", f"{field}.extension[{i}]")
    return None


def _identifier(resource: dict[str, Any], field: str) -> str | None:
    for i, ident in enumerate(_list(resource, "identifier", field)):
        ident = _obj(ident, f"{field}.identifier[{i}]")
        value = _str(ident, "value", f"{field}.identifier[{i}]")
        if value:
            system = _str(ident, "system", f"{field}.identifier[{i}]")
            return f"{system}|{value}" if system else value
    return None


def _name(resource: dict[str, Any], field: str) -> str | None:
    names = [_obj(n, f"{field}.name[{i}]") for i, n in enumerate(_list(resource, "name", field))]
    names.sort(key=lambda n: n.get("use") != "official")
    for i, name in enumerate(names):
        text = _str(name, "text", f"{field}.name[{i}]")
        if text:
            return text
        given = [g for g in _list(name, "given", f"{field}.name[{i}]") if isinstance(g, str)]
        family = _str(name, "family", f"{field}.name[{i}]")
        parts = [*given, *([family] if family else [])]
        if parts:
            return " ".join(parts)
    return None


def _telecom(resource: dict[str, Any], field: str, system: str) -> str | None:
    points = []
    for i, point in enumerate(_list(resource, "telecom", field)):
        point = _obj(point, f"{field}.telecom[{i}]")
        if point.get("system") == system and point.get("value"):
            value = _str(point, "value", f"{field}.telecom[{i}]")
            rank = point.get("rank") if isinstance(point.get("rank"), int) else 10**6
            use = point.get("use")
            points.append((use == "old", use != "mobile", rank, i, value))
    return min(points)[-1] if points else None


def _language(resource: dict[str, Any], field: str) -> tuple[str | None, str | None]:
    """(tag, problem): the language of the preferred communication, else of the first one
    that can be read; a problem when the one that counts cannot be read. Guessing English for
    a patient whose EHR says "SPA" would send them reminders they cannot read."""
    read: list[tuple[bool, str, str | None]] = []
    for i, comm in enumerate(_list(resource, "communication", field)):
        path = f"{field}.communication[{i}]"
        language = _obj(_obj(comm, path).get("language"), f"{path}.language")
        # Cerner's published examples write "preferred": "true" (a string).
        is_preferred = comm.get("preferred") in (True, "true")
        read.append((is_preferred, f"{path}.language", _concept_language(language, path)))
    preferred = [r for r in read if r[0]]
    if preferred:
        _, path, tag = preferred[0]
    else:
        found = next((r for r in read if r[2] is not None), read[0] if read else None)
        if found is None:
            return None, None  # no language given: the hub's default
        _, path, tag = found
    if tag is None:
        return None, (
            f"{path} names no language the hub knows (neither a {BCP47} code such as "
            "es or zh-Hant nor a language's name)"
        )
    return tag, None


def _concept_language(concept: dict[str, Any], path: str) -> str | None:
    """A CodeableConcept's language: its urn:ietf:bcp:47 coding first, wherever it is listed
    (Cerner lists its own code set first; Epic its own system), then any coding whose code is
    a BCP-47 tag, and only then the text or a display that names a language."""
    codings = [
        _obj(c, f"{path}.language.coding[{i}]")
        for i, c in enumerate(_list(concept, "coding", f"{path}.language"))
    ]
    codes = [(c.get("system"), c.get("code")) for c in codings]
    ranked = [code for system, code in codes if system == BCP47] + [
        code for system, code in codes if system != BCP47
    ]
    for code in ranked:
        if isinstance(code, str) and (tag := language_tag(code)) is not None:
            return tag
    names = [concept.get("text"), *(c.get("display") for c in codings)]
    for name in names:
        if isinstance(name, str) and (tag := language_named(name)) is not None:
            return tag
    return None


def _country(resource: dict[str, Any], field: str) -> tuple[str | None, str | None]:
    """(alpha-2, problem) of the home address's country (FHIR allows a code or a name there);
    an old address never counts."""
    addresses = []
    for i, address in enumerate(_list(resource, "address", field)):
        address = _obj(address, f"{field}.address[{i}]")
        country = _str(address, "country", f"{field}.address[{i}]")
        if country and address.get("use") != "old":
            addresses.append((address.get("use") != "home", i, country))
    if not addresses:
        return None, None
    _, i, country = min(addresses)
    try:
        return read_country(country), None
    except InvalidCountry as exc:
        return None, f"{field}.address[{i}].{exc}"


def _patient(resource: dict[str, Any], field: str) -> FhirPatient:
    language, language_problem = _language(resource, field)
    country, country_problem = _country(resource, field)
    return FhirPatient(
        name=_name(resource, field),
        phone=_telecom(resource, field, "phone") or _telecom(resource, field, "sms"),
        email=_telecom(resource, field, "email"),
        language=language,
        time_zone=_zone(resource, field),
        identifier=_identifier(resource, field),
        country=country,
        problem=language_problem or country_problem,
    )


def _start(resource: dict[str, Any], field: str) -> datetime | None:
    raw = _str(resource, "start", field)
    if raw is None:
        return None
    if not _INSTANT.match(raw):
        raise BundleInvalid(
            f"{field}.start",
            f"{raw!r} is not a FHIR instant; expected e.g. 2026-12-02T09:00:00-05:00 "
            "(seconds and a UTC offset are required)",
        )
    try:
        return datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise BundleInvalid(f"{field}.start", f"{raw!r} is not a real date and time") from None


def _participants(
    resource: dict[str, Any], field: str
) -> list[tuple[str | None, str | None, str | None]]:
    """(reference, display, type) of each participant's actor."""
    participants = _list(resource, "participant", field)
    if not participants:
        raise BundleInvalid(f"{field}.participant", "an Appointment needs at least one")
    found = []
    for i, participant in enumerate(participants):
        path = f"{field}.participant[{i}]"
        actor = _obj(participant, path).get("actor")
        if actor is None:
            continue
        actor = _obj(actor, f"{path}.actor")
        found.append(
            (
                _str(actor, "reference", f"{path}.actor"),
                _str(actor, "display", f"{path}.actor"),
                _str(actor, "type", f"{path}.actor"),
            )
        )
    return found


def _kind_of(reference: str) -> str | None:
    """ "Patient" of "Patient/p1", "https://ehr.example.org/fhir/Patient/p1/_history/2"."""
    parts = reference.split("/_history/")[0].rstrip("/").split("/")
    return parts[-2] if len(parts) >= 2 else None


def _resolve(
    reference: str, by_full_url: dict[str, FhirPatient], by_id: dict[str, FhirPatient]
) -> FhirPatient | None:
    """By fullUrl first (urn:uuid or absolute), then by Patient/id, however the base reads."""
    if reference in by_full_url:
        return by_full_url[reference]
    if _kind_of(reference) == "Patient":
        return by_id.get(reference.split("/_history/")[0].rstrip("/").rsplit("/", 1)[-1])
    return None


def _appointment(
    index: int,
    resource: dict[str, Any],
    field: str,
    by_full_url: dict[str, FhirPatient],
    by_id: dict[str, FhirPatient],
) -> FhirAppointment:
    status = _str(resource, "status", field)
    if status is None:
        raise BundleInvalid(f"{field}.status", "required (booked, cancelled, ...)")
    if status not in ENROLL_STATUSES | CANCEL_STATUSES | WAIT_STATUSES:
        raise BundleInvalid(f"{field}.status", f"{status!r} is not an Appointment status code")
    start = _start(resource, field)
    if start is None and status not in CANCEL_STATUSES | WAIT_STATUSES:
        raise BundleInvalid(f"{field}.start", f"required for a {status} appointment (app-3)")
    participants = _participants(resource, field)
    references = [
        ref
        for ref, _, kind in participants
        if ref and (ref in by_full_url or (kind or _kind_of(ref)) == "Patient")
    ]
    displays: dict[str, str] = {}
    for ref, display, kind in participants:
        kind = kind or (_kind_of(ref) if ref else None)
        if kind and display:
            displays.setdefault(kind, display)
    action: Action = (
        "enroll" if status in ENROLL_STATUSES else "cancel" if status in CANCEL_STATUSES else "wait"
    )
    external_id = _str(resource, "id", field) or _identifier(resource, field)
    problem = None
    patient = None
    if external_id is None:
        problem = "the appointment has no id or identifier, so it could not be recognised again"
    elif len(external_id) > MAX_EXTERNAL_ID:
        problem = f"the appointment id is longer than {MAX_EXTERNAL_ID} characters"
    elif not references:
        problem = "no participant refers to a Patient"
    elif len(set(references)) > 1:
        problem = "more than one Patient participates; enroll one patient per appointment"
    else:
        patient = _resolve(references[0], by_full_url, by_id)
        if patient is None:
            problem = f"participant {references[0]} is not a Patient entry of this bundle"
        elif not (patient.phone or patient.email):
            problem = f"patient {references[0]} has no phone or email"
        elif patient.problem is not None:
            problem = f"patient {references[0]}: {patient.problem}"
    return FhirAppointment(
        entry=index,
        external_id=external_id,
        status=status,
        action=action,
        start=start,
        patient=patient,
        time_zone=_zone(resource, field),
        location=displays.get("Location"),
        provider=displays.get("Practitioner") or displays.get("PractitionerRole"),
        problem=problem,
    )


def parse_bundle(data: Any) -> ParsedBundle:
    """Read a Bundle (the parsed JSON). Raises BundleInvalid for what is not valid FHIR."""
    bundle = _obj(data, "Bundle")
    if bundle.get("resourceType") != "Bundle":
        raise BundleInvalid("resourceType", "expected 'Bundle'")
    kind = _str(bundle, "type", "Bundle")
    if kind not in BUNDLE_TYPES:
        raise BundleInvalid("type", f"expected one of {', '.join(sorted(BUNDLE_TYPES))}")
    entries: list[tuple[int, str, dict[str, Any], str | None]] = []
    for i, entry in enumerate(_list(bundle, "entry", "Bundle")):
        field = f"entry[{i}]"
        entry = _obj(entry, field)
        resource = _obj(entry.get("resource"), f"{field}.resource")
        kind = _str(resource, "resourceType", f"{field}.resource")
        if kind is None:
            raise BundleInvalid(f"{field}.resource.resourceType", "required")
        entries.append((i, kind, resource, _str(entry, "fullUrl", field)))
    by_full_url: dict[str, FhirPatient] = {}
    by_id: dict[str, FhirPatient] = {}
    for i, kind, resource, full_url in entries:
        if kind == "Patient":
            patient = _patient(resource, f"entry[{i}].resource")
            if full_url:
                by_full_url[full_url] = patient
            if (patient_id := _str(resource, "id", f"entry[{i}].resource")) is not None:
                by_id[patient_id] = patient
    appointments = [
        _appointment(i, resource, f"entry[{i}].resource", by_full_url, by_id)
        for i, kind, resource, _ in entries
        if kind == "Appointment"
    ]
    patients = sum(1 for _, kind, _, _ in entries if kind == "Patient")
    return ParsedBundle(appointments, patients, len(entries) - patients - len(appointments))
