"""RQ job entry points. Each takes an id, opens its own runtime, and calls hub actions."""

from __future__ import annotations

import asyncio
import logging
import uuid

from hub.channels.base import FailureClass, NotConfigured, SendFailed
from hub.channels.registry import CHANNEL_PROVIDERS, resolve_adapter
from hub.config import Settings
from hub.consent.exceptions import ConsentRefused
from hub.inbox import actions
from worker.runtime import job_runtime

log = logging.getLogger(__name__)


def send_message(message_id: str) -> str:
    return asyncio.run(run_send_message(uuid.UUID(message_id)))


def dispatch_batch(run_ids: str) -> str:
    return asyncio.run(run_dispatch_batch([uuid.UUID(r) for r in run_ids.split(",") if r]))


DISPATCH_CONCURRENCY = 20
"""Step runs of one batch dispatched at once (each its own short transaction)."""


async def run_dispatch_batch(run_ids: list[uuid.UUID], settings: Settings | None = None) -> str:
    """Dispatch a claimed batch. Runs another batch already handled come back as "gone";
    a run that fails here stays claimed and is taken again after its lease."""
    from hub.channels.registry import CHANNEL_PROVIDERS
    from hub.journeys.actions import do_dispatch_run

    async with job_runtime(settings) as rt:
        gate = asyncio.Semaphore(DISPATCH_CONCURRENCY)
        counts: dict[str, int] = {}

        async def one(run_id: uuid.UUID) -> None:
            async with gate:
                try:
                    result = await do_dispatch_run(
                        rt.db,
                        rt.ring,
                        run_id,
                        connected=set(CHANNEL_PROVIDERS),
                        clinic=rt.settings.clinic,
                    )
                except Exception:
                    log.exception("dispatch failed", extra={"run_id": str(run_id)})
                    counts["error"] = counts.get("error", 0) + 1
                    return
                await rt.release(result.effect_ids)
                counts[result.outcome] = counts.get(result.outcome, 0) + 1

        await asyncio.gather(*(one(r) for r in run_ids))
        log.info("dispatch batch done", extra={"runs": len(run_ids), **counts})
        return ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))


def fetch_media(attachment_id: str) -> str:
    from worker.media import run_fetch_media

    return asyncio.run(run_fetch_media(uuid.UUID(attachment_id)))


async def run_send_message(message_id: uuid.UUID, settings: Settings | None = None) -> str:
    async with job_runtime(settings) as rt:
        claim = await actions.do_claim_send(
            rt.db,
            rt.ring,
            message_id,
            provider=CHANNEL_PROVIDERS,
            public_url=rt.settings.public_url,
        )
        await rt.release(claim.effect_ids)
        if claim.task is None:
            log.info("send skipped", extra={"message_id": str(message_id), "why": claim.skipped})
            return claim.skipped or "skipped"
        adapter = resolve_adapter(claim.task.provider, rt.settings)
        try:
            try:
                receipt = await adapter.send(claim.task.outbound, claim.task.decision)
            except SendFailed as exc:
                failure = exc.failure
            except (NotConfigured, ConsentRefused) as exc:
                failure = FailureClass("config", str(exc), transient=False)
            else:
                await rt.release(await actions.do_record_sent(rt.db, claim.task, receipt))
                log.info(
                    "sent",
                    extra={"message_id": str(message_id), "attempt": claim.task.outbound.attempt},
                )
                return "sent"
            log.warning(
                "send failed",
                extra={
                    "message_id": str(message_id),
                    "code": failure.code,
                    "transient": failure.transient,
                    "attempt": claim.task.outbound.attempt,
                },
            )
            await rt.release(
                await actions.do_record_send_failure(
                    rt.db, claim.task, failure, retry_base_s=rt.settings.send_retry_base_s
                )
            )
            return f"failed: {failure.code}"
        finally:
            await adapter.close()
