from __future__ import annotations

import pytest

from service.bounces import ReportKind, parse_report, parse_return_path
from service.bounces.classify import BounceCategory as C
from tests.bounces.conftest import (
    BASE,
    MESSAGE_ID,
    ORIGINAL_MESSAGE_ID,
    RECIPIENT_ID,
    SECRET,
    fixture_bytes,
)

# fixture -> (kind, format, report Message-ID, original Message-ID, [(addr, action, status, cat)])
CASES = {
    "postfix_dsn.eml": (
        ReportKind.BOUNCE,
        "dsn",
        "<20261128013715.C75CA20C512@relay.kirim.test>",
        ORIGINAL_MESSAGE_ID,
        [("nosuchuser@remote.kirim.test", "failed", "5.1.1", C.MAILBOX_UNKNOWN)],
    ),
    "dsn_delayed.eml": (
        ReportKind.DELAY,
        "dsn",
        "<20241112100000.4XyZ1q2w3e@relay.example.net>",
        ORIGINAL_MESSAGE_ID,
        [("slow@far.example.org", "delayed", "4.4.1", C.TRANSIENT)],
    ),
    "arf_complaint.eml": (
        ReportKind.COMPLAINT,
        "arf",
        "<arf-20241113-0001@isp.example.net>",
        ORIGINAL_MESSAGE_ID,
        [("reader@isp.example.net", "complaint", None, C.COMPLAINT)],
    ),
    "qmail.eml": (
        ReportKind.BOUNCE,
        "qmail",
        "<20241112100000.12345.qmail@qmail.example.org>",
        ORIGINAL_MESSAGE_ID,
        [
            ("gone@qmail.example.org", "failed", "5.1.1", C.MAILBOX_UNKNOWN),
            ("huge@other.example.org", "failed", "5.3.4", C.MESSAGE_TOO_LARGE),
        ],
    ),
    "exim.eml": (
        ReportKind.BOUNCE,
        "exim",
        "<E1tAbCd-0001Xy-Zz@exim.example.org>",
        ORIGINAL_MESSAGE_ID,
        [
            ("full@exim.example.org", "failed", "5.2.2", C.MAILBOX_FULL),
            ("blocked@exim.example.org", "failed", "5.7.1", C.SPAM_BLOCK),
        ],
    ),
    "exim_delay.eml": (
        ReportKind.DELAY,
        "exim",
        "<E1tAbZZ-0001Zz-Qq@exim.example.org>",
        None,
        [("later@exim.example.org", "delayed", "4.3.0", C.TRANSIENT)],
    ),
    "exchange.eml": (
        ReportKind.BOUNCE,
        "text",
        "<b1c2d3e4-0000-4444-8888-abcdefabcdef@EXCH01.corp.example.com>",
        ORIGINAL_MESSAGE_ID,
        [("nobody@corp.example.com", "failed", "5.1.10", C.MAILBOX_UNKNOWN)],
    ),
    "gmail.eml": (
        ReportKind.BOUNCE,
        "text",
        "<5f3e9a.0a0b0c0d@mx.google.example>",
        None,
        [("missing.person@gmail.example", "failed", "5.1.1", C.MAILBOX_UNKNOWN)],
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_fixture(name: str) -> None:
    kind, fmt, report_id, original_id, entries = CASES[name]
    report = parse_report(fixture_bytes(name))
    assert report.kind is kind
    assert report.format == fmt
    assert report.report_message_id == report_id
    assert report.original_message_id == original_id
    got = [(r.address, r.action, r.status, r.category) for r in report.recipients]
    assert got == entries
    tokens = {parse_return_path(a, BASE, SECRET) for a in report.envelope_addresses}
    assert (MESSAGE_ID, RECIPIENT_ID) in tokens


def test_dsn_details() -> None:
    report = parse_report(fixture_bytes("dsn_delayed.eml"))
    [entry] = report.recipients
    assert entry.original_address == "slow@far.example.org"
    assert entry.diagnostic == "connect to mx.far.example.org[192.0.2.25]:25: Connection timed out"
    assert report.reporting_mta == "relay.example.net"


def test_arf_details() -> None:
    report = parse_report(fixture_bytes("arf_complaint.eml"))
    assert report.feedback_type == "abuse"
    assert report.reporting_mta == "mail.isp.example.net"


def test_autoreply_is_unknown() -> None:
    report = parse_report(fixture_bytes("autoreply.eml"))
    assert report.kind is ReportKind.UNKNOWN
    assert report.recipients == ()
    assert report.report_message_id == "<ooo-1@elsewhere.example>"


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x00\xff\xfe garbage",
        b"Content-Type: multipart/report; report-type=delivery-status; boundary=x\n\n--x\n",
        b'Content-Type: multipart/report; boundary="b"\n\n--b\nContent-Type: '
        b"message/delivery-status\n\nReporting-MTA: dns; x\n\n--b--\n",
        b"From: MAILER-DAEMON@x.example\nSubject: Undelivered Mail\n\nno details at all\n",
    ],
)
def test_malformed_input_never_raises(raw: bytes) -> None:
    report = parse_report(raw)
    assert report.kind in (ReportKind.UNKNOWN, ReportKind.BOUNCE)


def test_base64_encoded_delivery_status_and_global_dsn() -> None:
    import base64

    fields = (
        b"Reporting-MTA: dns; mx.example.net\r\n\r\n"
        b"Final-Recipient: utf-8; \xc3\xbcser@example.net\r\nAction: failed\r\n"
        b"Status: 5.1.1\r\n"
    )
    raw = (
        b"Message-ID: <g1@mx.example.net>\r\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nfailed\r\n"
        b"--b\r\nContent-Type: message/global-delivery-status\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(fields).replace(b"\n", b"\r\n")
        + b"--b--\r\n"
    )
    report = parse_report(raw)
    assert report.kind is ReportKind.BOUNCE
    assert [(r.address, r.status) for r in report.recipients] == [("üser@example.net", "5.1.1")]


def test_multiple_recipients_mixed_actions() -> None:
    raw = (
        b"Message-ID: <m1@mx.example.net>\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\n\n'
        b"--b\nContent-Type: message/delivery-status\n\n"
        b"Reporting-MTA: dns; mx.example.net\n\n"
        b"Final-Recipient: rfc822; ok@example.net\nAction: delivered\nStatus: 2.0.0\n\n"
        b"Final-Recipient: rfc822; bad@example.net\nAction: failed\nStatus: 5.2.2\n\n"
        b"--b--\n"
    )
    report = parse_report(raw)
    assert report.kind is ReportKind.BOUNCE
    assert [(r.address, r.action, r.category) for r in report.recipients] == [
        ("ok@example.net", "delivered", None),
        ("bad@example.net", "failed", C.MAILBOX_FULL),
    ]


def test_global_dsn_in_8bit_utf8() -> None:
    raw = (
        "Message-ID: <g2@mx.example.net>\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\n\n'
        "--b\nContent-Type: message/global-delivery-status\n\n"
        "Reporting-MTA: dns; mx.example.net\n\n"
        "Final-Recipient: utf-8; 用户@例子.example\nAction: failed\nStatus: 5.1.1\n"
        "Diagnostic-Code: smtp; 550 5.1.1 用户 unknown\n\n"
        "--b--\n"
    ).encode()
    report = parse_report(raw)
    assert report.reporting_mta == "mx.example.net"
    assert [(r.address, r.status, r.category) for r in report.recipients] == [
        ("用户@例子.example", "5.1.1", C.MAILBOX_UNKNOWN)
    ]
