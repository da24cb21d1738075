"""The cohort launch on the Journeys page: the upload shows the column mapping suggested from
the file's header (``hub.journeys.mapping``: which column holds what, the separator, the date
order) and, beside it, the dry run it gives (``hub.journeys.preview``: counts, what each step
would do for these patients, the warnings, the rows that cannot be read, by line) with an
"Enroll N patients" button and a cancel. Changing the mapping checks the same file again;
only the confirmation enrolls, through the mapping that was checked. The file waits in between
as ``web.cohort_upload`` keeps it."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from datetime import date, timedelta
from typing import Any

from aiohttp import web

from hub.channels.registry import connected_providers
from hub.journeys import reporting
from hub.journeys.cohort import CohortInvalid, clinic_zone, launch
from hub.journeys.cohort_dates import DATE_ORDER_LABELS, DateOrder, date_order_of
from hub.journeys.mapping import (
    DELIMITERS,
    FIELDS,
    NO_HEADER,
    ColumnMapping,
    MappingInvalid,
    failed_rows,
    looks_like_data,
    read_header,
    suggest,
)
from hub.journeys.mapping_actions import do_recall_mapping, do_remember_mapping
from hub.journeys.preview import LaunchPreview, do_preview_launch
from web.api import error
from web.auth import SESSION
from web.cohort_upload import (
    PENDING_COHORT_SECONDS,
    UploadRefused,
    as_text,
    drop_pending,
    keep_failed,
    keep_pending,
    peek_pending,
    read_failed,
    read_upload,
    take_pending,
)
from web.journeys import FIRST_ERRORS_SHOWN, coordinator, render_page, wants_json
from web.keys import DB, REDIS, RING, SETTINGS
from web.render import fragment
from web.tasks import release_soon


def _preview_json(preview: LaunchPreview) -> dict[str, Any]:
    """The dry run for the page: counts and reasons only (no patient is named)."""
    return {
        "rows": preview.rows,
        "enroll": preview.enroll,
        "already": preview.already,
        "patients_created": preview.patients_created,
        "cancelled": preview.cancelled,
        "error_count": preview.error_count,
        "errors": preview.errors[:FIRST_ERRORS_SHOWN],
        "steps": [
            {
                "step": s.step_id,
                "template": s.template,
                "summary": s.summary(),
                "planned": s.planned,
                "sending": s.sending,
                "fallback": sum(s.fallback.values()),
                "untranslated": sum(s.untranslated.values()),
                "no_channel": s.no_channel,
                "late": s.late,
            }
            for s in preview.steps
        ],
        "warnings": preview.warnings,
        "nothing_to_do": preview.nothing_to_do,
    }


async def _launch_answer(
    request: web.Request, launched: dict[str, Any], status: int = 200
) -> web.Response:
    """The launch box's content: JSON with its HTML for the page's script, else the page."""
    if wants_json(request):
        html = fragment(request, "_journey_launch.html", launched=launched, csrf=_csrf(request))
        body = {**launched, "html": html}
        if status >= 400:  # what the script shows when it cannot show the box
            body["error"] = {"message": launched.get("mapping", {}).get("error", "")}
        return web.json_response(body, status=status)
    return await render_page(request, launched, status=status)


def _csrf(request: web.Request) -> str:
    session = request.get(SESSION)
    return session.csrf if session else ""


async def _refused(request: web.Request, key: str, exc: UploadRefused) -> web.Response:
    if wants_json(request):
        return error(exc.status, exc.message)
    return await render_page(request, {"journey": key, "error": exc.message}, status=exc.status)


def _header(data: bytes, delimiter: str | None = None) -> tuple[list[str], str]:
    """The file's header and separator (``delimiter`` when the coordinator chose one)."""
    header, found = read_header(as_text(io.BytesIO(data)))
    if delimiter is None or delimiter == found:
        return header, found
    first = as_text(io.BytesIO(data)).readline()
    row = next(csv.reader([first], delimiter=delimiter), [])
    return [h.strip().lstrip("\ufeff") for h in row], delimiter


