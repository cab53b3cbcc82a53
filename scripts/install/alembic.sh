#!/usr/bin/env bash
# Installs Alembic, SQLAlchemy 2, psycopg 3 (binary) and PyMySQL (pure Python, for
# MariaDB/MySQL) for the alembic framework tests into a virtual environment of the
# machine's python3, in a fixed, shared directory (default
# /var/cache/slipway-tests/alembic/venv, override with SLIPWAY_ALEMBIC_VENV). The test app made by tests/frameworks/alembic/make-app.sh
# has a `.venv` symlink to it, so the contract's default runtime `.venv/bin/python`
# works from any release directory on this machine. (A venv rather than the
# system python: Debian's python3 refuses `pip install` outside one, PEP 668.)
# Idempotent and silent when the pinned versions are present; loud on failure.
set -euo pipefail

VENV="${SLIPWAY_ALEMBIC_VENV:-/var/cache/slipway-tests/alembic/venv}"
# Debian's own python: the test hosts see /usr but not root's home (a pyenv python).
PYTHON="${PYTHON:-/usr/bin/python3}"
PACKAGES=(alembic==1.16.5 SQLAlchemy==2.0.43 "psycopg[binary]==3.2.10" PyMySQL==1.1.2)

die() { echo "install/alembic.sh: $*" >&2; exit 1; }

present() {
    [ -x "$VENV/bin/python" ] || return 1
    case "$(readlink -f "$VENV/bin/python")" in /usr/*) ;; *) return 1 ;; esac
    "$VENV/bin/python" - "${PACKAGES[@]}" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
for spec in sys.argv[1:]:
    name, want = spec.split("==")
    name = name.split("[")[0]
    if version(name) != want:
        sys.exit(1)
import alembic, sqlalchemy, psycopg, pymysql  # noqa: E401,F401  (importable, binary included)
PY
}

present && exit 0

if ! "$PYTHON" -c 'import ensurepip' 2>/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3 python3-venv >&2 ||
        die "$PYTHON with venv is missing (Debian 12: apt-get install -y python3 python3-venv)"
fi
case "$(readlink -f "$VENV/bin/python" 2>/dev/null)" in /usr/*) ;; *) rm -rf "$VENV" ;; esac
if [ ! -x "$VENV/bin/python" ]; then
    mkdir -p "$(dirname "$VENV")" || die "cannot create $(dirname "$VENV")"
    "$PYTHON" -m venv "$VENV" >/dev/null 2>&1 ||
        { rm -rf "$VENV"; die "'$PYTHON -m venv $VENV' failed (Debian 12: apt-get install -y python3-venv)"; }
fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${PACKAGES[@]}" >"$log" 2>&1; then
    cat "$log" >&2
    die "pip install ${PACKAGES[*]} into $VENV failed"
fi
present || die "after pip install, $VENV does not import ${PACKAGES[*]}"
