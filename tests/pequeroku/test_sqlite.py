"""SQLite under ``make run``: the web server and the reconcile loop write one file at once.

Each case runs the real settings (pequeroku.settings) in fresh interpreters, with only the
database file moved to a temporary directory.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CLEARED = ("SECRET_KEY", "DEBUG", "DB_NAME", "REDIS_URL", "DJANGO_SETTINGS_MODULE")

SETUP = """
import os, sys
os.environ["DJANGO_SETTINGS_MODULE"] = "pequeroku.settings"
import pequeroku.settings as project_settings
project_settings.DATABASES["default"]["NAME"] = sys.argv[1]
import django
django.setup()
"""

MIGRATE = (
    SETUP
    + """
from django.core.management import call_command
from django.contrib.auth.models import User
call_command("migrate", verbosity=0)
User.objects.create(username="shared")
"""
)

# What the web process and the reconcile loop both do: read a row, then write, in one
# transaction (a deferred transaction's lock upgrade is where "database is locked" came from).
WRITER = (
    SETUP
    + """
import time
from pathlib import Path
from django.contrib.auth.models import Group, User
from django.db import transaction
from django.utils import timezone
tag, writes, start = sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
while not start.exists():
    time.sleep(0.01)
for i in range(writes):
    with transaction.atomic():
        user = User.objects.get(username="shared")
        user.last_login = timezone.now()
        user.save(update_fields=["last_login"])
        Group.objects.create(name=f"{tag}-{i}")
print("done", tag)
"""
)


def python(code: str, *args: str) -> list[str]:
    return [sys.executable, "-c", code, *args]


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in CLEARED}


def run(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        python(code, *args), cwd=ROOT, env=clean_env(), capture_output=True, text=True, timeout=120
    )


def test_two_processes_writing_at_once_never_see_database_is_locked(tmp_path: Path) -> None:
    database = tmp_path / "db.sqlite3"
    start = tmp_path / "start"
    prepared = run(MIGRATE, str(database))
    assert prepared.returncode == 0, prepared.stderr

    writers = [
        subprocess.Popen(
            python(WRITER, str(database), tag, "200", str(start)),
            cwd=ROOT,
            env=clean_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for tag in ("web", "reconcile")
    ]
    start.touch()
    results = [(writer.wait(timeout=180), *writer.communicate()) for writer in writers]

    for returncode, _stdout, stderr in results:
        assert returncode == 0, stderr
    counted = run(
        SETUP + "from django.contrib.auth.models import Group\nprint(Group.objects.count())",
        str(database),
    )
    assert counted.stdout.strip() == "400", counted.stderr


def test_the_database_file_and_its_wal_are_owner_only(tmp_path: Path) -> None:
    database = tmp_path / "db.sqlite3"
    code = "import os\nos.umask(0o022)\n" + MIGRATE

    result = run(code, str(database))

    assert result.returncode == 0, result.stderr
    for path in tmp_path.iterdir():  # db.sqlite3 and, while open, its -wal and -shm
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_the_database_runs_in_wal_mode(tmp_path: Path) -> None:
    database = tmp_path / "db.sqlite3"
    code = SETUP + (
        "from django.db import connection\n"
        "with connection.cursor() as cursor:\n"
        "    print(cursor.execute('PRAGMA journal_mode').fetchone()[0])\n"
    )

    result = run(code, str(database))

    assert result.stdout.strip() == "wal", result.stderr
