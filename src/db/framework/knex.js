// slipway's adapter for knex migrations (see CONTRACT.md). Run as
// `node -e "$PROGRAM"` in a release directory: knex comes from that directory's
// node_modules, the settings from its knexfile.js (knexfile.cjs as a fallback),
// environment NODE_ENV (default `production`) when the knexfile is keyed by
// environment.
//
// Ids are knex's migration names (file names, as stored in knex_migrations).
// - applied: knex_migrations ordered by id (the order knex inserted them).
// - known: the migration source's list (file names in sorted order, knex's
//   order of application).
// - reversible: the module exports a `down` function whose body does something:
//   an empty body, a bare `return`/`return Promise.resolve()` or one that starts
//   by throwing makes the migration irreversible (knex itself refuses a module
//   without `down`).
// - atomic: the migration runs in a transaction (its `config.transaction`, else
//   not `migrations.disableTransactions`) and the client rolls DDL back
//   (PostgreSQL, SQLite); MySQL/MariaDB are nonatomic.
// migrate is knex's `migrate.latest()`: one batch, by default in ONE transaction
// for all pending migrations, so a failure there leaves none of them applied.
// unapply runs `migrate.down({ name })` per id, which unapplies exactly that one.
'use strict';
const path = require('path');
const fs = require('fs');
const { createRequire } = require('module');

const out = (line) => process.stdout.write('slipway:' + line + '\n');
const oneLine = (s) => String(s).replace(/\s+/g, ' ').trim();

// Never print the database URL or its password.
let secrets = [];
function scrub(message) {
  let text = oneLine(message);
  for (const s of secrets) {
    if (s && s.length > 0) text = text.split(s).join('***');
  }
  return text.replace(/([a-z][a-z0-9+.-]*:\/\/[^:\/@\s]*:)[^@\s]*@/gi, '$1***@');
}
// knex prefixes a failed query's error with its SQL; keep the database's error.
const failedSql = new WeakMap();
function errorText(err) {
  if (!err) return 'unknown error';
  let text = err.message || String(err);
  const sql = typeof err === 'object' ? failedSql.get(err) : undefined;
  if (sql !== undefined && text.startsWith(sql + ' - ')) text = text.slice(sql.length + 3);
  return scrub(text);
}

function loadKnexfile(appRequire) {
  for (const name of ['knexfile.js', 'knexfile.cjs']) {
    const file = path.join(process.cwd(), name);
    if (fs.existsSync(file)) {
      let config = appRequire(file);
      if (config && config.default) config = config.default;
      const env = process.env.NODE_ENV || 'production';
      if (config && !config.client && config[env]) config = config[env];
      return config;
    }
  }
  throw new Error('no knexfile.js in ' + process.cwd());
}

function collectSecrets(config) {
  const c = config.connection;
  if (typeof c === 'string') {
    secrets.push(c);
    try {
      const u = new URL(c);
      if (u.password) secrets.push(u.password, decodeURIComponent(u.password));
    } catch (e) {
      /* not a URL */
    }
  } else if (c && typeof c === 'object') {
    if (c.password) secrets.push(String(c.password));
    if (c.connectionString) secrets.push(String(c.connectionString));
  }
}

// Whether a down function does something (see the rule at the top).
function downDoesSomething(fn) {
  if (typeof fn !== 'function') return false;
  const src = fn
    .toString()
    .replace(/\/\*[\s\S]*?\*\//g, '')
    .replace(/(^|[^:])\/\/.*$/gm, '$1');
  const arrow = src.match(/^\s*(?:async\s*)?(?:\([^)]*\)|[A-Za-z_$][\w$]*)\s*=>\s*([\s\S]*)$/);
  let body;
  if (arrow && !arrow[1].trim().startsWith('{')) {
    return true; // expression body
  } else if (arrow) {
    body = arrow[1].trim().slice(1, -1);
  } else {
    const paren = src.indexOf(')');
    const open = src.indexOf('{', paren);
    body = src.slice(open + 1, src.lastIndexOf('}'));
  }
  body = body.trim();
  if (body === '') return false;
  if (/^return\s*(Promise\.resolve\(\s*\))?\s*;?$/.test(body)) return false;
  if (/^throw\b/.test(body)) return false;
  return true;
}

async function main() {
  const op = process.env.SLIPWAY_OP;
  if (!['inspect', 'migrate', 'unapply'].includes(op)) {
    out('error SLIPWAY_OP must be inspect, migrate or unapply, not ' + JSON.stringify(op || ''));
    return 3;
  }
  const appRequire = createRequire(path.join(process.cwd(), 'package.json'));
  let knexLib;
  try {
    knexLib = appRequire('knex');
  } catch (e) {
    out('error cannot load knex from ' + process.cwd() + '/node_modules: ' + oneLine(e.message.split('\n')[0]));
    return 2;
  }
  let config;
  try {
    config = loadKnexfile(appRequire);
  } catch (e) {
    out('error cannot load the knexfile: ' + scrub(e.message));
    return 2;
  }
  collectSecrets(config);
  const { getMergedConfig } = appRequire('knex/lib/migrations/migrate/migrator-configuration-merger');
  const migrateConfig = getMergedConfig(config.migrations || {}, undefined, { warn() {} });
  // knex's own messages go to stderr; the SQL of a failed query is not
  // compiled with its bindings (which could hold secrets) into the message.
  const toStderr = (m) => process.stderr.write((typeof m === 'string' ? m : require('util').inspect(m)) + '\n');
  const knex = knexLib({
    ...config,
    compileSqlOnError: false,
    log: { warn: toStderr, error: toStderr, deprecate: toStderr, debug: toStderr, ...(config.log || {}) },
  });
  knex.on('query-error', (err, query) => {
    if (err && typeof err === 'object' && query && typeof query.sql === 'string') failedSql.set(err, query.sql);
  });
  try {
    return await run(op, knex, config, migrateConfig);
  } finally {
    await knex.destroy().catch(() => {});
  }
}

