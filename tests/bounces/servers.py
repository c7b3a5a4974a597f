"""Private Dovecot and Postfix instances on loopback for the bounce tests.

Each instance lives in its own temporary directory with its own config, listens only on
127.0.0.1 free ports, and is stopped by the PID of the process the test started.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from tests.support.ports import free_port

MAIL_USER = "nobody"  # Dovecot refuses root for mail access; any unprivileged uid will do


def require_binary(name: str) -> str:
    """Path of a server binary; skip locally if missing, fail in CI."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/lib/postfix/sbin")
    if path:
        return path
    message = f"{name} is not installed (apt-get install dovecot-imapd dovecot-pop3d postfix)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def wait_for_port(port: int, proc: subprocess.Popen[bytes] | None, deadline: float = 15.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} did not open within {deadline}s")


def stop(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


def _world_traversable_tempdir(prefix: str) -> Path:
    # pytest's tmp_path is 0700; Dovecot's and Postfix's unprivileged helpers must reach it.
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)
    return path


@dataclass
class Dovecot:
    root: Path
    proc: subprocess.Popen[bytes]
    user: str
    password: str
    imap_port: int
    imaps_port: int
    pop3_port: int
    pop3s_port: int
    ca: trustme.CA

    @property
    def maildir(self) -> Path:
        return self.root / "home" / self.user / "Maildir"

    def url(self, scheme: str, query: str = "") -> str:
        port = {
            "imap": self.imap_port,
            "imaps": self.imaps_port,
            "pop3": self.pop3_port,
            "pop3s": self.pop3s_port,
        }[scheme]
        return f"{scheme}://{self.user}:{self.password}@127.0.0.1:{port}/INBOX{query}"

    def deliver(self, raw: bytes, folder: str = "") -> Path:
        """Append a message to the Maildir the way an MDA does (tmp/ then rename to new/)."""
        box = self.maildir / (f".{folder}" if folder else "")
        for sub in ("tmp", "new", "cur"):
            (box / sub).mkdir(parents=True, exist_ok=True)
        name = f"{time.time_ns()}.{uuid.uuid4().hex}.test"
        tmp = box / "tmp" / name
        tmp.write_bytes(raw.replace(b"\r\n", b"\n"))
        entry = pwd.getpwnam(MAIL_USER)
        for path in (self.root / "home", *self.maildir.rglob("*"), self.maildir, tmp):
            # Dovecot may move a message it is serving from new/ to cur/ meanwhile; the
            # file it moved was handed over (and owned) when it was delivered.
            with contextlib.suppress(FileNotFoundError):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        final = box / "new" / name
        tmp.rename(final)
        return final

    def messages(self, folder: str = "") -> list[bytes]:
        box = self.maildir / (f".{folder}" if folder else "")
        for _ in range(50):
            files = [p for sub in ("new", "cur") for p in (box / sub).glob("*") if p.is_file()]
            try:
                return [p.read_bytes() for p in sorted(files)]
            except FileNotFoundError:
                time.sleep(0.01)  # Dovecot moved one between listing and reading: list again
        raise AssertionError("the Maildir kept changing while being read")


