#!/usr/bin/env bash
# Generates the Django test app: make-app.sh DEST VERSION (v1..v5).
#
# Built with Django's own generators (startproject, startapp, makemigrations) run by the
# `python3` on PATH (Django 5.2: scripts/install/django.sh), then edited. The app reads its
# settings at run time from `.env` in the app root (slipway's django recipe shares it):
#   DATABASE_URL=postgres://USER:PASSWORD@HOST:PORT/NAME   (also postgresql://)
#   DATABASE_URL=mysql://USER:PASSWORD@HOST:PORT/NAME      (also mariadb://; mysqlclient or PyMySQL)
#   DATABASE_URL=sqlite:///ABSOLUTE/PATH                   (a relative path is relative to the app root)
#   SECRET_KEY=...  DEBUG=1  ALLOWED_HOSTS=a.example,b.example   (optional)
# Values in .env win over the environment; without DATABASE_URL anywhere: sqlite db.sqlite3.
#
# Versions (each includes the previous one unless said otherwise):
#   v1  startproject `config` (admin, auth, contenttypes, sessions, messages, staticfiles)
#       + app catalog: catalog.0001_create_items (table items: id, name)
#   v2  + catalog.0002_item_price (items.price integer not null default 0)
#       + app orders: orders.0001_create_orders (table orders: id, item_id -> items, qty)
#   v3  v2 + catalog.0003_create_notes (table notes: id, body)
#          + catalog.0004_broken: creates table broken_part, then fails (SQL on a missing table)
#   v4  v2 + catalog.0003_legacy_column: RunSQL adding items.legacy, no reverse (irreversible)
#   v5  v2 + catalog.0003_remove_item_price: RemoveField, drops items.price (breaks v2's
#          code while it still serves)
# Migration ids and every file are the same on every run (makemigrations' date stripped).
set -euo pipefail

usage() { echo "usage: $0 DEST v1|v2|v3|v4|v5" >&2; exit 2; }
[ $# -eq 2 ] || usage
DEST=$1
case $2 in
    v1|1) V=1 ;; v2|2) V=2 ;; v3|3) V=3 ;; v4|4) V=4 ;; v5|5) V=5 ;;
    *) usage ;;
esac
if [ -e "$DEST" ] && [ -n "$(ls -A "$DEST")" ]; then
    echo "make-app.sh: $DEST exists and is not empty" >&2
    exit 2
fi
PY=${PYTHON:-python3}
if ! "$PY" -c 'import django, sys; sys.exit(0 if django.VERSION[:2] == (5, 2) else 1)' 2>/dev/null; then
    echo "make-app.sh: Django 5.2 is not installed for $PY; run scripts/install/django.sh" >&2
    exit 1
fi

# Generating takes 2.5-5.5 s; with SLIPWAY_FRAMEWORK_CACHE set, each version's tree is
# kept there (keyed by this script's and Django's versions) and copied on later calls.
cache=
if [ -n "${SLIPWAY_FRAMEWORK_CACHE:-}" ]; then
    key=$( { cat "${BASH_SOURCE[0]}"; "$PY" -c 'import django; print(django.get_version())'; } | sha256sum | cut -c1-16)
    cache=$SLIPWAY_FRAMEWORK_CACHE/django-$key/v$V
    if [ -d "$cache" ]; then
        mkdir -p "$DEST"
        cp -a "$cache/." "$DEST/"
        exit 0
    fi
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
app=$work/app
mkdir "$app"
cd "$app"
# Generators run against a throwaway SQLite database, never the caller's.
export DATABASE_URL="sqlite:///$work/generate.sqlite3"
export PYTHONDONTWRITEBYTECODE=1

"$PY" -m django startproject config .
"$PY" manage.py startapp catalog

# Settings: .env-driven database, secret key, debug, hosts; STATIC_ROOT for collectstatic.
"$PY" - config/settings.py <<'PYEOF'
import re, sys
path = sys.argv[1]
s = open(path).read()

s = s.replace("from pathlib import Path\n", "import os\nfrom pathlib import Path\nfrom urllib.parse import parse_qsl, unquote, urlsplit\n", 1)
s = s.replace("BASE_DIR = Path(__file__).resolve().parent.parent\n", '''BASE_DIR = Path(__file__).resolve().parent.parent


def _read_env(path):
    """KEY=VALUE lines of the app's .env (shared by slipway); '#' comments, optional
    'export ' and quotes. Values in .env win over the process environment."""
    env = dict(os.environ)
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return env
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        key = key.strip()
        if key.startswith("export "):
            key = key[len("export "):].strip()
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\\"'":
            value = value[1:-1]
        env[key] = value
    return env


def _database(url):
    """DATABASES['default'] from a URL: postgres://, mysql:// (mariadb://), sqlite:///path."""
    if not url:
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": BASE_DIR / "db.sqlite3"}
    scheme = url.split(":", 1)[0].lower()
    if scheme in ("sqlite", "sqlite3"):
        name = url.split("://", 1)[1] if "://" in url else url.split(":", 1)[1]
        name = name.split("?", 1)[0]
        return {"ENGINE": "django.db.backends.sqlite3",
                "NAME": name if name.startswith("/") else BASE_DIR / name}
    engines = {"postgres": "postgresql", "postgresql": "postgresql", "pgsql": "postgresql",
               "mysql": "mysql", "mariadb": "mysql", "mysql2": "mysql"}
    if scheme not in engines:
        raise ValueError("DATABASE_URL: unsupported scheme %r" % scheme)
    u = urlsplit(url)
    db = {
        "ENGINE": "django.db.backends." + engines[scheme],
        "NAME": unquote(u.path[1:]),
        "USER": unquote(u.username or ""),
        "PASSWORD": unquote(u.password or ""),
        "HOST": unquote(u.hostname or ""),
        "PORT": str(u.port or ""),
        "OPTIONS": dict(parse_qsl(u.query)),
    }
    if engines[scheme] == "mysql":
        try:
            import MySQLdb  # noqa: F401  (mysqlclient)
        except ImportError:
            import pymysql
            pymysql.install_as_MySQLdb()
        db["OPTIONS"].setdefault("charset", "utf8mb4")
    return db


ENV = _read_env(BASE_DIR / ".env")
''', 1)
s, n = re.subn(r"^SECRET_KEY = .*$",
               'SECRET_KEY = ENV.get("SECRET_KEY") or "django-insecure-fallback-key-set-SECRET_KEY-in-.env"',
               s, count=1, flags=re.M)
