"""RQ job entry points. Each takes an id, opens its own runtime, and calls hub actions."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from datetime import timedelta

from hub.channels.base import ChannelAdapter, FailureClass, NotConfigured, SendFailed
from hub.channels.registry import connected_providers, resolve_adapter
from hub.config import Settings
from hub.consent.exceptions import ConsentRefused
from hub.errors import HubError
from hub.inbox import actions
from hub.inbox.actions.delivery import SendOutcome, SendTask
from hub.journeys.dispatch import do_prepare_batch  # loaded before the pool forks, not per job
from worker.runtime import JobRuntime, job_runtime

log = logging.getLogger(__name__)


def send_message(message_id: str) -> str:
    return asyncio.run(run_send_message(uuid.UUID(message_id)))


def tick() -> str:
    from worker.tick import run_tick

    return asyncio.run(run_tick())


def retention_purge() -> str:
    from worker.rights import run_retention_purge

    return asyncio.run(run_retention_purge())


def delete_provider_files() -> str:
    from worker.rights import run_delete_provider_files

    return asyncio.run(run_delete_provider_files())


def resolve_stuck_sends() -> str:
    return asyncio.run(run_resolve_stuck_sends())


def dispatch_batch(run_ids: str) -> str:
    return asyncio.run(run_dispatch_batch([uuid.UUID(r) for r in run_ids.split(",") if r]))


SEND_CONCURRENCY = 100
"""Provider calls of one batch in flight at once (the SDK's HTTP client holds 100 connections).
A batch's sends then take at most DEFAULT_BATCH / 100 = 5 API timeouts (75 s), well inside the
120 s after which the stuck-send sweep takes an unanswered send for a dead one."""


async def run_dispatch_batch(run_ids: list[uuid.UUID], settings: Settings | None = None) -> str:
    """Prepare a claimed batch in one transaction, send its messages concurrently, record the
    answers in one more. Runs another batch already handled come back as "gone"."""
    async with job_runtime(settings) as rt:
        batch = await do_prepare_batch(
            rt.db,
            rt.ring,
            run_ids,
            providers=connected_providers(rt.settings),
            clinic=rt.settings.clinic,
            public_url=rt.settings.public_url,
            reply_domain=rt.settings.reply_domain,
        )
        await rt.release(batch.effect_ids)
        outcomes = await send_all(rt.settings, batch.tasks)
        await rt.release(
            await actions.do_record_outcomes(
                rt.db, outcomes, retry_base_s=rt.settings.send_retry_base_s
            )
        )
        counts = batch.counts()
        failed = sum(o.failure is not None for o in outcomes)
        if failed:
            counts["send failed"] = failed
        log.info("dispatch batch done", extra={"runs": len(run_ids), **counts})
        return ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))


async def send_all(settings: Settings, tasks: Sequence[SendTask]) -> list[SendOutcome]:
    """Hand each task to its channel's adapter, ``SEND_CONCURRENCY`` at a time. Never raises
    for one message: its failure is classified and recorded like any other."""
    adapters: dict[str, ChannelAdapter] = {}
    gate = asyncio.Semaphore(SEND_CONCURRENCY)

    async def one(task: SendTask) -> SendOutcome:
        async with gate:
            try:
                adapter = adapters.get(task.provider)
                if adapter is None:
                    adapter = adapters[task.provider] = resolve_adapter(task.provider, settings)
                receipt = await adapter.send(task.outbound, task.decision)
            except SendFailed as exc:
                return SendOutcome(task, failure=exc.failure)
            except (HubError, ConsentRefused) as exc:
                return SendOutcome(task, failure=FailureClass("config", str(exc), transient=False))
            return SendOutcome(task, receipt=receipt)

    try:
        return list(await asyncio.gather(*(one(t) for t in tasks)))
    finally:
        for adapter in adapters.values():
            await adapter.close()


def fetch_media(attachment_id: str) -> str:
    from worker.media import run_fetch_media

    return asyncio.run(run_fetch_media(uuid.UUID(attachment_id)))


async def run_send_message(message_id: uuid.UUID, settings: Settings | None = None) -> str:
    async with job_runtime(settings) as rt:
        claim = await actions.do_claim_send(
            rt.db,
            rt.ring,
            message_id,
            provider=connected_providers(rt.settings),
            public_url=rt.settings.public_url,
            reply_domain=rt.settings.reply_domain,
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


STUCK_LOOKUP_CONCURRENCY = 16
"""Questions to the provider about stuck sends in flight at once."""


async def run_resolve_stuck_sends(settings: Settings | None = None) -> str:
    async with job_runtime(settings) as rt:
        return await resolve_stuck_sends_with(rt)


async def resolve_stuck_sends_with(rt: JobRuntime) -> str:
    """Ask the provider about sends whose sender died mid-call: record the ones it has, send
    the rest again. Either way each message reaches the patient once."""
    stuck = await actions.do_find_stuck_sends(
        rt.db, rt.ring, after=timedelta(seconds=rt.settings.send_stuck_s)
    )
    if not stuck:
        return "stuck: 0"
    adapters: dict[str, ChannelAdapter] = {}
    gate = asyncio.Semaphore(STUCK_LOOKUP_CONCURRENCY)
    answers: list[bool] = []
    again: list[SendTask] = []

    async def one(item: actions.StuckSend) -> None:
        async with gate:
            adapter = adapters.get(item.task.provider)
            if adapter is None:
                adapter = adapters[item.task.provider] = resolve_adapter(
                    item.task.provider, rt.settings
                )
            try:
                receipt = await adapter.find_sent(item.task.outbound, item.claimed_at)
            except SendFailed:
                return  # cannot ask now; it stays stuck and the next sweep asks again
            await rt.release(
                await actions.do_resolve_stuck_send(
                    rt.db,
                    item,
                    receipt,
                    classify_error=adapter.classify_error,
                    retry_base_s=rt.settings.send_retry_base_s,
                )
            )
            answers.append(receipt is not None)
            if receipt is None:
                claim = await actions.do_claim_send(
                    rt.db,
                    rt.ring,
                    item.task.outbound.message_id,
                    provider=connected_providers(rt.settings),
                    public_url=rt.settings.public_url,
                    reply_domain=rt.settings.reply_domain,
                )
                await rt.release(claim.effect_ids)
                if claim.task is not None:
                    again.append(claim.task)

    try:
        await asyncio.gather(*(one(item) for item in stuck))
    finally:
        for adapter in adapters.values():
            await adapter.close()
    outcomes = await send_all(rt.settings, again)
    await rt.release(
        await actions.do_record_outcomes(
            rt.db, outcomes, retry_base_s=rt.settings.send_retry_base_s
        )
    )
    found, resent = sum(answers), len(answers) - sum(answers)
    log.info("stuck sends resolved", extra={"found": found, "resent": resent})
    return f"stuck: {len(stuck)}, found at provider: {found}, sent again: {resent}"
