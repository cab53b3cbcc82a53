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
// - destructive: each migration's up() is run against a second knex of the same
//   client whose queries are recorded and never sent (every query answers with no
//   rows); the SQL it would run is read for DROP TABLE, DROP COLUMN and RENAME
//   (tables, columns). When that dry run throws (an up() that needs real answers), the
//   up() source text is scanned instead for dropTable/dropTableIfExists/renameTable
//   and, inside table()/alterTable(), dropColumn(s)/renameColumn with literal names.
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

const SQL_NAME = '[`"\\[]?([\\w$]+)[`"\\]]?';
const SQL_QNAME = `(${SQL_NAME}(?:\\.${SQL_NAME})?)`;
const NOT_COLUMNS = ['constraint', 'index', 'key', 'foreign', 'primary', 'check', 'default', 'not'];
const unquote = (name) => name.replace(/[`"[\]]/g, '');

// DROP TABLE, ALTER TABLE ... DROP COLUMN / RENAME [COLUMN] ... TO / RENAME TO.
function destructiveSql(sql) {
  const found = [];
  for (const statement of sql.split(';')) {
    const st = statement.trim();
    let m = st.match(new RegExp('^drop\\s+table\\s+(?:if\\s+exists\\s+)?' + SQL_QNAME, 'i'));
    if (m) {
      found.push(['drop_table', unquote(m[1]), null]);
      continue;
    }
    m = st.match(new RegExp('^alter\\s+table\\s+(?:if\\s+exists\\s+)?(?:only\\s+)?' + SQL_QNAME + '\\s+([\\s\\S]*)$', 'i'));
    if (!m) continue;
    const table = unquote(m[1]);
    const rest = m[m.length - 1];
    for (const d of rest.matchAll(new RegExp('\\bdrop\\s+(?:column\\s+)?(?:if\\s+exists\\s+)?' + SQL_NAME, 'gi'))) {
      if (!NOT_COLUMNS.includes(d[1].toLowerCase())) found.push(['drop_column', `${table}.${d[1]}`, null]);
    }
    for (const r of rest.matchAll(new RegExp('\\brename\\s+(?:column\\s+)?' + SQL_NAME + '\\s+to\\s+' + SQL_NAME, 'gi'))) {
      found.push(['rename_column', `${table}.${r[1]}`, r[2]]);
    }
    const t = rest.match(new RegExp('^rename\\s+to\\s+' + SQL_QNAME, 'i'));
    if (t) found.push(['rename_table', table, unquote(t[1])]);
  }
  return found;
}

// The text scan (see the top) of an up() the dry run could not run.
function destructiveText(fn) {
  const src = String(fn);
  const found = [];
  const lit = `['"\`]([^'"\`]+)['"\`]`;
  const re = new RegExp(
    `\\.(dropTableIfExists|dropTable|renameTable|alterTable|table|dropColumns?|renameColumn)\\(\\s*${lit}(?:\\s*,\\s*${lit})?`,
    'g'
  );
  let table = null;
  for (const m of src.matchAll(re)) {
    const [, call, a, b] = m;
    if (call === 'table' || call === 'alterTable') table = a;
    else if (call === 'dropTable' || call === 'dropTableIfExists') found.push(['drop_table', a, null]);
    else if (call === 'renameTable' && b) found.push(['rename_table', a, b]);
    else if (table && (call === 'dropColumn' || call === 'dropColumns')) {
      found.push(['drop_column', `${table}.${a}`, null]);
      if (call === 'dropColumns' && b) found.push(['drop_column', `${table}.${b}`, null]);
    } else if (table && call === 'renameColumn' && b) found.push(['rename_column', `${table}.${a}`, b]);
  }
  return found;
}

// A knex of the app's client whose queries are recorded, never sent (see the top).
function dryKnex(knexLib, config) {
  const quiet = { warn() {}, error() {}, deprecate() {}, debug() {} };
  const dry = knexLib({ ...config, pool: { min: 0, max: 1 }, log: quiet });
  const client = dry.client;
  const driver = String(client.driverName || client.config.client || '');
  const sql = [];
  client.acquireConnection = async () => ({ slipwayDryRun: true });
  client.releaseConnection = async () => {};
  client._query = async (connection, obj) => {
    if (obj && typeof obj.sql === 'string') sql.push(obj.sql);
    obj.response = /mysql/.test(driver) ? [[], []] : /sqlite/.test(driver) ? [] : { rows: [], rowCount: 0, fields: [] };
    return obj;
  };
  return { dry, sql };
}

async function destructiveOf(knexLib, config, content) {
  if (typeof content.up !== 'function') return [];
  const { dry, sql } = dryKnex(knexLib, config);
  try {
    await content.up(dry);
    return destructiveSql(sql.join(';\n'));
  } catch (e) {
    process.stderr.write('knex adapter: dry run of up() failed (' + scrub(e && e.message) + '): scanning its text\n');
    return destructiveText(content.up);
  } finally {
    await dry.destroy().catch(() => {});
  }
}

// The `destructive=` field of a known line, or ''. A name the field cannot carry
// (whitespace, `,:>=`) is left out rather than break the line.
function destructiveField(found) {
  const ok = /^[^\s,:>=]{1,255}$/;
  const items = [];
  for (const [kind, target, to] of found) {
    if (!ok.test(target) || (to !== null && !ok.test(to))) continue;
    const item = `${kind}:${target}${to === null ? '' : '>' + to}`;
    if (!items.includes(item)) items.push(item);
  }
  return items.length ? ' destructive=' + items.join(',') : '';
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
    return await run(op, knex, config, migrateConfig, knexLib);
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

async function run(op, knex, config, mc, knexLib) {
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
      const destructive = op === 'inspect' ? destructiveField(await destructiveOf(knexLib, config, content)) : '';
      known.push({ name, reversible, atomic: inTransaction && ddlRollsBack, destructive });
    }
  } catch (e) {
    out('error cannot list the migrations: ' + scrub(e.message));
    await printApplied(knex, mc);
    return 2;
  }
  for (const k of known) {
    out(`known ${k.name} ${k.reversible ? 'reversible' : 'irreversible'} ${k.atomic ? 'atomic' : 'nonatomic'}${k.destructive}`);
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
