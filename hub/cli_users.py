"""`hub user list|deactivate|reactivate|reset-password|edit` and `hub token list|revoke`: what an
admin does to staff accounts from the command line (the same actions as /admin/staff).

Part of the composition root like hub/cli.py: it may reach web/ and worker/, lazily, to end
sessions in Redis and to release the socket effects right away rather than at the next relay.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from hub.config import Settings
    from hub.db import Database
    from hub.inbox.actions.staff import SessionRevoker

T = TypeVar("T")


def _settings() -> Settings:
    from hub.cli import _check_database, load_settings

    settings = load_settings()
    asyncio.run(_check_database(settings, require_migrated=True))
    return settings


def _with_db(settings: Settings, work: Callable[[Database], Awaitable[T]]) -> T:
    from hub.db import Database

    async def run() -> T:
        db = Database.connect(settings.database_url)
        try:
            return await work(db)
        finally:
            await db.dispose()

    return asyncio.run(run())


class _NoSessionStore:
    """Stands in when Redis cannot be reached: the account change must not wait for it."""

    async def destroy_all_for(self, staff_id: uuid.UUID, keep: str | None = None) -> None:
        return None


def _with_sessions(
    settings: Settings,
    work: Callable[[Database, SessionRevoker], Awaitable[tuple[T, tuple[uuid.UUID, ...]]]],
) -> T:
    """Run an action that ends sessions, then release its effects (dropping live sockets in
    every `hub serve`). A failed release is left to the serve's relay, which retries it.

    Taking access away must work when Redis is down, so an unreachable Redis is a warning:
    the account change commits, and every request and socket event checks the account."""
    from hub.cli import redis_for
    from hub.errors import ConfigError

    with contextlib.ExitStack() as stack:
        try:
            ready: Settings | None = stack.enter_context(redis_for(settings))
        except ConfigError as exc:
            click.echo(
                f"hub: warning: {exc}. Going ahead: the account change takes effect at the "
                "person's next request; `hub serve` drops live sockets once it reaches Redis.",
                err=True,
            )
            ready = None
        return asyncio.run(_run_with_sessions(ready or settings, ready is not None, work))
    raise AssertionError("unreachable")  # pragma: no cover - ExitStack swallows nothing


async def _run_with_sessions(
    settings: Settings,
    reachable: bool,
    work: Callable[[Database, SessionRevoker], Awaitable[tuple[T, tuple[uuid.UUID, ...]]]],
) -> T:
    from redis import Redis
    from redis.asyncio import Redis as AsyncRedis

    from hub.db import Database
    from hub.outbox import release_events
    from web.sessions import SessionStore
    from worker.effects import OutboxSink, RedisNotifier

    db = Database.connect(settings.database_url)
    try:
        if not reachable or settings.redis_url is None:
            result, _effects = await work(db, _NoSessionStore())  # the relay releases them
            return result
        url = settings.redis_url
        redis = AsyncRedis.from_url(url)
        notifier = RedisNotifier(url, settings.key_ring())
        connection = Redis.from_url(url)
        try:
            store = SessionStore(
                redis,
                idle_s=settings.session_idle_minutes * 60,
                absolute_s=settings.session_max_hours * 3600,
            )
            result, effect_ids = await work(db, store)
            await release_events(db, OutboxSink(connection, notifier), effect_ids)
            return result
        finally:
            connection.close()
            await notifier.aclose()
            await redis.aclose()
    finally:
        await db.dispose()


def _actor(what: str) -> Any:
    from hub.audit import Actor

    return Actor.system(what)


def _when(at: datetime | None) -> str:
    return at.strftime("%Y-%m-%d %H:%M") if at else "-"


@click.command("list")
def user_list() -> None:
    """List staff accounts: role, state, teams, capacity, last sign-in, second factor."""
    from hub.inbox.actions.staff import do_list_staff

    people = _with_db(_settings(), do_list_staff)
    for p in people:
        state = "active" if p.active else "DEACTIVATED"
        if p.active and p.must_change_password:
            state = "one-time password"
        click.echo(
            f"{p.email}\t{p.role}\t{state}\tteams={','.join(p.teams) or '-'}\t"
            f"capacity={p.max_open_conversations}\tlast sign-in={_when(p.last_login_at)}\t"
            f"2fa={'on' if p.second_factor else 'off'}"
        )
    if not people:
        click.echo("No staff accounts yet: `hub user add EMAIL --name NAME --role admin`.")


@click.command("deactivate")
@click.argument("email")
def user_deactivate(email: str) -> None:
    """Take EMAIL's access away now: sessions, API tokens and live sockets end, and their
    unresolved conversations go back to their team's queue."""
    from hub.inbox.actions.staff import do_deactivate_staff

    async def work(db: Database, sessions: SessionRevoker) -> tuple[Any, tuple[uuid.UUID, ...]]:
        done = await do_deactivate_staff(db, _actor("cli:user-deactivate"), email, sessions)
        return done, done.effect_ids

    done = _with_sessions(_settings(), work)
    click.echo(
        f"deactivated {email.strip().lower()}: {done.tokens_revoked} API tokens revoked, "
        f"{len(done.conversations_returned)} conversations returned to their team's queue"
    )