def _mapping_view(
    zone: str,
    header: Sequence[str],
    chosen: Sequence[str],
    delimiter: str,
    order: DateOrder,
    region: str,
    problem: str | None = None,
) -> dict[str, Any]:
    """The mapping screen: one row per column of the file with the field it is read as."""
    return {
        "columns": [
            {"index": i, "name": h, "field": f}
            for i, (h, f) in enumerate(zip(header, chosen, strict=True))
        ],
        "fields": list(FIELDS.items()),
        "delimiter": delimiter,
        "delimiters": list(DELIMITERS.items()),
        "date_order": order.value,
        "date_orders": [(o.value, label) for o, label in DATE_ORDER_LABELS.items()],
        "region": region,
        "region_order": DATE_ORDER_LABELS[date_order_of(region)],
        "zone": zone,
        "error": problem,
    }


def _chosen(mapping: ColumnMapping, header: Sequence[str]) -> list[str]:
    """The field of each column of ``header`` under ``mapping`` ("" for none)."""
    chosen = [""] * len(header)
    for field, column in mapping.columns.items():
        for i, name in enumerate(header):
            if name.strip() == column.strip() and not chosen[i]:
                chosen[i] = field
                break
    return chosen


def _mapping_from_form(form: Mapping[str, Any], header: Sequence[str]) -> ColumnMapping:
    """The coordinator's choices; MappingInvalid says which one cannot be used."""
    columns: dict[str, str] = {}
    for i, name in enumerate(header):
        field = str(form.get(f"col-{i}", ""))
        if not field:
            continue
        if field not in FIELDS:
            raise MappingInvalid(f"column “{name}” is set to an unknown field")
        if field in columns:
            raise MappingInvalid(
                f"two columns are set to {FIELDS[field]}: “{columns[field]}” and “{name}”; "
                "choose one and set the other to “Not used”"
            )
        columns[field] = name
    try:
        order = DateOrder(str(form.get("date_order", "")))
    except ValueError:
        raise MappingInvalid("choose how the file writes its dates") from None
    mapping = ColumnMapping(columns, str(form.get("delimiter", ",")), order)
    mapping.check()
    return mapping


async def _checked(
    request: web.Request,
    key: str,
    token: str,
    data: bytes,
    header: Sequence[str],
    mapping: ColumnMapping,
    chosen: Sequence[str] | None = None,
    problem: str | None = None,
    *,
    remembered: bool = False,
) -> web.Response:
    """The mapping screen with the dry run of ``data`` read through ``mapping``; when the
    mapping cannot be used, the screen says why and no dry run is shown."""
    region = request.app[SETTINGS].default_region
    preview = None
    if problem is None:
        try:
            mapping.check()
            preview = await do_preview_launch(
                request.app[DB],
                request.app[RING],
                key,
                as_text(io.BytesIO(data)),
                region=region,
                available=connected_providers(request.app[SETTINGS]),
                mapping=mapping,
            )
        except (MappingInvalid, CohortInvalid) as exc:
            problem = f"The file cannot be read this way: {exc}."
    view = _mapping_view(
        await clinic_zone(request.app[DB]),
        header,
        chosen if chosen is not None else _chosen(mapping, header),
        mapping.delimiter,
        mapping.date_order,
        region,
        problem,
    )
    launched: dict[str, Any] = {
        "journey": key,
        "token": token,
        "expires_in": PENDING_COHORT_SECONDS,
        "mapping": {**view, "remembered": remembered},
        "mapping_json": json.dumps(mapping.as_json()),
    }
    if preview is not None:
        launched["preview"] = _preview_json(preview)
    return await _launch_answer(request, launched, status=400 if problem else 200)


async def upload_cohort(request: web.Request) -> web.StreamResponse:
    """Step one of a launch: read and check the file, suggest its column mapping and show the
    dry run it gives (counts, what each step would do, warnings, the rows that cannot be
    read) with "Enroll N patients" and a cancel. Nothing is enrolled here."""
    ctx = coordinator(request)
    key = request.match_info["key"]
    db = request.app[DB]
    if key not in await reporting.journey_names(db):
        raise web.HTTPNotFound()
    try:
        upload = await read_upload(request)
        try:
            upload.seek(0)
            data = upload.read()
            header, delimiter = _header(data)
            if looks_like_data(header):
                raise UploadRefused(400, f"The file was not read: {NO_HEADER}.")
            if not any(header):
                raise UploadRefused(
                    400,
                    "The file is empty. It needs a header row naming its columns, then one "
                    "row per patient (see the sample file).",
                )
            token = await keep_pending(
                request.app[REDIS], request.app[RING], key, ctx.staff_id, upload
            )
        finally:
            upload.close()
    except UploadRefused as exc:
        return await _refused(request, key, exc)
    region = request.app[SETTINGS].default_region
    remembered = await do_recall_mapping(db, header, delimiter)
    mapping = remembered or suggest(header, region=region, delimiter=delimiter)
    return await _checked(request, key, token, data, header, mapping, remembered=bool(remembered))


