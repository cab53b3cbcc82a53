#!/usr/bin/env bash
# Installs Django 5.2.x with its PostgreSQL driver (psycopg 3, binary wheel) and a
# MariaDB/MySQL driver (PyMySQL, pure Python) for the `python3` on PATH, with pip.
# Idempotent: a quick no-op when everything is present. Fails loudly with the reason.
set -euo pipefail

PY=${PYTHON:-python3}

have() {
    "$PY" - <<'PYEOF' 2>/dev/null
import django, psycopg, pymysql
assert django.VERSION[:2] == (5, 2), django.get_version()
PYEOF
}

if ! command -v "$PY" >/dev/null 2>&1; then
    echo "django.sh: $PY not found on PATH (need CPython >= 3.10 with pip)" >&2
    exit 1
fi
if ! have; then
if ! "$PY" -m pip --version >/dev/null 2>&1; then
    echo "django.sh: '$PY -m pip' does not work; install pip for $PY (e.g. apt-get install python3-pip, or use a pyenv/venv python)" >&2
    exit 1
fi

echo "django.sh: installing Django 5.2, psycopg[binary], PyMySQL for $("$PY" -c 'import sys; print(sys.executable)')" >&2
# Debian's system python refuses pip installs outside a venv (PEP 668) unless told.
extra=()
if "$PY" -c 'import sys, sysconfig, os; sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")) else 1)'; then
    extra+=(--break-system-packages)
fi
if ! "$PY" -m pip install --quiet --disable-pip-version-check --no-input --root-user-action=ignore "${extra[@]}" \
        'Django>=5.2,<5.3' 'psycopg[binary]>=3.1' 'PyMySQL>=1.1' >&2; then
    echo "django.sh: pip install of Django 5.2 / psycopg[binary] / PyMySQL failed (see above)" >&2
    exit 1
fi
# pyenv: make the new django-admin visible through its shims.
if command -v pyenv >/dev/null 2>&1; then
    pyenv rehash >/dev/null 2>&1 || true
fi
if ! have; then
    echo "django.sh: installed, but '$PY -c \"import django, psycopg, pymysql\"' still fails or Django is not 5.2:" >&2
    "$PY" -c 'import django, psycopg, pymysql; print(django.get_version())' >&2 || true
    exit 1
fi
echo "django.sh: Django $("$PY" -c 'import django; print(django.get_version())') ready" >&2
fi

# The test hosts run the app with a fixed interpreter: a venv of Debian's python3 (the
# hosts see /usr, not root's home where a pyenv python lives) with the same packages,
# which a release links as `.venv`.
VENV="${SLIPWAY_DJANGO_VENV:-/var/cache/slipway-tests/django/venv}"
case "$(readlink -f "$VENV/bin/python" 2>/dev/null)" in /usr/*) ;; *) rm -rf "$VENV" ;; esac
if ! "$VENV/bin/python" -c 'import django, psycopg, pymysql' 2>/dev/null; then
    echo "django.sh: creating $VENV" >&2
    if ! /usr/bin/python3 -c 'import ensurepip' 2>/dev/null; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3 python3-venv >&2 \
            || { echo "django.sh: Debian's python3 with venv is missing: apt-get install python3 python3-venv" >&2; exit 1; }
    fi
    rm -rf "$VENV"
    mkdir -p "$(dirname "$VENV")"
    /usr/bin/python3 -m venv "$VENV" >&2 || { rm -rf "$VENV"; echo "django.sh: '/usr/bin/python3 -m venv $VENV' failed (apt-get install python3-venv)" >&2; exit 1; }
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
        'Django>=5.2,<5.3' 'psycopg[binary]>=3.1' 'PyMySQL>=1.1' >&2 \
        || { echo "django.sh: pip install into $VENV failed (see above)" >&2; exit 1; }
fi
