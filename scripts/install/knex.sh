#!/usr/bin/env bash
# Installs knex with the pg and mysql2 drivers for the knex framework tests into
# a fixed, shared cache directory (default /var/cache/slipway-tests/knex, override
# with SLIPWAY_KNEX_DIR). The test app made by tests/frameworks/knex/make-app.sh
# has a `node_modules` symlink to "$DIR/node_modules", so `require('knex')` works
# from any release directory on this machine.
# Idempotent and silent when the pinned versions are present; loud on failure.
set -euo pipefail

DIR="${SLIPWAY_KNEX_DIR:-/var/cache/slipway-tests/knex}"
PACKAGES=(knex@3.1.0 pg@8.16.3 mysql2@3.14.3)

die() { echo "install/knex.sh: $*" >&2; exit 1; }

command -v node >/dev/null || die "node is missing (Debian 12: apt-get install -y nodejs npm)"
command -v npm >/dev/null || die "npm is missing (Debian 12: apt-get install -y npm)"

present() {
    local spec name version got
    for spec in "${PACKAGES[@]}"; do
        name=${spec%@*}
        version=${spec##*@}
        got=$(node -p "require('$DIR/node_modules/$name/package.json').version" 2>/dev/null) || return 1
        [ "$got" = "$version" ] || return 1
    done
}

present && exit 0

mkdir -p "$DIR" || die "cannot create $DIR"
[ -f "$DIR/package.json" ] || echo '{"name":"slipway-knex-tests","private":true}' >"$DIR/package.json"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! npm install --prefix "$DIR" --no-audit --no-fund --loglevel=error "${PACKAGES[@]}" >"$log" 2>&1; then
    cat "$log" >&2
    die "npm install ${PACKAGES[*]} into $DIR failed"
fi
present || die "after npm install, $DIR/node_modules does not hold ${PACKAGES[*]}"
