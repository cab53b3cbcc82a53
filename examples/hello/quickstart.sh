#!/usr/bin/env bash
# The quickstart: deploys the example app in ./app to /tmp/slipway-hello on this machine
# (transport "local": no server), migrating its SQLite database (the `sqlite3` shell must
# be installed: apt-get install sqlite3), deploys v2 (./app-v2, one more migration), and
# rolls back code and schema, printing each command.
# Run from anywhere: `bash examples/hello/quickstart.sh`. Set SLIPWAY to use a built binary.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$here"
if [ -z "${SLIPWAY:-}" ]; then
    echo "building slipway (cargo build --release) ..." >&2
    cargo build --release --quiet --manifest-path "$here/../../Cargo.toml"
    SLIPWAY="$here/../../target/release/slipway"
fi
# The example's migrations run on the "host" (here: this machine) with the sqlite3 shell.
if ! command -v sqlite3 >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing the sqlite3 shell (apt-get install sqlite3) ..." >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q sqlite3 >/dev/null \
            || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q sqlite3 >/dev/null; }
    else
        echo "the example's migrations need the sqlite3 shell: sudo apt-get install sqlite3" >&2
        exit 1
    fi
fi
deploy_to=/tmp/slipway-hello
run() {
    printf '\n$ slipway -c examples/hello/deploy.toml %s\n' "$*"
    "$SLIPWAY" -c "$here/deploy.toml" "$@"
}

# A fresh start, and the shared file the app expects (secrets live in shared/, not in the release).
rm -rf "$deploy_to"
mkdir -p "$deploy_to/shared"
echo "GREETING=hello" > "$deploy_to/shared/.env"

run check demo
run deploy demo                      # v1: two SQLite migrations (needs the sqlite3 shell)
run deploy demo-v2                   # v2: the same app with a third migration (adds a column)
run db status demo
run rollback demo --reason "trying out the quickstart"   # code first, then the schema
run db status demo
printf '\ncurrent -> %s\n' "$(readlink "$deploy_to/current")"
cat "$deploy_to/current/public/build-info.txt"
