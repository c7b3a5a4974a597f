"""Make sure Postfix's ``smtp-sink``/``smtp-source`` are present without leaving a system
Postfix running: install the Debian package non-interactively with service starts blocked."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from pathlib import Path

SINK = "smtp-sink"
SOURCE = "smtp-source"
POLICY_RC = Path("/usr/sbin/policy-rc.d")
# "No configuration" keeps the package from writing /etc/postfix/main.cf and enabling a
# listener on port 25; the mail name answer is only there so debconf never prompts.
DEBCONF_ANSWERS = (
    "postfix postfix/main_mailer_type select No configuration\n"
    "postfix postfix/mailname string localhost\n"
)
TOOL_DIRS = ("/usr/sbin", "/usr/bin", "/usr/lib/postfix/sbin")


def find_tool(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for directory in TOOL_DIRS:
        candidate = Path(directory) / name
        if candidate.exists():
            return str(candidate)
    return None


def postfix_tools_present() -> bool:
    return all(find_tool(name) for name in (SINK, SOURCE, "postfix"))


def master_pids() -> set[int]:
    """PIDs of every running Postfix ``master`` process, whoever started it."""
    pids: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            exe = os.readlink(entry / "exe")
        except OSError:
            continue
        if exe.endswith("/postfix/sbin/master") or exe.endswith("/master"):
            try:
                comm = (entry / "comm").read_text().strip()
            except OSError:
                continue
            if comm == "master":
                pids.add(int(entry.name))
    return pids


def ensure_postfix(timeout: float = 600.0) -> None:
    """Install the ``postfix`` package if ``smtp-sink`` is missing.

    Service starts are refused through ``policy-rc.d`` for the duration of the install (a
    temporary one is written only if none exists); any Postfix master that nevertheless
    appeared during the install is stopped by PID, since this function started it."""
    if postfix_tools_present():
        return
    if os.geteuid() != 0:
        raise RuntimeError("smtp-sink is missing and installing postfix needs root")
    masters_before = master_pids()
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(
        ["debconf-set-selections"], input=DEBCONF_ANSWERS, text=True, check=True, timeout=60
    )
    wrote_policy = not POLICY_RC.exists()
    if wrote_policy:
        POLICY_RC.write_text("#!/bin/sh\nexit 101\n")
        POLICY_RC.chmod(0o755)
    try:
        subprocess.run(
            ["apt-get", "install", "-y", "--no-install-recommends", "postfix"],
            env=env,
            check=True,
            timeout=timeout,
        )
    finally:
        if wrote_policy:
            POLICY_RC.unlink(missing_ok=True)
    for pid in master_pids() - masters_before:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 15)
    if not postfix_tools_present():
        raise RuntimeError("postfix installed but smtp-sink/smtp-source not found")