def start_dovecot() -> Dovecot:
    binary = require_binary("dovecot")
    root = _world_traversable_tempdir("kirim-dovecot-")
    entry = pwd.getpwnam(MAIL_USER)
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.private_key_and_cert_chain_pem.write_to_path(str(root / "server.pem"))
    (root / "server.pem").chmod(0o600)
    password = uuid.uuid4().hex
    user = "bounces"
    home = root / "home" / user
    (home / "Maildir").mkdir(parents=True)
    for path in (root / "home", home, home / "Maildir"):
        os.chown(path, entry.pw_uid, entry.pw_gid)
    (root / "users").write_text(f"{user}:{{PLAIN}}{password}:{entry.pw_uid}:{entry.pw_gid}\n")
    ports = [free_port() for _ in range(4)]
    conf = root / "dovecot.conf"
    conf.write_text(
        f"""
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
protocols = imap pop3
listen = 127.0.0.1
ssl = yes
ssl_cert = <{root}/server.pem
ssl_key = <{root}/server.pem
disable_plaintext_auth = no
auth_mechanisms = plain login
first_valid_uid = 1
mail_location = maildir:~/Maildir
pop3_uidl_format = %08Xu%08Xv
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/users
}}
userdb {{
  driver = static
  args = uid={entry.pw_uid} gid={entry.pw_gid} home={root}/home/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {ports[0]}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {ports[1]}
    ssl = yes
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {ports[2]}
  }}
  inet_listener pop3s {{
    address = 127.0.0.1
    port = {ports[3]}
    ssl = yes
  }}
}}
service anvil {{
  chroot =
}}
"""
    )
    proc = subprocess.Popen(
        [binary, "-F", "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=open(root / "stderr.log", "wb"),  # noqa: SIM115 - lives as long as the server
    )
    try:
        for port in ports:
            wait_for_port(port, proc)
    except RuntimeError as exc:
        stop(proc)
        log = (root / "dovecot.log").read_text() if (root / "dovecot.log").exists() else ""
        err = (root / "stderr.log").read_text()
        raise RuntimeError(f"dovecot did not start: {exc}\n{err}\n{log}") from None
    return Dovecot(root, proc, user, password, *ports, ca=ca)


def stop_dovecot(server: Dovecot) -> None:
    stop(server.proc)
    shutil.rmtree(server.root, ignore_errors=True)


@dataclass
class Postfix:
    root: Path
    proc: subprocess.Popen[bytes]
    smtp_port: int

    def log(self) -> str:
        path = self.root / "postfix.log"
        return path.read_text(errors="replace") if path.exists() else ""


_MASTER_CF = """\
127.0.0.1:{port} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def start_postfix(relay_port: int, hostname: str = "relay.kirim.test") -> Postfix:
    """A private Postfix relaying everything to 127.0.0.1:relay_port, master in foreground."""
    binary = require_binary("postfix")
    root = _world_traversable_tempdir("kirim-postfix-")
    port = free_port()
    (root / "master.cf").write_text(_MASTER_CF.format(port=port))
    (root / "main.cf").write_text(
        f"""
compatibility_level = 3.6
queue_directory = {root}/queue
data_directory = {root}/data
maillog_file = {root}/postfix.log
maillog_file_prefixes = {root}
mail_owner = postfix
setgid_group = postdrop
myhostname = {hostname}
mydomain = kirim.test
myorigin = $myhostname
mydestination =
alias_maps =
alias_database =
local_recipient_maps =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relayhost = [127.0.0.1]:{relay_port}
smtp_host_lookup = native
smtp_tls_security_level = none
smtpd_tls_security_level = none
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_recipient_restrictions =
biff = no
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
"""
    )
    for sub in ("queue", "data"):
        (root / sub).mkdir()
    entry = pwd.getpwnam("postfix")
    os.chown(root / "data", entry.pw_uid, entry.pw_gid)
    env = {**os.environ, "MAIL_CONFIG": str(root)}
    proc = subprocess.Popen(
        [binary, "-c", str(root), "start-fg"],
        stdout=open(root / "stdout.log", "wb"),  # noqa: SIM115 - lives as long as the server
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    try:
        wait_for_port(port, proc, deadline=30.0)
    except RuntimeError as exc:
        stop_postfix(Postfix(root, proc, port), keep=True)
        out = (root / "stdout.log").read_text(errors="replace")
        raise RuntimeError(f"postfix did not start: {exc}\n{out}") from None
    return Postfix(root, proc, port)


def stop_postfix(server: Postfix, keep: bool = False) -> None:
    binary = shutil.which("postfix") or "/usr/sbin/postfix"
    if server.proc.poll() is None:
        subprocess.run(
            [binary, "-c", str(server.root), "stop"],
            capture_output=True,
            timeout=30,
            check=False,
        )
        try:
            server.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.proc.pid, signal.SIGKILL)  # the group this test started
            server.proc.wait(timeout=15)
    if not keep:
        shutil.rmtree(server.root, ignore_errors=True)
