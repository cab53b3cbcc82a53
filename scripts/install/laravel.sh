#!/usr/bin/env bash
# Installs what slipway's Laravel adapter and test app need, from Debian 12's apt:
# PHP 8.2 CLI, Laravel 8 (php-laravel-framework), the PDO drivers for PostgreSQL,
# MySQL/MariaDB and SQLite, and Doctrine DBAL (Laravel 8 needs it to drop or change
# columns on SQLite). Idempotent: quiet and quick when everything is present.
# Needs root (or sudo) when something is missing.
set -euo pipefail

packages=(php-cli php-laravel-framework php-pgsql php-mysql php-sqlite3 php-doctrine-dbal)

missing=()
for p in "${packages[@]}"; do
  if [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)" != installed ]; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -gt 0 ]; then
  sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "laravel.sh: need root to install: ${missing[*]}" >&2; exit 1; }
    sudo=(sudo)
  fi
  echo "laravel.sh: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  if ! "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" >/tmp/laravel-install.$$.log 2>&1; then
    "${sudo[@]}" apt-get update -q >/dev/null ||
      { echo "laravel.sh: apt-get update failed" >&2; exit 1; }
    "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" >/tmp/laravel-install.$$.log 2>&1 ||
      { cat /tmp/laravel-install.$$.log >&2; echo "laravel.sh: apt-get install ${missing[*]} failed" >&2; exit 1; }
  fi
  rm -f /tmp/laravel-install.$$.log
fi

# Check that what the app needs actually loads.
# shellcheck disable=SC2016  # PHP code in single quotes
php -r '
  require "/usr/share/php/Illuminate/autoload.php";
  foreach (["pdo_pgsql", "pdo_mysql", "pdo_sqlite"] as $e) {
    if (!extension_loaded($e)) { fwrite(STDERR, "laravel.sh: PHP extension $e is not loaded\n"); exit(1); }
  }
  foreach (["Illuminate\\Foundation\\Application", "Illuminate\\Database\\Migrations\\Migrator",
            "Doctrine\\DBAL\\Driver\\AbstractSQLiteDriver"] as $c) {
    if (!class_exists($c)) { fwrite(STDERR, "laravel.sh: class $c does not load\n"); exit(1); }
  }' || { echo "laravel.sh: the PHP/Laravel installation is incomplete" >&2; exit 1; }
