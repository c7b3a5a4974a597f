"""`kirim migrate` from several processes at once on a fresh PostgreSQL database."""

from __future__ import annotations

import asyncio
import subprocess
import sys

from service.db.migrate import head_revision
from tests.scaleout.cluster import fresh_pg, scalar
from tests.support.process import ROOT, kirim_env


def test_four_concurrent_migrations_all_succeed() -> None:
    with fresh_pg(migrated=False) as url:
        env = kirim_env(database_url=url, log_level="WARNING")
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "service", "migrate"],
                env=env,
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            for _ in range(4)
        ]
        outputs = [p.communicate(timeout=120)[0].decode() for p in procs]
        assert [p.returncode for p in procs] == [0, 0, 0, 0], outputs
        assert asyncio.run(scalar(url, "SELECT version_num FROM alembic_version")) == (
            head_revision()
        )
        assert asyncio.run(scalar(url, "SELECT count(*) FROM alembic_version")) == 1
        assert asyncio.run(scalar(url, "SELECT count(*) FROM recipients")) == 0