@click.command("reactivate")
@click.argument("email")
def user_reactivate(email: str) -> None:
    """Let EMAIL sign in again (their old API tokens stay revoked)."""
    from hub.inbox.actions.staff import do_reactivate_staff

    async def work(db: Database) -> None:
        await do_reactivate_staff(db, _actor("cli:user-reactivate"), email)

    _with_db(_settings(), work)
    click.echo(f"reactivated {email.strip().lower()}")


@click.command("reset-password")
@click.argument("email")
def user_reset_password(email: str) -> None:
    """Give EMAIL a new one-time password, printed once; their sessions end."""
    from hub.inbox.actions.staff import do_reset_password

    async def work(db: Database, sessions: SessionRevoker) -> tuple[str, tuple[uuid.UUID, ...]]:
        return await do_reset_password(db, _actor("cli:user-reset-password"), email, sessions)

    password = _with_sessions(_settings(), work)
    click.echo(f"one-time password: {password}  (must be changed at first sign-in)")


@click.command("reset-2fa")
@click.argument("email")
def user_reset_second_factor(email: str) -> None:
    """Remove EMAIL's second factor and recovery codes (lost phone); their sessions end and
    they sign in with their password, then set it up again."""
    from hub.inbox.actions.second_factor import do_reset_second_factor

    async def work(db: Database, sessions: SessionRevoker) -> tuple[None, tuple[uuid.UUID, ...]]:
        return await do_reset_second_factor(db, _actor("cli:user-reset-2fa"), email, sessions)

    _with_sessions(_settings(), work)
    who = email.strip().lower()
    click.echo(f"second factor of {who} removed; they sign in with their password alone")


@click.command("edit")
@click.argument("email")
@click.option("--role", type=click.Choice(["agent", "coordinator", "admin"]), default=None)
@click.option(
    "--team",
    "teams",
    multiple=True,
    help="Team to be in (repeatable; replaces the current teams; each must exist).",
)
@click.option("--no-teams", is_flag=True, help="Remove the person from every team.")
@click.option("--capacity", type=int, default=None, help="Most open conversations at once.")
def user_edit(
    email: str, role: str | None, teams: tuple[str, ...], no_teams: bool, capacity: int | None
) -> None:
    """Change EMAIL's role, teams or capacity."""
    from hub.enums import Role
    from hub.errors import HubError
    from hub.inbox.actions.staff import do_edit_staff

    if teams and no_teams:
        raise HubError("give --team or --no-teams, not both")

    async def work(db: Database, _sessions: SessionRevoker) -> tuple[None, tuple[uuid.UUID, ...]]:
        effects = await do_edit_staff(
            db,
            _actor("cli:user-edit"),
            email,
            role=Role(role) if role else None,
            teams=list(teams) if teams or no_teams else None,
            capacity=capacity,
        )
        return None, effects  # released now: their open sockets change rooms at once

    _with_sessions(_settings(), work)
    click.echo(f"updated {email.strip().lower()}")


@click.command("list")
@click.argument("email", required=False)
def token_list(email: str | None) -> None:
    """List API tokens (of EMAIL only, when given): id, owner, name, state, expiry."""
    from hub.inbox.actions.staff import do_list_tokens

    async def work(db: Database) -> Any:
        return await do_list_tokens(db, email)

    from hub.db import utcnow

    now = utcnow()
    tokens = _with_db(_settings(), work)
    for t in tokens:
        click.echo(
            f"{t.id}\t{t.email}\t{t.name}\t{t.state(now)}\texpires={_when(t.expires_at)}\t"
            f"last used={_when(t.last_used_at)}"
        )
    if not tokens:
        click.echo("No API tokens.")


@click.command("revoke")
@click.argument("token_id")
def token_revoke(token_id: str) -> None:
    """Revoke the API token with this id (from `hub token list`); it stops working at once."""
    from hub.errors import HubError
    from hub.inbox.actions.staff import do_revoke_token

    try:
        parsed = uuid.UUID(token_id)
    except ValueError:
        raise HubError(f"{token_id!r} is not a token id; `hub token list` shows them") from None

    async def work(db: Database) -> None:
        await do_revoke_token(db, _actor("cli:token-revoke"), parsed)

    _with_db(_settings(), work)
    click.echo(f"revoked token {parsed}")


def add_commands(user: click.Group, token: click.Group) -> None:
    for command in (
        user_list,
        user_deactivate,
        user_reactivate,
        user_reset_password,
        user_reset_second_factor,
        user_edit,
    ):
        user.add_command(command)
    token.add_command(token_list)
    token.add_command(token_revoke)