async def _waiting(request: web.Request, key: str, *, take: bool) -> bytes | web.Response:
    """The kept upload the path's token names, or the page saying it is gone."""
    ctx = coordinator(request)
    if key not in await reporting.journey_names(request.app[DB]):
        raise web.HTTPNotFound()
    find = take_pending if take else peek_pending
    data = await find(
        request.app[REDIS], request.app[RING], key, ctx.staff_id, request.match_info["token"]
    )
    if data is None:
        gone = UploadRefused(
            410,
            "This upload is no longer waiting: it was enrolled or cancelled already, or it "
            f"waited longer than {PENDING_COHORT_SECONDS // 60} minutes. Upload the file again.",
        )
        return await _refused(request, key, gone)
    return data


async def remap_cohort(request: web.Request) -> web.StreamResponse:
    """The coordinator changed the mapping: the same file is checked again through it."""
    key = request.match_info["key"]
    data = await _waiting(request, key, take=False)
    if isinstance(data, web.Response):
        return data
    form = await request.post()
    delimiter = str(form.get("delimiter", ","))
    header, delimiter = _header(data, delimiter if delimiter in DELIMITERS else None)
    token = request.match_info["token"]
    region = request.app[SETTINGS].default_region
    if str(form.get("columns", "")) != str(len(header)):
        # Another separator split the header differently: the choices no longer fit it.
        mapping = suggest(header, region=region, delimiter=delimiter)
        return await _checked(request, key, token, data, header, mapping)
    chosen = [str(form.get(f"col-{i}", "")) for i in range(len(header))]
    try:
        mapping = _mapping_from_form(form, header)
    except MappingInvalid as exc:
        order = (
            DateOrder(str(form.get("date_order")))
            if form.get("date_order") in set(DateOrder)
            else date_order_of(region)
        )
        fallback = ColumnMapping({}, delimiter, order)
        return await _checked(request, key, token, data, header, fallback, chosen, f"{exc}.")
    return await _checked(request, key, token, data, header, mapping, chosen)


async def confirm_cohort(request: web.Request) -> web.StreamResponse:
    """Step two: the coordinator pressed "Enroll": the kept upload is enrolled, once, through
    the mapping its dry run used (sent back with the button; none: the suggested one)."""
    ctx = coordinator(request)
    key = request.match_info["key"]
    form = await request.post()
    mapping = None
    if form.get("mapping"):
        # Checked against the kept file before it is taken: a mapping that cannot read it
        # leaves the upload waiting for another try.
        kept = await _waiting(request, key, take=False)
        if isinstance(kept, web.Response):
            return kept
        try:
            mapping = ColumnMapping.from_json(json.loads(str(form["mapping"])))
            mapping.bind(_header(kept, mapping.delimiter)[0])
        except (ValueError, MappingInvalid) as exc:
            return await _refused(
                request,
                key,
                UploadRefused(
                    400, f"The mapping was not understood ({exc}); check the columns again."
                ),
            )
    data = await _waiting(request, key, take=True)
    if isinstance(data, web.Response):
        return data
    db = request.app[DB]
    stream = as_text(io.BytesIO(data))
    try:
        report = await launch(
            db,
            request.app[RING],
            ctx.actor,
            key,
            stream,
            region=request.app[SETTINGS].default_region,
            mapping=mapping,
        )
    except CohortInvalid as exc:
        return await _refused(request, key, UploadRefused(400, f"Enrolling stopped: {exc}."))
    finally:
        stream.close()
    if report.enrolled:
        release_soon(request.app, [await reporting.do_announce_progress(db, key)])
    if mapping is not None and report.rows > report.error_count:
        # Confirmed and it read rows: the next export with these columns opens with it.
        header, _ = _header(data, mapping.delimiter)
        await do_remember_mapping(db, header, mapping, ctx.staff_id)
    failed_token = None
    if report.failed:
        rows = failed_rows(as_text(io.BytesIO(data)), report.delimiter, report.failed)
        failed_token = await keep_failed(
            request.app[REDIS], request.app[RING], key, ctx.staff_id, rows
        )
    return await _launch_answer(
        request,
        {
            "journey": key,
            "failed_token": failed_token,
            "expires_in": PENDING_COHORT_SECONDS,
            "rows": report.rows,
            "enrolled": report.enrolled,
            "already": report.already,
            "patients_created": report.patients_created,
            "error_count": report.error_count,
            "errors": report.errors[:FIRST_ERRORS_SHOWN],
        },
    )


