"""``python -m fakes.twilio``: serve the fake until SIGTERM, for other processes."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from collections.abc import Sequence

import fakes.twilio
from fakes.twilio import FakeTwilio, start_fake_twilio


async def _serve(args: argparse.Namespace) -> None:
    fake = FakeTwilio(
        args.account_sid,
        args.auth_token,
        api_latency=args.latency_ms / 1000,
        callback_delay=args.callback_delay_ms / 1000,
        post_callbacks=not args.no_callbacks,
        fail_rate=args.fail_rate,
        stall_rate=args.stall_rate,
        stall_s=args.stall_ms / 1000,
        disorder_rate=args.disorder_rate,
        seed=args.seed,
        faults_in_a_row=args.faults_in_a_row,
    )
    runner, base_url = await start_fake_twilio(fake, args.host, args.port)
    print(base_url, flush=True)  # the one line a parent process reads
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    await stop.wait()
    await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m fakes.twilio", description=(fakes.twilio.__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port (printed)")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="before each API answer")
    parser.add_argument("--callback-delay-ms", type=float, default=0.0)
    parser.add_argument("--no-callbacks", action="store_true", help="never POST status callbacks")
    parser.add_argument(
        "--fail-rate", type=float, default=0.0, help="share of creates answered 500/503"
    )
    parser.add_argument(
        "--stall-rate",
        type=float,
        default=0.0,
        help="share of creates held --stall-ms, then dropped unanswered (nothing created)",
    )
    parser.add_argument("--stall-ms", type=float, default=2000.0)
    parser.add_argument(
        "--disorder-rate",
        type=float,
        default=0.0,
        help="share of messages whose status callbacks come shuffled, one of them twice",
    )
    parser.add_argument("--seed", type=int, default=None, help="replay the same faults")
    parser.add_argument(
        "--faults-in-a-row",
        type=int,
        default=None,
        help="at most this many injected failures in a row per recipient (default: no limit)",
    )
    parser.add_argument("--account-sid", default=os.environ.get("TWILIO_ACCOUNT_SID"))
    parser.add_argument("--auth-token", default=os.environ.get("TWILIO_AUTH_TOKEN"))
    args = parser.parse_args(argv)
    if not 0 <= args.fail_rate + args.stall_rate <= 1 or not 0 <= args.disorder_rate <= 1:
        parser.error("--fail-rate plus --stall-rate, and --disorder-rate, must be within 0..1")
    if not (args.account_sid and args.auth_token):
        parser.error("set TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN (or --account-sid/--auth-token)")
    asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
