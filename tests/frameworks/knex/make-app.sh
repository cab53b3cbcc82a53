#!/usr/bin/env bash
# Generates the knex test app: tests/frameworks/knex/make-app.sh DEST VERSION
# VERSION is v1, v2, v3 or v4 (see the framework tests). Uses knex's own
# generators (`knex init`, `knex migrate:make`), then fixes the migration file
# names (knex ids are file names, ordered by name) so the ids are the same on
# every run.
#
# The app has a `node_modules` symlink to the shared knex install made by
# scripts/install/knex.sh (default /var/cache/slipway-tests/knex/node_modules;
# SLIPWAY_KNEX_DIR overrides the directory). Its database settings come, at run
# time, from `.env` in the app root: a line `DATABASE_URL=postgres://USER:PW@HOST:PORT/DB`
# (or mysql://...). Without a `.env`, the environment variable DATABASE_URL is used.
set -euo pipefail

usage() { echo "usage: $0 DEST v1|v2|v3|v4" >&2; exit 2; }
[ $# -eq 2 ] || usage
DEST=$1
VERSION=$2
case $VERSION in v1 | v2 | v3 | v4) ;; *) usage ;; esac

KNEX_DIR="${SLIPWAY_KNEX_DIR:-/var/cache/slipway-tests/knex}"
if [ ! -f "$KNEX_DIR/node_modules/knex/package.json" ]; then
    echo "knex is not installed in $KNEX_DIR/node_modules: run scripts/install/knex.sh" >&2
    exit 1
fi
if [ -e "$DEST" ] && [ -n "$(ls -A "$DEST")" ]; then
    echo "$DEST exists and is not empty" >&2
    exit 1
fi
mkdir -p "$DEST"
cd "$DEST"

ln -s "$KNEX_DIR/node_modules" node_modules
knex() { DATABASE_URL=postgres://generate@localhost/generate node node_modules/knex/bin/cli.js "$@" >/dev/null; }

cat >package.json <<'JSON'
{
  "name": "slipway-knex-test-app",
  "version": "1.0.0",
  "private": true,
  "dependencies": {
    "knex": "3.1.0",
    "mysql2": "3.14.3",
    "pg": "8.16.3"
  }
}
JSON

knex init
# Replace the generated per-environment template with one configuration read from .env.
cat >knexfile.js <<'JS'
// Database settings come from .env in the app root (DATABASE_URL=...), read
// here without extra dependencies; without a .env, from the environment.
const fs = require('fs');
const path = require('path');

function databaseUrl() {
  const file = path.join(__dirname, '.env');
  if (fs.existsSync(file)) {
    for (const raw of fs.readFileSync(file, 'utf8').split(/\r?\n/)) {
      const m = raw.match(/^\s*(?:export\s+)?DATABASE_URL\s*=\s*(.*?)\s*$/);
      if (m) return m[1].replace(/^(['"])(.*)\1$/, '$2');
    }
    throw new Error(`${file} has no DATABASE_URL line`);
  }
  if (process.env.DATABASE_URL) return process.env.DATABASE_URL;
  throw new Error('no .env with DATABASE_URL in the app root');
}

function config() {
  const url = databaseUrl();
  const scheme = url.split(':', 1)[0];
  let client;
  let connection = url;
  if (scheme === 'postgres' || scheme === 'postgresql') {
    client = 'pg';
  } else if (scheme === 'mysql' || scheme === 'mariadb' || scheme === 'mysql2') {
    client = 'mysql2';
    connection = url.replace(/^[a-z0-9]+:/, 'mysql:');
  } else {
    throw new Error(`DATABASE_URL: unsupported scheme ${scheme}:`);
  }
  return {
    client,
    connection,
    pool: { min: 0, max: 4 },
    migrations: {
      tableName: 'knex_migrations',
      directory: path.join(__dirname, 'migrations'),
    },
  };
}

module.exports = config();
JS

# Generates a migration with knex and gives it a fixed id; its body comes from stdin.
n=0
migration() {
    local name=$1 made fixed
    n=$((n + 1))
    fixed="migrations/$(printf '20240101%06d' "$n")_$name.js"
    knex migrate:make "$name"
    made=(migrations/[0-9]*_"$name".js)
    if [ ${#made[@]} -ne 1 ] || [ ! -f "${made[0]}" ]; then
        echo "knex migrate:make $name made ${made[*]}" >&2
        exit 1
    fi
    mv "${made[0]}" "$fixed"
    cat >"$fixed"
}

migration create_items <<'JS'
/**
 * @param { import("knex").Knex } knex
 * @returns { Promise<void> }
 */
exports.up = function(knex) {
  return knex.schema.createTable('items', function(t) {
    t.increments('id');
    t.string('name').notNullable();
  });
};

/**
 * @param { import("knex").Knex } knex
 * @returns { Promise<void> }
 */
exports.down = function(knex) {
  return knex.schema.dropTable('items');
};
JS
[ "$VERSION" = v1 ] && exit 0

migration add_price_to_items <<'JS'
/**
 * @param { import("knex").Knex } knex
 * @returns { Promise<void> }
 */
exports.up = function(knex) {
  return knex.schema.alterTable('items', function(t) {
    t.integer('price').notNullable().defaultTo(0);
  });
};

/**
 * @param { import("knex").Knex } knex
 * @returns { Promise<void> }
 */
exports.down = function(knex) {
  return knex.schema.alterTable('items', function(t) {
    t.dropColumn('price');
  });
};
JS

migration create_orders <<'JS'
/**
 * @param { import("knex").Knex } knex
 * @returns { Promise<void> }
 */
exports.up = function(knex) {
  return knex.schema.createTable('orders', function(t) {
    t.increments('id');
    t.integer('item_id').unsigned().notNullable().references('id').inTable('items');
    t.integer('qty').notNullable().defaultTo(1);
  });
};

/**
 * @param { import("knex").Knex } knex
 * @returns { Promise<void> }
 */
exports.down = function(knex) {
  return knex.schema.dropTable('orders');
};
JS

case $VERSION in
v3)
    migration create_notes <<'JS'
/**
 * @param { import("knex").Knex } knex
 * @returns { Promise<void> }
 */
exports.up = function(knex) {
  return knex.schema.createTable('notes', function(t) {
    t.increments('id');
    t.text('body');
  });
};

/**
 * @param { import("knex").Knex } knex
 * @returns { Promise<void> }
 */
exports.down = function(knex) {
  return knex.schema.dropTable('notes');
};
JS
    # Fails midway: the first statement succeeds, the second references a missing table.
    migration broken_step <<'JS'
/**
 * @param { import("knex").Knex } knex
 * @returns { Promise<void> }
 */
exports.up = async function(knex) {
  await knex.schema.createTable('broken_part', function(t) {
    t.increments('id');
  });
  await knex.raw('INSERT INTO missing_table (id) VALUES (1)');
};

/**
 * @param { import("knex").Knex } knex
 * @returns { Promise<void> }
 */
exports.down = function(knex) {
  return knex.schema.dropTableIfExists('broken_part');
};
JS
    ;;
v4)
    # Irreversible: raw SQL, and the generated down stub left empty.
    migration add_legacy_to_items <<'JS'
/**
 * @param { import("knex").Knex } knex
 * @returns { Promise<void> }
 */
exports.up = function(knex) {
  return knex.raw('ALTER TABLE items ADD COLUMN legacy integer');
};

/**
 * @param { import("knex").Knex } knex
 * @returns { Promise<void> }
 */
exports.down = function(knex) {
  
};
JS
    ;;
esac
