"""Poll a bounce mailbox over IMAP or POP3 (stdlib clients run in a worker thread).

URLs: ``imaps://user:pass@host[:993]/INBOX``, ``imap://…?tls=starttls|none``,
``pop3s://…``, ``pop3://…?tls=starttls|none``. Plain ``imap://``/``pop3://`` default
to STARTTLS; ``tls=none`` must be asked for. Certificates are verified unless the
caller passes its own ``ssl_context``.

Contract: ``fetch()`` returns items; the caller calls ``done(item)`` only after the
item's effects are committed (IMAP moves it to ``Processed``, POP3 deletes it) or
``set_aside(item)`` (IMAP moves it to ``Unmatched``; POP3 cannot move, so its UIDL is
recorded locally and the message is left on the server). A crash before ``done`` means
the item is fetched again. Credentials never appear in reprs, logs or exceptions.
"""

from __future__ import annotations

import asyncio
import contextlib
import imaplib
import os
import poplib
import re
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

TlsMode = Literal["implicit", "starttls", "none"]
_DEFAULT_PORTS = {"imaps": 993, "imap": 143, "pop3s": 995, "pop3": 110}


class MailboxError(Exception):
    """A mailbox operation failed. Messages never include credentials."""


@dataclass(frozen=True)
class MailboxConfig:
    scheme: str
    host: str
    port: int
    tls: TlsMode
    username: str = field(repr=False)
    password: str = field(repr=False)
    folder: str = "INBOX"

    @property
    def safe_url(self) -> str:
        return f"{self.scheme}://***@{self.host}:{self.port}/{self.folder}"

    def __str__(self) -> str:
        return self.safe_url


