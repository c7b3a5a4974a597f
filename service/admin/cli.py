"""``kirim admin``: the operator API's actions from a shell, straight against the database."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from service.admin import actions, pauses
from service.db.engine import Database
from service.settings import Settings, load_settings

T = TypeVar("T")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(text: str) -> float:
    """Seconds from '90', '90s', '15m', '2h' or '3d'."""
    m = _DURATION.match(text.strip().lower())
    if not m:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (use 90s, 15m, 2h, 3d)")
    return float(m.group(1)) * _UNIT[m.group(2)]


def add_parser(sub: Any) -> None:
    admin = sub.add_parser("admin", help="Operate the queue: stats, retry, cancel, bounce, pause.")
    asub = admin.add_subparsers(metavar="action")

    stats = asub.add_parser("stats", help="Recipients by state, due queue, busiest domains.")
    stats.add_argument("--tenant")
    stats.set_defaults(func=cmd_stats)

    for name, text in (
        ("retry", "Make waiting recipients due now (default: deferred ones)."),
        ("cancel", "Cancel waiting recipients (needs --yes)."),
        ("bounce", "Bounce waiting recipients (needs --yes)."),
    ):
        p = asub.add_parser(name, help=text)
        p.add_argument(
            "--status",
            action="append",
            choices=actions.WAITING,
            help="Repeat for several; default deferred for retry, every waiting state otherwise.",
        )
        p.add_argument("--domain", help="Recipient domain, e.g. example.com.")
        p.add_argument("--tenant")
        p.add_argument("--older-than", type=duration, help="Accepted at least this long ago.")
        p.add_argument("--limit", type=int, help="Change at most this many.")
        p.add_argument("--dry-run", action="store_true", help="Only print the count.")
        p.add_argument("--yes", action="store_true", help="Confirm cancel or bounce.")
        p.set_defaults(func=cmd_action, action=name)

    for name, fn in (("pause", cmd_pause), ("resume", cmd_resume)):
        p = asub.add_parser(name, help=f"{name.title()} delivery to a tenant or domain.")
        target = p.add_mutually_exclusive_group(required=True)
        target.add_argument("--tenant")
        target.add_argument("--domain")
        if name == "pause":
            p.add_argument("--reason", default="")
        p.set_defaults(func=fn)

    listing = asub.add_parser("pauses", help="List active pauses.")
    listing.set_defaults(func=cmd_pauses)

    hashing = asub.add_parser("hash", help="The form an address takes in hashed logs.")
    hashing.add_argument("address")
    hashing.set_defaults(func=cmd_hash)


def _run(settings: Settings, fn: Callable[[Database], Awaitable[T]]) -> T:
    async def main() -> T:
        db = Database.from_settings(settings)
        try:
            return await fn(db)
        finally:
            await db.dispose()

    return asyncio.run(main())


def _settings() -> Settings:
    from service import logs

    logs.setup("WARNING")
    return load_settings()


def cmd_stats(args: argparse.Namespace) -> int:
    out = _run(_settings(), lambda db: actions.stats(db, now=time.time(), tenant=args.tenant))
    print(json.dumps(out, indent=2))
    return 0


def cmd_action(args: argparse.Namespace) -> int:
    settings = _settings()
    sel = actions.Selection(
        tuple(args.status or ()), args.domain, args.tenant, args.older_than, args.limit
    )
    destructive = args.action in ("cancel", "bounce")

    async def run(db: Database) -> tuple[actions.Result, actions.Result | None]:
        counted = await actions.apply(db, args.action, sel, now=time.time(), dry_run=True)
        if args.dry_run or counted.matched == 0 or (destructive and not args.yes):
            return counted, None
        return counted, await actions.apply(db, args.action, sel, now=time.time())

    try:
        counted, done = _run(settings, run)
    except ValueError as exc:
        print(f"kirim: {exc}", file=sys.stderr)
        return 2
    print(f"{counted.matched} recipients match")
    if done is not None:
        print(f"{args.action}: {done.changed} changed")
    elif destructive and not args.dry_run and counted.matched:
        print(f"nothing changed: add --yes to {args.action} them", file=sys.stderr)
        return 1
    return 0


def _target(args: argparse.Namespace) -> tuple[str, str]:
    return ("tenant", args.tenant) if args.tenant else ("domain", args.domain)


def cmd_pause(args: argparse.Namespace) -> int:
    kind, value = _target(args)
    try:
        value = pauses.normalise(kind, value)
        created = _run(
            _settings(),
            lambda db: pauses.pause(db, kind, value, reason=args.reason, now=time.time()),
        )
    except ValueError as exc:
        print(f"kirim: {exc}", file=sys.stderr)
        return 2
    print(f"paused {kind} {value}" if created else f"{kind} {value} was already paused")
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    kind, value = _target(args)
    try:
        removed = _run(_settings(), lambda db: pauses.resume(db, kind, value))
    except ValueError as exc:
        print(f"kirim: {exc}", file=sys.stderr)
        return 2
    print(f"resumed {kind} {value}" if removed else f"{kind} {value} was not paused")
    return 0 if removed else 1


def cmd_pauses(args: argparse.Namespace) -> int:
    for p in _run(_settings(), pauses.list_pauses):
        print(f"{p.kind}\t{p.value}\t{p.reason}")
    return 0


def cmd_hash(args: argparse.Namespace) -> int:
    from service.observability.logging import hash_address

    print(hash_address(args.address))
    return 0
