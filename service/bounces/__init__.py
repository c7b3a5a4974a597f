"""Bounce and complaint handling: signed return paths, report parsing, mailbox readers.

Public surface:

- ``make_return_path`` / ``parse_return_path`` (return_path.py): per-recipient signed VERP.
- ``parse_report`` (parse.py) -> ``BounceReport``: DSN, ARF and common non-standard bounces.
- ``classify`` (classify.py): enhanced status code + diagnostic text -> ``BounceCategory``.
- ``open_mailbox`` (mailbox.py): IMAP/POP3 readers with ``fetch``/``done``/``set_aside``.
- ``BounceReceiver`` (receiver.py): aiosmtpd handler feeding an async callback.
- ``BounceProcessor`` / ``process_item`` (pipeline.py): parse -> match -> apply -> decision.
"""

from service.bounces.classify import BounceCategory, classify
from service.bounces.mailbox import Mailbox, MailboxError, MailboxItem, open_mailbox
from service.bounces.parse import BounceReport, RecipientReport, ReportKind, parse_report
from service.bounces.pipeline import BounceProcessor, Decision, Match, Outcome, process_item
from service.bounces.return_path import make_return_path, parse_return_path

__all__ = [
    "BounceCategory",
    "BounceProcessor",
    "BounceReport",
    "Decision",
    "Mailbox",
    "MailboxError",
    "MailboxItem",
    "Match",
    "Outcome",
    "RecipientReport",
    "ReportKind",
    "classify",
    "make_return_path",
    "open_mailbox",
    "parse_report",
    "parse_return_path",
    "process_item",
]
