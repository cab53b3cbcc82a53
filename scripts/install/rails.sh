#!/usr/bin/env bash
# Installs Ruby on Rails 6.1 from Debian 12 (no rubygems.org): ruby-rails (with
# railties' `rails` command and bundler) and the database drivers ruby-pg, ruby-mysql2,
# ruby-sqlite3. The test app (tests/frameworks/rails/make-app.sh) uses nothing else:
# no bootsnap, listen, puma, sprockets assets, JavaScript or Node.
# Idempotent: a quick no-op when everything is present. Fails loudly with the reason.
# Needs root (or sudo) for apt-get when something is missing.
set -euo pipefail

packages=(ruby ruby-rails ruby-bundler ruby-pg ruby-mysql2 ruby-sqlite3)

have() {
    command -v ruby >/dev/null 2>&1 && command -v rails >/dev/null 2>&1 &&
        command -v bundle >/dev/null 2>&1 &&
        ruby -e '
            require "rails"; require "active_record"; require "pg"; require "mysql2"; require "sqlite3"
            exit(Rails::VERSION::MAJOR == 6 && Rails::VERSION::MINOR == 1 ? 0 : 1)' >/dev/null 2>&1
}

if have; then
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "rails.sh: apt-get not found: install Rails 6.1 and the pg, mysql2, sqlite3 gems by hand (Debian 12: ${packages[*]})" >&2
    exit 1
fi
sudo=()
if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
        echo "rails.sh: not root and no sudo: run as root: apt-get install ${packages[*]}" >&2
        exit 1
    fi
    sudo=(sudo)
fi

echo "rails.sh: installing ${packages[*]} with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
if ! "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${packages[@]}" >&2; then
    echo "rails.sh: apt-get install failed; updating the package lists and retrying" >&2
    "${sudo[@]}" apt-get update -qq >&2 || {
        echo "rails.sh: apt-get update failed (see above)" >&2
        exit 1
    }
    "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${packages[@]}" >&2 || {
        echo "rails.sh: apt-get install ${packages[*]} failed (see above)" >&2
        exit 1
    }
fi

if ! have; then
    echo "rails.sh: installed, but Rails 6.1 with pg, mysql2, sqlite3 still does not load:" >&2
    ruby -e 'require "rails"; require "pg"; require "mysql2"; require "sqlite3"; puts Rails.version' >&2 || true
    command -v rails bundle >&2 || echo "rails.sh: 'rails' or 'bundle' missing from PATH" >&2
    exit 1
fi
echo "rails.sh: Rails $(ruby -e 'require "rails"; print Rails.version') ready" >&2