async def cancel_cohort(request: web.Request) -> web.StreamResponse:
    """The coordinator pressed "Cancel" after the dry run: the upload is dropped."""
    ctx = coordinator(request)
    key = request.match_info["key"]
    await drop_pending(
        request.app[REDIS], request.app[RING], key, ctx.staff_id, request.match_info["token"]
    )
    return await _launch_answer(request, {"journey": key, "cancelled": True})


async def failed_cohort_rows(request: web.Request) -> web.StreamResponse:
    """The rows a launch did not enroll, with a Reason column, for the coordinator who
    launched it to fix and upload again (kept PENDING_COHORT_SECONDS)."""
    ctx = coordinator(request)
    key = request.match_info["key"]
    text = await read_failed(
        request.app[REDIS], request.app[RING], key, ctx.staff_id, request.match_info["token"]
    )
    if text is None:
        raise web.HTTPGone(
            text="These rows are no longer kept (they are kept 30 minutes after the launch, "
            "for whoever launched it). The row errors on the page list them by line."
        )
    return web.Response(
        body=text,
        content_type="text/csv",
        charset="utf-8",
        headers={"Content-Disposition": f'attachment; filename="{key}-not-enrolled.csv"'},
    )


SAMPLE_ROWS = (
    ("Avery Sample", "M-100201", "+1 201 555 0101", "avery@example.org", "English", 3, "09:00"),
    ("Blake Placeholder", "M-100202", "(201) 555-0102", "", "Spanish", 3, "2:30 PM"),
    ("Casey Fictional", "M-100203", "", "casey@example.org", "vi", 4, "10:15"),
    ("Devon Testperson", "M-100204", "201-555-0104", "", "en", 5, "16:45"),
)
"""The sample's synthetic patients: name, MRN, phone, email, language, days ahead, time."""


async def sample_cohort(request: web.Request) -> web.Response:
    """A sample cohort file shaped like an EHR export (its own column names, a date and a time
    column in the clinic's date order), with appointments a few days ahead. Synthetic."""
    coordinator(request)
    order = date_order_of(request.app[SETTINGS].default_region)
    pattern = {
        DateOrder.MONTH_FIRST: "%m/%d/%Y",
        DateOrder.DAY_FIRST: "%d/%m/%Y",
        DateOrder.YEAR_FIRST: "%Y-%m-%d",
    }[order]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(
        ["Patient Name", "MRN", "Mobile Phone", "Email", "Language", "Appt Date", "Appt Time",
         "Department", "Provider"]
    )  # fmt: skip
    for name, mrn, phone, email, language, days, at in SAMPLE_ROWS:
        day = (date.today() + timedelta(days=days)).strftime(pattern)
        writer.writerow(
            [name, mrn, phone, email, language, day, at, "Family Medicine", "Dr. Example"]
        )
    return web.Response(
        text=out.getvalue(),
        content_type="text/csv",
        headers={"Content-Disposition": 'attachment; filename="sample-cohort.csv"'},
    )


def routes() -> list[web.RouteDef]:
    """The launch's routes, for web/routes.py's table."""
    return [
        web.get("/journeys/sample-cohort.csv", sample_cohort, name="journey_cohort_sample"),
        web.get(
            "/journeys/{key}/cohort/{token}/failed.csv",
            failed_cohort_rows,
            name="journey_cohort_failed",
        ),
        web.post("/journeys/{key}/cohort", upload_cohort, name="journey_cohort"),
        web.post(
            "/journeys/{key}/cohort/{token}/mapping", remap_cohort, name="journey_cohort_mapping"
        ),
        web.post("/journeys/{key}/cohort/{token}", confirm_cohort, name="journey_cohort_confirm"),
        web.post(
            "/journeys/{key}/cohort/{token}/cancel", cancel_cohort, name="journey_cohort_cancel"
        ),
    ]
