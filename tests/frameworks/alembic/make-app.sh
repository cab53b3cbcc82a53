#!/usr/bin/env bash
# Generates the Alembic test app: tests/frameworks/alembic/make-app.sh DEST VERSION
# VERSION is v1, v2, v3 or v4 (see the framework tests). Uses Alembic's own
# generators (`alembic init`, `alembic revision -m ... --rev-id N`) with fixed
# revision ids (0001..0005; v4's own is 0006) and a fixed Create Date, then fills in the
# generated upgrade()/downgrade() bodies.
#
# The app has a `.venv` symlink to the shared virtual environment made by
# scripts/install/alembic.sh (default /var/cache/slipway-tests/alembic/venv;
# SLIPWAY_ALEMBIC_VENV overrides it). Its database settings come, at run time,
# from `.env` in the app root: a line `DATABASE_URL=postgresql://USER:PW@HOST:PORT/DB`
# (postgres:// and postgresql:// use psycopg 3; mysql:// and mariadb:// use PyMySQL;
# a SQLAlchemy URL such as mysql+pymysql://... is used as it is). Without a `.env`, the
# environment variable DATABASE_URL is used.
set -euo pipefail

usage() { echo "usage: $0 DEST v1|v2|v3|v4" >&2; exit 2; }
[ $# -eq 2 ] || usage
DEST=$1
VERSION=$2
case $VERSION in v1 | v2 | v3 | v4) ;; *) usage ;; esac

VENV="${SLIPWAY_ALEMBIC_VENV:-/var/cache/slipway-tests/alembic/venv}"
if [ ! -x "$VENV/bin/alembic" ]; then
    echo "alembic is not installed in $VENV: run scripts/install/alembic.sh" >&2
    exit 1
fi
if [ -e "$DEST" ] && [ -n "$(ls -A "$DEST")" ]; then
    echo "$DEST exists and is not empty" >&2
    exit 1
fi
mkdir -p "$DEST"
cd "$DEST"

ln -s "$VENV" .venv
alembic() { .venv/bin/alembic "$@" >/dev/null; }

alembic init migrations
.venv/bin/python - <<'PY'
import re

with open("alembic.ini") as f:
    ini = f.read()
ini, n = re.subn(
    r"(?m)^sqlalchemy\.url = .*$",
    "# sqlalchemy.url is set by migrations/env.py from DATABASE_URL in .env",
    ini,
)
assert n == 1, "alembic.ini: no sqlalchemy.url line"
with open("alembic.ini", "w") as f:
    f.write(ini)

with open("migrations/env.py") as f:
    env = f.read()
anchor = "config = context.config\n"
assert anchor in env, "env.py: no 'config = context.config'"
env = env.replace(anchor, anchor + '''

def database_url() -> str:
    """DATABASE_URL from .env in the app root (else from the environment)."""
    import os

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".env")
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                key, sep, value = line.strip().partition("=")
                if sep and key.strip().removeprefix("export ").strip() == "DATABASE_URL":
                    value = value.strip()
                    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\\"":
                        value = value[1:-1]
                    return value
        raise RuntimeError(f"{path} has no DATABASE_URL line")
    if os.environ.get("DATABASE_URL"):
        return os.environ["DATABASE_URL"]
    raise RuntimeError("no .env with DATABASE_URL in the app root")


def sqlalchemy_url(url: str) -> str:
    for prefixes, driver in (
        (("postgres://", "postgresql://"), "postgresql+psycopg://"),
        (("mysql://", "mariadb://"), "mysql+pymysql://"),
    ):
        for prefix in prefixes:
            if url.startswith(prefix):
                return driver + url[len(prefix):]
    return url


# ConfigParser interpolation: a '%' in the URL must be doubled.
config.set_main_option("sqlalchemy.url", sqlalchemy_url(database_url()).replace("%", "%%"))
''', 1)
with open("migrations/env.py", "w") as f:
    f.write(env)
PY

# Generates a revision with a fixed id and fills in its bodies:
# revision ID MESSAGE UPGRADE_BODY DOWNGRADE_BODY (bodies indented by 4 spaces).
prev=
revision() {
    local id=$1 message=$2 file
    if [ -n "$prev" ]; then
        alembic revision -m "$message" --rev-id "$id" --head "$prev"
    else
        alembic revision -m "$message" --rev-id "$id"
    fi
    file=(migrations/versions/"${id}"_*.py)
    if [ ${#file[@]} -ne 1 ] || [ ! -f "${file[0]}" ]; then
        echo "alembic revision --rev-id $id made ${file[*]}" >&2
        exit 1
    fi
    UPGRADE=$3 DOWNGRADE=$4 .venv/bin/python - "${file[0]}" <<'PY'
import os, re, sys

path = sys.argv[1]
with open(path) as f:
    text = f.read()
text = re.sub(r"(?m)^Create Date: .*$", "Create Date: 2024-01-01 00:00:00", text)
for name, body in (("upgrade", os.environ["UPGRADE"]), ("downgrade", os.environ["DOWNGRADE"])):
    stub = f'def {name}() -> None:\n    """{name.capitalize()} schema."""\n    pass\n'
    assert stub in text, f"{path}: no generated {name}() stub"
    if body:
        text = text.replace(stub, f'def {name}() -> None:\n    """{name.capitalize()} schema."""\n{body}\n')
with open(path, "w") as f:
    f.write(text)
PY
    prev=$id
}

revision 0001 "create items" \
'    op.create_table(
        "items",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(255), nullable=False),
    )' \
'    op.drop_table("items")'
[ "$VERSION" = v1 ] && exit 0

revision 0002 "add price to items" \
'    op.add_column("items", sa.Column("price", sa.Integer(), nullable=False, server_default="0"))' \
'    op.drop_column("items", "price")'

revision 0003 "create orders" \
'    op.create_table(
        "orders",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("item_id", sa.Integer(), sa.ForeignKey("items.id"), nullable=False),
        sa.Column("qty", sa.Integer(), nullable=False, server_default="1"),
    )' \
'    op.drop_table("orders")'

case $VERSION in
v3)
    revision 0004 "create notes" \
'    op.create_table(
        "notes",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("body", sa.Text()),
    )' \
'    op.drop_table("notes")'
    # Fails midway: the first statement succeeds, the second references a missing table.
    revision 0005 "broken step" \
'    op.create_table("broken_part", sa.Column("id", sa.Integer(), primary_key=True))
    op.execute("INSERT INTO missing_table (id) VALUES (1)")' \
'    op.drop_table("broken_part")'
    ;;
v4)
    # Irreversible: raw SQL, and the generated downgrade() stub (`pass`) left as is.
    # Its id is not 0004: v3 has another 0004, and ids must name one migration.
    revision 0006 "add legacy to items" \
'    op.execute("ALTER TABLE items ADD COLUMN legacy integer")' \
''
    ;;
esac