async function readApplied(knex, mc) {
  const has = mc.schemaName
    ? await knex.schema.withSchema(mc.schemaName).hasTable(mc.tableName)
    : await knex.schema.hasTable(mc.tableName);
  if (!has) return [];
  let q = knex(mc.tableName);
  if (mc.schemaName) q = q.withSchema(mc.schemaName);
  const rows = await q.select('name').orderBy('id');
  return rows.map((r) => r.name);
}

async function printApplied(knex, mc) {
  try {
    for (const name of await readApplied(knex, mc)) out('applied ' + name);
    return true;
  } catch (e) {
    out('error cannot read applied migrations: ' + errorText(e));
    return false;
  }
}

async function run(op, knex, config, mc) {
  const source = mc.migrationSource;
  const client = String(knex.client.dialect || knex.client.config.client || '');
  const ddlRollsBack = /^(pg|postgres|postgresql|sqlite3?|better-sqlite3|cockroachdb|pgnative)$/.test(
    knex.client.driverName || client
  ) || /^(postgresql|sqlite3)$/.test(client);

  let known = [];
  try {
    for (const m of await source.getMigrations(mc.loadExtensions)) {
      const name = source.getMigrationName(m);
      const content = await source.getMigration(m);
      const reversible = typeof content.up === 'function' && downDoesSomething(content.down);
      const single = content.config && content.config.transaction;
      const inTransaction = typeof single === 'boolean' ? single : !mc.disableTransactions;
      known.push({ name, reversible, atomic: inTransaction && ddlRollsBack });
    }
  } catch (e) {
    out('error cannot list the migrations: ' + scrub(e.message));
    await printApplied(knex, mc);
    return 2;
  }
  for (const k of known) {
    out(`known ${k.name} ${k.reversible ? 'reversible' : 'irreversible'} ${k.atomic ? 'atomic' : 'nonatomic'}`);
  }

  if (op === 'inspect') {
    return (await printApplied(knex, mc)) ? done() : 2;
  }

  if (op === 'migrate') {
    let before;
    try {
      before = await readApplied(knex, mc);
    } catch (e) {
      out('error cannot read applied migrations: ' + errorText(e));
      return 2;
    }
    const pending = known.filter((k) => !before.includes(k.name)).map((k) => k.name);
    const missing = before.filter((n) => !known.some((k) => k.name === n));
    if (missing.length > 0) {
      out('error applied migrations unknown to this release: ' + missing.join(' '));
      await printApplied(knex, mc);
      return 3;
    }
    const migrator = knex.migrate;
    let failedName = null;
    try {
      // knex names the running migration here; it is the one that failed.
      await migrator.latest(config.migrations || {});
    } catch (e) {
      failedName = migrator._activeMigration && migrator._activeMigration.fileName;
      if (!failedName || !pending.includes(failedName)) {
        out('error migrate failed: ' + errorText(e));
        await printApplied(knex, mc);
        return 2;
      }
      out('failed ' + failedName + ' ' + errorText(e));
      await printApplied(knex, mc);
      return 1;
    }
    return (await printApplied(knex, mc)) ? done() : 2;
  }

  // unapply
  const ids = (process.env.SLIPWAY_MIGRATIONS || '').split('\n').map((s) => s.trim()).filter(Boolean);
  let applied;
  try {
    applied = await readApplied(knex, mc);
  } catch (e) {
    out('error cannot read applied migrations: ' + errorText(e));
    return 2;
  }
  const refuse = async (message) => {
    out('error ' + message);
    await printApplied(knex, mc);
    return 3;
  };
  if (ids.length === 0) return refuse('SLIPWAY_MIGRATIONS lists no migration to unapply');
  const seen = new Set();
  for (const id of ids) {
    if (seen.has(id)) return refuse(`${id} is listed twice`);
    seen.add(id);
    const k = known.find((x) => x.name === id);
    if (!k) return refuse(`${id} is not a migration of this release`);
    if (!applied.includes(id)) return refuse(`${id} is not applied`);
    if (!k.reversible) return refuse(`${id} is irreversible`);
  }
  // knex refuses to run anything while an applied migration has no file.
  const missing = applied.filter((n) => !known.some((k) => k.name === n));
  if (missing.length > 0) return refuse('applied migrations unknown to this release: ' + missing.join(' '));

  for (const id of ids) {
    try {
      // Unapplies exactly the named migration (knex >= 0.95 supports `name`).
      await knex.migrate.down({ ...(config.migrations || {}), name: id });
    } catch (e) {
      out('failed ' + id + ' ' + errorText(e));
      await printApplied(knex, mc);
      return 1;
    }
  }
  return (await printApplied(knex, mc)) ? done() : 2;
}

function done() {
  out('done');
  return 0;
}

main().then(
  (code) => process.exit(code),
  (e) => {
    out('error ' + scrub((e && e.message) || String(e)));
    process.exit(2);
  }
);
