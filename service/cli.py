"""The ``kirim`` command."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import shlex
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from service import logs, native
from service.admin import cli as admin_cli
from service.observability import logging as log_format
from service.settings import Settings, load_settings

log = logging.getLogger("kirim")

OPENAPI_PATH = Path(__file__).resolve().parent.parent / "openapi" / "openapi.json"


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    result: int = args.func(args)
    return result


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kirim", description="Transactional email delivery service.")
    sub = p.add_subparsers(metavar="command")

    serve = sub.add_parser("serve", help="Run the HTTP API (and, by default, delivery workers).")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--no-workers", action="store_true", help="API only (scale-out layout).")
    serve.set_defaults(func=cmd_serve)

    worker = sub.add_parser("worker", help="Run delivery workers only.")
    # Set by `kirim serve` for its own children: end when that process ends.
    worker.add_argument("--parent-pid", type=int, default=None, help=argparse.SUPPRESS)
    # ...and tell it through this pipe once the delivery loop runs.
    worker.add_argument("--ready-fd", type=int, default=None, help=argparse.SUPPRESS)
    worker.set_defaults(func=cmd_worker)

    bounce = sub.add_parser(
        "bounce-server", help="Receive bounce reports over SMTP (the bounce domain's MX)."
    )
    bounce.add_argument("--host", default="127.0.0.1")
    bounce.add_argument("--port", type=int, default=2526)
    bounce.set_defaults(func=cmd_bounce_server)

    dev = sub.add_parser("dev", help="Everything on this machine, with a capture SMTP server.")
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--port", type=int, default=8000)
    dev.add_argument("--smtp-port", type=int, default=2525)
    dev.add_argument("--data-dir", default=".kirim-dev", help="Database and Maildir go here.")
    dev.set_defaults(func=cmd_dev)

    migrate = sub.add_parser("migrate", help="Bring the database schema up to date.")
    migrate.set_defaults(func=cmd_migrate)

    keys = sub.add_parser("keys", help="Manage API keys.")
    ksub = keys.add_subparsers(metavar="action")
    create = ksub.add_parser("create", help="Create a key; prints the key alone on stdout.")
    create.add_argument("--name", required=True)
    create.add_argument("--tenant", default="default")
    create.add_argument(
        "--scope",
        action="append",
        dest="scopes",
        help="Repeat for several; default: messages:send messages:read webhooks:manage.",
    )
    create.add_argument("--expires-in", type=float, default=None, help="Seconds until expiry.")
    create.set_defaults(func=cmd_keys_create)
    klist = ksub.add_parser("list", help="List keys (prefixes only, never the keys).")
    klist.add_argument("--tenant", default=None, help="Only this tenant's keys.")
    klist.set_defaults(func=cmd_keys_list)
    revoke = ksub.add_parser("revoke", help="Revoke a key; it fails from the next request on.")
    revoke.add_argument("key_id", metavar="ID")
    revoke.set_defaults(func=cmd_keys_revoke)

    config = sub.add_parser("config", help="Print every setting: env file or Markdown table.")
    config.add_argument("--format", choices=("env", "markdown"), default="env")
    config.add_argument(
        "--write", action="store_true", help="Update deploy/env.example and README.md in place."
    )
    config.set_defaults(func=cmd_config)

    admin_cli.add_parser(sub)

    openapi = sub.add_parser("openapi", help="Write openapi/openapi.json from the code.")
    openapi.add_argument("--output", default=str(OPENAPI_PATH), help="'-' for stdout.")
    openapi.set_defaults(func=cmd_openapi)
    return p


def _migrate(settings: Settings) -> None:
    from service.db.migrate import upgrade

    upgrade(settings.database_url.get_secret_value())


def _sqlite_path(settings: Settings) -> None:
    url = settings.database_url.get_secret_value()
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///") :])
        path.parent.mkdir(parents=True, exist_ok=True)


def cmd_migrate(args: argparse.Namespace) -> int:
    settings = load_settings()
    log_format.configure(settings)
    _sqlite_path(settings)
    _migrate(settings)
    log.info("database is at the latest schema")
    return 0


def _run_api(
    settings: Settings,
    host: str,
    port: int,
    *,
    workers: bool,
    idle_delivery: bool = False,
    before_listening: Callable[[], None] | None = None,
) -> None:
    """Serve the API; ``workers`` delivers in this process (one core for everything),
    ``idle_delivery`` helps the delivery processes while the API is idle."""
    import uvicorn

    from service.api.app import create_app
    from service.api.http_protocol import HttpProtocol

    if settings.is_sqlite:
        _sqlite_path(settings)
        _migrate(settings)
    app = create_app(settings, run_workers=workers, idle_delivery=idle_delivery)
    if before_listening is not None:
        before_listening()
    log.info("API starting (%s)", native.state)
    uvicorn.run(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http=HttpProtocol,  # uvicorn's httptools protocol, one write per response
        log_level=settings.log_level.lower(),
        access_log=False,
        log_config=None,  # uvicorn's lines go through our handler, in our format
        timeout_graceful_shutdown=30,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
    )


# Longer than common proxy idle timeouts (60 s), so the server is never the side that
# closes an idle keep-alive connection just as a client reuses it.
KEEP_ALIVE_SECONDS = 75


def cmd_serve(args: argparse.Namespace) -> int:
    settings = load_settings()
    log_format.configure(settings)
    _tune_sqlite(settings)
    children = 0 if args.no_workers else settings.serve_worker_processes
    if args.no_workers or children == 0:
        _run_api(settings, args.host, args.port, workers=not args.no_workers)
        return 0
    from service.worker_children import WorkerChildren

    if settings.is_sqlite:
        # Migrate before any child starts, so they never race to do it.
        _sqlite_path(settings)
        _migrate(settings)
    # uvicorn re-raises SIGTERM/SIGINT once it has drained, which would end this process
    # before its children; handled here, they are stopped first and then re-raised.
    received: list[int] = []
    previous = {s: signal.signal(s, lambda n, _f: received.append(n)) for s in _STOP_SIGNALS}
    with _shared_metrics_directory():
        workers = WorkerChildren(children, grace=settings.shutdown_grace)
        workers.start()

        def children_running() -> None:
            if not workers.wait_running(CHILD_START_LIMIT):
                log.warning("delivery workers still starting; serving the API meanwhile")

        try:
            # The API is built while the children start; it listens once they deliver.
            _run_api(
                settings,
                args.host,
                args.port,
                workers=False,
                idle_delivery=settings.serve_idle_delivery,
                before_listening=children_running,
            )
        finally:
            workers.stop()
    for sig, handler in previous.items():
        signal.signal(sig, handler)
    if received and received[0] == signal.SIGINT:
        return 128 + signal.SIGINT  # a shell's code for Ctrl-C, without a traceback
    if received:
        signal.raise_signal(received[0])
    return 0


_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
CHILD_START_LIMIT = 30.0  # seconds `kirim serve` waits for its delivery children to run


def _tune_sqlite(settings: Settings) -> None:
    """SQLite's process-wide settings, before this process opens any connection."""
    if settings.is_sqlite:
        from service.db import sqlite_library

        sqlite_library.tune()


