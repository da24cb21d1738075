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
    parser.add_argument("--account-sid", default=os.environ.get("TWILIO_ACCOUNT_SID"))
    parser.add_argument("--auth-token", default=os.environ.get("TWILIO_AUTH_TOKEN"))
    args = parser.parse_args(argv)
    if not (args.account_sid and args.auth_token):
        parser.error("set TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN (or --account-sid/--auth-token)")
    asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
