"""A private Postfix instance on loopback: its own config, queue and log under a temp dir,
relaying everything to the sink. Nothing of the system's /etc/postfix is used or changed."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from bench.install import find_tool
from bench.procs import terminate_tree, wait_gone

# Debian's defaults minus the chroot (a private queue dir has no chroot jail), minus the
# port-25 listener and the pipe transports, plus postlogd so the log lands in the temp dir.
MASTER_CF = """\
{listen} inet n - n - - smtpd
pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
tlsmgr    unix  - - n 1000? 1 tlsmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
verify    unix  - - n - 1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
proxywrite unix - - n - 1 proxymap
smtp      unix  - - n - - smtp
relay     unix  - - n - - smtp
showq     unix  n - n - - showq
error     unix  - - n - - error
retry     unix  - - n - - error
discard   unix  - - n - - discard
local     unix  - n n - - local
virtual   unix  - n n - - virtual
lmtp      unix  - - n - - lmtp
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
"""

# Concurrency, process limits and queue behaviour stay at Postfix defaults; only what is
# needed to relay on loopback into the sink is set, plus millisecond delay logging.
MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {root}/queue
data_directory = {root}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = bench.localhost
mydomain = localhost
myorigin = $myhostname
inet_interfaces = loopback-only
inet_protocols = ipv4
mydestination =
local_recipient_maps =
local_transport = error:local delivery is disabled
alias_maps =
alias_database =
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
relayhost = [127.0.0.1]:{sink_port}
smtp_tls_security_level = none
smtpd_tls_security_level = none
maillog_file_prefixes = {root}
maillog_file = {root}/maillog
delay_logging_resolution_limit = 3
"""

SENT_DELAY = re.compile(r" delay=([0-9.]+),.* status=sent ")


class PrivatePostfix:
    def __init__(self, smtpd_port: int, sink_port: int) -> None:
        self.smtpd_port = smtpd_port
        self.sink_port = sink_port
        self.root = Path(tempfile.mkdtemp(prefix="kirim-bench-postfix-"))
        self.config = self.root / "etc"
        self.master_pid = 0
        binary = find_tool("postfix")
        if binary is None:
            raise RuntimeError("postfix not found")
        self.binary = binary

    def _postfix(self, *args: str, timeout: float = 60.0) -> None:
        done = subprocess.run(
            [self.binary, "-c", str(self.config), *args],
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            # Without a terminal Postfix reports to its log, not to stderr.
            log = self.root / "maillog"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"postfix {' '.join(args)} failed: {done.stderr}{tail}".strip())

    def write_config(self) -> None:
        # Daemons running as the postfix user must be able to reach the queue and log.
        self.root.chmod(0o755)
        self.config.mkdir()
        (self.root / "queue").mkdir()
        (self.config / "main.cf").write_text(
            MAIN_CF.format(root=self.root, sink_port=self.sink_port)
        )
        (self.config / "master.cf").write_text(
            MASTER_CF.format(listen=f"127.0.0.1:{self.smtpd_port}")
        )
        # postfix-files drives create-missing; the stock one names no config paths of ours.
        shutil.copy("/etc/postfix/postfix-files", self.config / "postfix-files")
        postfix_files_d = Path("/etc/postfix/postfix-files.d")
        if postfix_files_d.is_dir():
            shutil.copytree(postfix_files_d, self.config / "postfix-files.d")
        dynamicmaps = Path("/etc/postfix/dynamicmaps.cf")
        if dynamicmaps.exists():
            shutil.copy(dynamicmaps, self.config / "dynamicmaps.cf")
        if Path("/etc/postfix/dynamicmaps.cf.d").is_dir():
            shutil.copytree("/etc/postfix/dynamicmaps.cf.d", self.config / "dynamicmaps.cf.d")

    async def start(self) -> None:
        if os.geteuid() != 0:
            raise RuntimeError("a private Postfix instance must be started as root")
        await asyncio.to_thread(self.write_config)
        await asyncio.to_thread(self._postfix, "post-install", "create-missing")
        await asyncio.to_thread(self._postfix, "start")
        pid_file = self.root / "queue" / "pid" / "master.pid"
        self.master_pid = int(pid_file.read_text().split()[0])
        await self._wait_listening()

    async def _wait_listening(self, attempts: int = 200) -> None:
        for _ in range(attempts):
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.smtpd_port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return
        raise RuntimeError(f"Postfix smtpd did not listen on 127.0.0.1:{self.smtpd_port}")

    def sent_delays(self) -> list[float]:
        """Seconds from receipt to delivery of every relayed message, from the log."""
        log = self.root / "maillog"
        if not log.exists():
            return []
        delays = []
        with log.open(errors="replace") as lines:
            for line in lines:
                match = SENT_DELAY.search(line)
                if match:
                    delays.append(float(match.group(1)))
        return delays

    def stop(self) -> None:
        """Stop this instance (and only it) and delete its directory."""
        if self.master_pid:
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                self._postfix("stop", timeout=30)
            if not wait_gone(self.master_pid, 10):
                terminate_tree(self.master_pid)
            self.master_pid = 0
        shutil.rmtree(self.root, ignore_errors=True)