@contextlib.contextmanager
def _shared_metrics_directory() -> Iterator[None]:
    """Let the API's /metrics add up its children's counters (unless the operator chose)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        yield
        return
    import shutil
    import tempfile

    path = tempfile.mkdtemp(prefix="kirim-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path  # read by prometheus-client at import
    try:
        yield
    finally:
        shutil.rmtree(path, ignore_errors=True)


def cmd_worker(args: argparse.Namespace) -> int:
    settings = load_settings()
    log_format.configure(settings)
    if args.parent_pid is not None:
        from service.worker_children import die_with_parent

        if not die_with_parent(args.parent_pid):
            return 0  # the `kirim serve` that started us is gone already
    _tune_sqlite(settings)
    if settings.is_sqlite:
        _sqlite_path(settings)
        _migrate(settings)
    import uvloop

    uvloop.run(_worker_main(settings, ready_fd=args.ready_fd))
    return 0


async def _worker_main(settings: Settings, *, ready_fd: int | None = None) -> None:
    from service.bounces.service import mailbox_enabled, open_bounce_mailbox, run_poller
    from service.db.engine import Database
    from service.db.notify import QueueSignals
    from service.delivery.factory import build_worker, smtp_transport
    from service.observability import operations
    from service.webhooks.dispatcher import Dispatcher, options_from

    # Before anything starts: a malformed bounce mailbox URL stops the process here.
    mailbox = open_bounce_mailbox(settings) if mailbox_enabled(settings) else None
    db = Database.from_settings(settings)
    ops = operations.start(settings, db, jobs=True)
    if settings.metrics_port:
        operations.serve_metrics(settings.metrics_port)
    transport = smtp_transport(settings)
    worker = build_worker(settings, db, transport)
    dispatcher = Dispatcher(db, options_from(settings))
    signals = QueueSignals.from_settings(
        settings, wake=worker.wake, publish=False, hooks=dispatcher.wake
    )
    signals.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    from service.api import heap

    heap.settle()  # the delivery loop allocates as much as the request path
    log.info("worker %s started (%s)", worker.name, native.state)
    if ready_fd is not None:
        # The first await of the tasks below puts the loop to work; a wake-up that comes
        # before it is not lost (the wake socket is already bound and the event is latched).
        with contextlib.suppress(OSError):
            os.write(ready_fd, b"1")
            os.close(ready_fd)
    try:
        await asyncio.gather(
            worker.run(stop), dispatcher.run(stop), run_poller(settings, db, stop, mailbox=mailbox)
        )
    finally:
        await signals.aclose()
        await transport.aclose()
        await ops.aclose()
        await db.dispose()
        log.info("worker %s stopped", worker.name)


def cmd_bounce_server(args: argparse.Namespace) -> int:
    settings = load_settings()
    log_format.configure(settings)
    if settings.is_sqlite:
        _sqlite_path(settings)
        _migrate(settings)
    import uvloop

    uvloop.run(_bounce_server_main(settings, args.host, args.port))
    return 0


async def _bounce_server_main(settings: Settings, host: str, port: int) -> None:
    from service.bounces.service import start_receiver
    from service.db.engine import Database

    db = Database.from_settings(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = await start_receiver(settings, db, host=host, port=port)
    log.info("bounce receiver listening on %s:%s", host, port)
    try:
        await stop.wait()
    finally:
        server.close()
        await server.wait_closed()
        await db.dispose()
        log.info("bounce receiver stopped")


def _create_key(
    settings: Settings, name: str, tenant: str, scopes: tuple[str, ...], expires_in: float | None
) -> str:
    from service.db.engine import Database
    from service.db.keys import create_key

    async def run() -> str:
        db = Database.from_settings(settings)
        try:
            now = time.time()
            key, _ = await create_key(
                db,
                name=name,
                tenant_id=tenant,
                scopes=scopes,
                now=now,
                expires_at=now + expires_in if expires_in else None,
            )
            return key
        finally:
            await db.dispose()

    return asyncio.run(run())


def cmd_keys_create(args: argparse.Namespace) -> int:
    from service.db.keys import DEFAULT_SCOPES

    settings = load_settings()
    logs.setup("WARNING")
    if settings.is_sqlite:
        _sqlite_path(settings)
        _migrate(settings)
    scopes = tuple(args.scopes) if args.scopes else DEFAULT_SCOPES
    try:
        key = _create_key(settings, args.name, args.tenant, scopes, args.expires_in)
    except ValueError as exc:
        print(f"kirim: {exc}", file=sys.stderr)
        return 2
    print(key)
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from service.settings_doc import env_example, markdown_table, with_table

    if args.write:
        root = OPENAPI_PATH.parent.parent
        (root / "deploy" / "env.example").write_text(env_example())
        readme = root / "README.md"
        readme.write_text(with_table(readme.read_text()))
        return 0
    sys.stdout.write(env_example() if args.format == "env" else markdown_table())
    return 0


def _keys_db(settings: Settings) -> None:
    if settings.is_sqlite:
        _sqlite_path(settings)
        _migrate(settings)


def cmd_keys_list(args: argparse.Namespace) -> int:
    from service.db.engine import Database
    from service.db.keys import KeyRecord, list_keys

    settings = load_settings()
    logs.setup("WARNING")
    _keys_db(settings)

    async def run() -> list[KeyRecord]:
        db = Database(settings.database_url.get_secret_value())
        try:
            return await list_keys(db, tenant_id=args.tenant)
        finally:
            await db.dispose()

    def when(ts: float | None) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts)) if ts else "-"

    now = time.time()
    print("ID\tTENANT\tNAME\tPREFIX\tSCOPES\tCREATED\tLAST_USED\tEXPIRES\tSTATE")
    for k in asyncio.run(run()):
        state = "revoked" if k.revoked_at else ("active" if k.usable(now) else "expired")
        print(
            "\t".join(
                (
                    k.id,
                    k.tenant_id,
                    k.name,
                    k.prefix + "…",
                    ",".join(sorted(k.scopes)),
                    when(k.created_at),
                    when(k.last_used_at),
                    when(k.expires_at),
                    state,
                )
            )
        )
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    from service.db.engine import Database
    from service.db.keys import revoke_key

    settings = load_settings()
    logs.setup("WARNING")
    _keys_db(settings)

    async def run() -> bool:
        db = Database(settings.database_url.get_secret_value())
        try:
            return await revoke_key(db, args.key_id, tenant_id=None, now=time.time())
        finally:
            await db.dispose()

    if not asyncio.run(run()):
        print(f"kirim: no key {args.key_id}", file=sys.stderr)
        return 1
    print(f"revoked {args.key_id}")
    return 0


def cmd_openapi(args: argparse.Namespace) -> int:
    from service.api.openapi import render

    text = render()
    if args.output == "-":
        sys.stdout.write(text)
    else:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text)
    return 0


def cmd_dev(args: argparse.Namespace) -> int:
    from service.devtools.capture import start_capture

    data = Path(args.data_dir).resolve()
    data.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("KIRIM_DATABASE_URL", f"sqlite:///{data / 'kirim.db'}")
    os.environ["KIRIM_SMTP_URL"] = f"smtp://127.0.0.1:{args.smtp_port}?tls=none"
    os.environ.setdefault("KIRIM_RETRY_MIN_DELAY", "10")
    os.environ.setdefault("KIRIM_LOG_FORMAT", "text")
    os.environ.setdefault("KIRIM_RETRY_MAX_DELAY", "60")
    settings = load_settings()
    log_format.configure(settings)
    _migrate(settings)
    capture = start_capture(data / "maildir", port=args.smtp_port)
    key = _create_key(
        settings,
        "dev",
        "default",
        ("messages:send", "messages:read", "webhooks:manage", "keys:manage"),
        None,
    )
    body = json.dumps(
        {
            "from": "Kirim Dev <dev@example.com>",
            "to": ["you@example.com"],
            "subject": "Hello from Kirim",
            "text": "It works.",
        }
    )
    base = f"http://{args.host}:{args.port}"
    print(
        "\nKirim dev is starting.\n"
        f"  API:      {base}   (docs at {base}/docs)\n"
        f"  SMTP:     capture server on 127.0.0.1:{args.smtp_port}\n"
        f"  Mail:     kept in {data / 'maildir'}\n"
        f"  API key:  {key}\n\n"
        "Send a message:\n"
        f"  curl -s {base}/v1/messages -H 'Authorization: Bearer {key}' \\\n"
        f"       -H 'Content-Type: application/json' -d {shlex.quote(body)}\n\n"
        "Then read its status:\n"
        f"  curl -s {base}/v1/messages/<id> -H 'Authorization: Bearer {key}'\n",
        flush=True,
    )
    try:
        _run_api(settings, args.host, args.port, workers=True)
    finally:
        with contextlib.suppress(Exception):
            capture.stop()
    return 0