def parse_mailbox_url(url: str) -> MailboxConfig:
    """Parse a mailbox URL; errors never echo the URL (it holds the password)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise MailboxError("malformed mailbox URL") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise MailboxError(f"unsupported mailbox scheme {scheme!r}")
    if not parts.hostname or parts.username is None or parts.password is None:
        raise MailboxError("mailbox URL needs user, password and host")
    query = parse_qs(parts.query)
    tls_param = (query.get("tls") or [""])[0].lower()
    tls: TlsMode
    if scheme.endswith("s"):
        if tls_param not in ("", "implicit"):
            raise MailboxError(f"{scheme} always uses implicit TLS")
        tls = "implicit"
    elif tls_param in ("", "starttls"):
        tls = "starttls"
    elif tls_param == "none":
        tls = "none"
    else:
        raise MailboxError("tls must be starttls or none")
    folder = unquote(parts.path.lstrip("/")) or "INBOX"
    return MailboxConfig(
        scheme=scheme,
        host=parts.hostname,
        port=port or _DEFAULT_PORTS[scheme],
        tls=tls,
        username=unquote(parts.username),
        password=unquote(parts.password),
        folder=folder,
    )


@dataclass(frozen=True)
class MailboxItem:
    handle: str  # opaque: IMAP "<uidvalidity>:<uid>", POP3 the UIDL
    raw: bytes = field(repr=False)


class Mailbox(Protocol):
    async def fetch(self) -> list[MailboxItem]: ...

    async def done(self, item: MailboxItem) -> None: ...

    async def set_aside(self, item: MailboxItem) -> None: ...

    async def close(self) -> None: ...


def open_mailbox(
    url: str,
    *,
    ssl_context: ssl.SSLContext | None = None,
    timeout: float = 30.0,
    batch_size: int = 50,
    processed_folder: str = "Processed",
    unmatched_folder: str = "Unmatched",
    pop3_state_file: Path | None = None,
) -> Mailbox:
    """Build the reader for a mailbox URL (no network I/O until the first call)."""
    config = parse_mailbox_url(url)
    context = ssl_context or ssl.create_default_context()
    if config.scheme.startswith("imap"):
        return ImapMailbox(
            config,
            ssl_context=context,
            timeout=timeout,
            batch_size=batch_size,
            processed_folder=processed_folder,
            unmatched_folder=unmatched_folder,
        )
    return Pop3Mailbox(
        config,
        ssl_context=context,
        timeout=timeout,
        batch_size=batch_size,
        state_file=pop3_state_file,
    )


def _quote(folder: str) -> str:
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'


class ImapMailbox:
    """One IMAP connection, reopened after errors; calls are serialised by a lock."""

    def __init__(
        self,
        config: MailboxConfig,
        *,
        ssl_context: ssl.SSLContext,
        timeout: float = 30.0,
        batch_size: int = 50,
        processed_folder: str = "Processed",
        unmatched_folder: str = "Unmatched",
    ) -> None:
        self._config = config
        self._ssl = ssl_context
        self._timeout = timeout
        self._batch = batch_size
        self._processed = processed_folder
        self._unmatched = unmatched_folder
        self._conn: imaplib.IMAP4 | None = None
        self._uidvalidity = ""
        self._created: set[str] = set()
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"ImapMailbox({self._config.safe_url})"

    async def _run(self, func, *args):  # type: ignore[no-untyped-def]
        async with self._lock:
            try:
                return await asyncio.to_thread(func, *args)
            except MailboxError:
                self._drop()
                raise
            except (imaplib.IMAP4.error, OSError, EOFError) as exc:
                self._drop()
                raise MailboxError(f"IMAP error on {self._config.safe_url}: {exc}") from None

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(OSError, imaplib.IMAP4.error):
                conn.shutdown()

    def _connect(self) -> imaplib.IMAP4:
        if self._conn is not None:
            return self._conn
        cfg = self._config
        conn: imaplib.IMAP4
        if cfg.tls == "implicit":
            conn = imaplib.IMAP4_SSL(
                cfg.host, cfg.port, ssl_context=self._ssl, timeout=self._timeout
            )
        else:
            conn = imaplib.IMAP4(cfg.host, cfg.port, timeout=self._timeout)
            if cfg.tls == "starttls":
                conn.starttls(ssl_context=self._ssl)  # raises if not offered: no downgrade
        try:
            conn.login(cfg.username, cfg.password)
        except imaplib.IMAP4.error:
            conn.shutdown()
            raise MailboxError(f"IMAP login failed on {cfg.safe_url}") from None
        status, _data = conn.select(_quote(cfg.folder))
        if status != "OK":
            conn.shutdown()
            raise MailboxError(f"cannot select folder on {cfg.safe_url}")
        validity = conn.response("UIDVALIDITY")[1]
        self._uidvalidity = (validity[0] or b"").decode() if validity and validity[0] else ""
        self._conn = conn
        return conn

    def _fetch(self) -> list[MailboxItem]:
        conn = self._connect()
        conn.noop()  # lets the server report new messages on a reused connection
        status, data = conn.uid("SEARCH", "UNDELETED")
        if status != "OK":
            raise MailboxError("IMAP SEARCH failed")
        uids = [u.decode() for u in (data[0] or b"").split()[: self._batch]]
        items = []
        for uid in uids:
            status, parts = conn.uid("FETCH", uid, "(BODY.PEEK[])")
            raw = next((p[1] for p in parts if isinstance(p, tuple)), None)
            if status == "OK" and isinstance(raw, bytes):
                items.append(MailboxItem(f"{self._uidvalidity}:{uid}", raw))
        return items

    def _ensure_folder(self, conn: imaplib.IMAP4, folder: str) -> None:
        if folder in self._created:
            return
        _status, _ = conn.create(_quote(folder))
        # NO usually means "already exists"; a real problem surfaces at COPY/MOVE.
        self._created.add(folder)

    def _move(self, item: MailboxItem, folder: str) -> None:
        conn = self._connect()
        validity, _, uid = item.handle.partition(":")
        if validity != self._uidvalidity:
            return  # mailbox was recreated; the uid no longer names this message
        self._ensure_folder(conn, folder)
        if "MOVE" in conn.capabilities:
            status, data = conn.uid("MOVE", uid, _quote(folder))
            if status != "OK":
                raise MailboxError(f"IMAP MOVE failed: {data!r}")
            return
        status, data = conn.uid("COPY", uid, _quote(folder))
        if status != "OK":
            raise MailboxError(f"IMAP COPY failed: {data!r}")
        conn.uid("STORE", uid, "+FLAGS.SILENT", r"(\Deleted)")
        if "UIDPLUS" in conn.capabilities:
            conn.uid("EXPUNGE", uid)
        else:
            conn.expunge()

    async def fetch(self) -> list[MailboxItem]:
        result: list[MailboxItem] = await self._run(self._fetch)
        return result

    async def done(self, item: MailboxItem) -> None:
        await self._run(self._move, item, self._processed)

    async def set_aside(self, item: MailboxItem) -> None:
        await self._run(self._move, item, self._unmatched)

    async def close(self) -> None:
        async with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                await asyncio.to_thread(_imap_logout, conn)


def _imap_logout(conn: imaplib.IMAP4) -> None:
    with contextlib.suppress(imaplib.IMAP4.error, OSError, EOFError):
        conn.logout()


_UIDL_LINE = re.compile(rb"^(\d+)\s+(\S+)$")


class Pop3Mailbox:
    """POP3 reader: one short session per call, because DELE only commits at QUIT."""

    def __init__(
        self,
        config: MailboxConfig,
        *,
        ssl_context: ssl.SSLContext,
        timeout: float = 30.0,
        batch_size: int = 50,
        state_file: Path | None = None,
    ) -> None:
        self._config = config
        self._ssl = ssl_context
        self._timeout = timeout
        self._batch = batch_size
        self._state_file = state_file
        self._aside: set[str] = set()
        if state_file is not None and state_file.exists():
            self._aside = set(state_file.read_text().split())
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"Pop3Mailbox({self._config.safe_url})"

    @property
    def set_aside_uidls(self) -> frozenset[str]:
        return frozenset(self._aside)

    async def _run(self, func, *args):  # type: ignore[no-untyped-def]
        async with self._lock:
            try:
                return await asyncio.to_thread(func, *args)
            except MailboxError:
                raise
            except (poplib.error_proto, OSError, EOFError) as exc:
                raise MailboxError(f"POP3 error on {self._config.safe_url}: {exc}") from None

    def _session(self) -> poplib.POP3:
        cfg = self._config
        conn: poplib.POP3
        if cfg.tls == "implicit":
            conn = poplib.POP3_SSL(cfg.host, cfg.port, timeout=self._timeout, context=self._ssl)
        else:
            conn = poplib.POP3(cfg.host, cfg.port, timeout=self._timeout)
            if cfg.tls == "starttls":
                conn.stls(context=self._ssl)
        try:
            conn.user(cfg.username)
            conn.pass_(cfg.password)
        except poplib.error_proto:
            _pop_close(conn)
            raise MailboxError(f"POP3 login failed on {cfg.safe_url}") from None
        return conn

    @staticmethod
    def _uidls(conn: poplib.POP3) -> dict[str, int]:
        _, lines, _ = conn.uidl()
        table = {}
        for line in lines:
            match = _UIDL_LINE.match(line.strip())
            if match:
                table[match.group(2).decode()] = int(match.group(1))
        return table

    def _fetch(self) -> list[MailboxItem]:
        conn = self._session()
        try:
            items = []
            for uidl, number in self._uidls(conn).items():
                if uidl in self._aside:
                    continue
                _, lines, _ = conn.retr(number)
                items.append(MailboxItem(uidl, b"\r\n".join(lines) + b"\r\n"))
                if len(items) >= self._batch:
                    break
            conn.quit()
            return items
        finally:
            _pop_close(conn)

    def _delete(self, item: MailboxItem) -> None:
        conn = self._session()
        try:
            number = self._uidls(conn).get(item.handle)
            if number is not None:
                conn.dele(number)
            conn.quit()  # the deletion takes effect only here
        finally:
            _pop_close(conn)

    def _remember(self, item: MailboxItem) -> None:
        if item.handle in self._aside:
            return
        self._aside.add(item.handle)
        if self._state_file is not None:
            with self._state_file.open("a") as handle:
                handle.write(item.handle + "\n")
                handle.flush()
                os.fsync(handle.fileno())

    async def fetch(self) -> list[MailboxItem]:
        result: list[MailboxItem] = await self._run(self._fetch)
        return result

    async def done(self, item: MailboxItem) -> None:
        await self._run(self._delete, item)

    async def set_aside(self, item: MailboxItem) -> None:
        await self._run(self._remember, item)

    async def close(self) -> None:
        return None


def _pop_close(conn: poplib.POP3) -> None:
    with contextlib.suppress(OSError):
        conn.close()