assert n == 1
s, n = re.subn(r"^DEBUG = .*$", 'DEBUG = ENV.get("DEBUG", "").lower() in ("1", "true", "yes", "on")',
               s, count=1, flags=re.M)
assert n == 1
s, n = re.subn(r"^ALLOWED_HOSTS = .*$",
               'ALLOWED_HOSTS = [h.strip() for h in ENV.get("ALLOWED_HOSTS", "*").split(",") if h.strip()]',
               s, count=1, flags=re.M)
assert n == 1
s, n = re.subn(r"^DATABASES = \{\n.*?\n\}\n", 'DATABASES = {"default": _database(ENV.get("DATABASE_URL"))}\n',
               s, count=1, flags=re.M | re.S)
assert n == 1
s, n = re.subn(r"^(STATIC_URL = .*)$", r'\1\nSTATIC_ROOT = BASE_DIR / "staticfiles"', s, count=1, flags=re.M)
assert n == 1
s, n = re.subn(r"(    'django.contrib.staticfiles',\n)", r"\1    'catalog',\n", s, count=1)
assert n == 1
open(path, "w").write(s)
PYEOF

cat > requirements.txt <<'REQ'
Django>=5.2,<5.3
psycopg[binary]>=3.1
PyMySQL>=1.1
REQ

cat > catalog/models.py <<'PYEOF'
from django.db import models


class Item(models.Model):
    name = models.CharField(max_length=100)

    class Meta:
        db_table = "items"
PYEOF
"$PY" manage.py makemigrations catalog --name create_items >/dev/null

if [ "$V" -ge 2 ]; then
    cat > catalog/models.py <<'PYEOF'
from django.db import models


class Item(models.Model):
    name = models.CharField(max_length=100)
    price = models.IntegerField(default=0, db_default=0)

    class Meta:
        db_table = "items"
PYEOF
    "$PY" manage.py startapp orders
    sed -i "s/^    'catalog',$/    'catalog',\n    'orders',/" config/settings.py
    cat > orders/models.py <<'PYEOF'
from django.db import models


class Order(models.Model):
    item = models.ForeignKey("catalog.Item", on_delete=models.CASCADE)
    qty = models.IntegerField()

    class Meta:
        db_table = "orders"
PYEOF
    "$PY" manage.py makemigrations catalog --name item_price >/dev/null
    "$PY" manage.py makemigrations orders --name create_orders >/dev/null
fi

if [ "$V" -eq 3 ]; then
    cat >> catalog/models.py <<'PYEOF'


class Note(models.Model):
    body = models.TextField()

    class Meta:
        db_table = "notes"
PYEOF
    "$PY" manage.py makemigrations catalog --name create_notes >/dev/null
    "$PY" manage.py makemigrations catalog --empty --name broken >/dev/null
    "$PY" - catalog/migrations/0004_broken.py <<'PYEOF'
import sys
path = sys.argv[1]
s = open(path).read()
old = "    operations = [\n    ]\n"
assert old in s
s = s.replace(old, '''    # Fails midway: the first statement succeeds, the second is a database error.
    operations = [
        migrations.RunSQL(
            "CREATE TABLE broken_part (id integer)",
            reverse_sql="DROP TABLE broken_part",
        ),
        migrations.RunSQL(
            "INSERT INTO missing_table_for_slipway (id) VALUES (1)",
            reverse_sql=migrations.RunSQL.noop,
        ),
    ]
''')
open(path, "w").write(s)
PYEOF
fi

if [ "$V" -eq 4 ]; then
    "$PY" manage.py makemigrations catalog --empty --name legacy_column >/dev/null
    "$PY" - catalog/migrations/0003_legacy_column.py <<'PYEOF'
import sys
path = sys.argv[1]
s = open(path).read()
old = "    operations = [\n    ]\n"
assert old in s
s = s.replace(old, '''    # Irreversible: raw SQL without reverse_sql.
    operations = [
        migrations.RunSQL("ALTER TABLE items ADD COLUMN legacy varchar(50)"),
    ]
''')
open(path, "w").write(s)
PYEOF
fi

if [ "$V" -eq 5 ]; then
    sed -i '/^    price = /d' catalog/models.py
    "$PY" manage.py makemigrations catalog --name remove_item_price >/dev/null
fi

# Deterministic files: no generation date in the migrations' headers.
sed -i -E 's/^(# Generated by Django [0-9.]+) on .*$/\1/' ./*/migrations/0*.py
find . -name __pycache__ -type d -prune -exec rm -rf {} +
"$PY" manage.py makemigrations --check --dry-run >/dev/null

if [ -n "$cache" ]; then
    mkdir -p "$(dirname "$cache")"
    cp -a "$app" "$work/cached"
    mv -T "$work/cached" "$cache" 2>/dev/null || true  # another run may have won the race
fi
mkdir -p "$DEST"
cp -a "$app/." "$DEST/"
