// slipway's adapter for Laravel's migrator (see CONTRACT.md in this directory).
// slipway runs it as `php -r "$PROGRAM"` in a release directory, so there is no <?php tag.
// It boots the app the way `php artisan` does (vendor/autoload.php, bootstrap/app.php, the
// console kernel's bootstrap), so the database settings are the app's own (config/database.php,
// usually fed by .env), and drives `$app['migrator']`:
//   known      the migration files of the migrator's paths plus database/migrations, in
//              the migrator's order (by file name), ids = file names without `.php`.
//              reversible: the migration object has a down() method. Laravel's rollback of a
//              migration without down() deletes its record and changes nothing, so that is
//              irreversible here; a down() that does nothing cannot be told apart.
//              atomic: the connection's schema grammar supports schema transactions
//              (PostgreSQL, SQLite, SQL Server) and the migration keeps $withinTransaction.
//              destructive: the SQL the migration's up() would run, from the migrator's
//              own `migrate --pretend` (getQueries: the connection's pretend mode, nothing
//              is sent), read for DROP TABLE, DROP COLUMN and RENAME (tables, columns).
//              When pretending throws (e.g. renameColumn without doctrine/dbal on
//              Laravel 8), the file's up() text is scanned instead for Schema::drop /
//              dropIfExists / rename and, inside Schema::table(), dropColumn /
//              renameColumn with literal names.
//   applied    the `migrations` table as Laravel reads it: ORDER BY batch, migration.
//   migrate    `php artisan migrate --force` through the console kernel (one batch).
//   unapply    for each listed id, the migrator's own runDown() for that one file: its
//              down() (in a transaction when atomic) and the deletion of its record; the
//              batch mechanism of `migrate:rollback` is not used, so nothing else is touched.

ini_set('display_errors', 'stderr');

$slipwayCwd = getcwd();
$slipwaySecrets = [];

function slipway_line(string $line): void
{
    fwrite(STDOUT, 'slipway:'.$line."\n");
}

// One line, without any password or database URL of the app's configuration.
function slipway_clean(Throwable $e): string
{
    global $slipwaySecrets;
    $message = $e->getMessage() !== '' ? $e->getMessage() : get_class($e);
    foreach ($slipwaySecrets as $secret) {
        $message = str_replace($secret, '***', $message);
    }
    return trim(preg_replace('/\s+/', ' ', $message));
}

function slipway_call($object, string $method, ...$args)
{
    $m = new ReflectionMethod($object, $method);
    $m->setAccessible(true);
    return $m->invoke($object, ...$args);
}

try {
    require $slipwayCwd.'/vendor/autoload.php';
    $app = require $slipwayCwd.'/bootstrap/app.php';
    $kernel = $app->make(Illuminate\Contracts\Console\Kernel::class);
    $kernel->bootstrap();
    foreach ((array) $app['config']->get('database.connections', []) as $c) {
        foreach ([$c['password'] ?? null, $c['url'] ?? null] as $s) {
            if (is_string($s) && $s !== '') {
                $slipwaySecrets[] = $s;
                $slipwaySecrets[] = rawurlencode($s);
            }
        }
        if (is_string($c['url'] ?? null) && ($p = parse_url($c['url'], PHP_URL_PASS))) {
            $slipwaySecrets[] = $p;
            $slipwaySecrets[] = rawurldecode($p);
        }
    }
    usort($slipwaySecrets, function ($a, $b) { return strlen($b) - strlen($a); });
} catch (Throwable $e) {
    slipway_line('error cannot read applied migrations: the app does not boot: '.slipway_clean($e));
    exit(2);
}

$migrator = $app['migrator'];
$repository = $migrator->getRepository();
// The paths `php artisan migrate` uses without --path.
$paths = array_merge($migrator->paths(), [$app->databasePath('migrations')]);

// Prints the applied migrations; false when they cannot be read.
$printApplied = function () use ($repository) {
    try {
        $ran = $repository->repositoryExists() ? $repository->getRan() : [];
    } catch (Throwable $e) {
        slipway_line('error cannot read applied migrations: '.slipway_clean($e));
        return false;
    }
    foreach ($ran as $id) {
        slipway_line('applied '.$id);
    }
    return $ran;
};

// DROP TABLE, ALTER TABLE ... DROP COLUMN / RENAME [COLUMN] ... TO / RENAME TO.
function slipway_destructive_sql(string $sql): array
{
    $name = '[`"\[]?([\w$]+)[`"\]]?';
    $qname = "($name(?:\\.$name)?)";
    $unquote = function ($n) { return str_replace(['`', '"', '[', ']'], '', $n); };
    $found = [];
    foreach (explode(';', $sql) as $statement) {
        $st = trim($statement);
        if (preg_match("/^drop\\s+table\\s+(?:if\\s+exists\\s+)?$qname/i", $st, $m)) {
            $found[] = ['drop_table', $unquote($m[1]), null];
            continue;
        }
        if (!preg_match("/^alter\\s+table\\s+(?:if\\s+exists\\s+)?(?:only\\s+)?$qname\\s+(.*)\$/is", $st, $m)) {
            continue;
        }
        $table = $unquote($m[1]);
        $rest = $m[count($m) - 1];
        preg_match_all("/\\bdrop\\s+(?:column\\s+)?(?:if\\s+exists\\s+)?$name/i", $rest, $drops);
        foreach ($drops[1] as $col) {
            if (!in_array(strtolower($col), ['constraint', 'index', 'key', 'foreign', 'primary', 'check', 'default', 'not'], true)) {
                $found[] = ['drop_column', "$table.$col", null];
            }
        }
        preg_match_all("/\\brename\\s+(?:column\\s+)?$name\\s+to\\s+$name/i", $rest, $renames, PREG_SET_ORDER);
        foreach ($renames as $r) {
            $found[] = ['rename_column', "$table.$r[1]", $r[2]];
        }
        if (preg_match("/^rename\\s+to\\s+$qname/i", $rest, $r)) {
            $found[] = ['rename_table', $table, $unquote($r[1])];
        }
    }
    return $found;
}

// The text scan (see the top) of an up() that could not be pretended.
function slipway_destructive_text($migration): array
{
    try {
        $m = new ReflectionMethod($migration, 'up');
        $lines = file($m->getFileName());
        $src = implode('', array_slice($lines, $m->getStartLine() - 1, $m->getEndLine() - $m->getStartLine() + 1));
    } catch (Throwable $e) {
        return [];
    }
    $lit = "['\"]([^'\"]+)['\"]";
    preg_match_all("/(?:Schema::|->)(dropIfExists|drop|rename|table|dropColumn|renameColumn)\\(\\s*$lit(?:\\s*,\\s*$lit)?/", $src, $calls, PREG_SET_ORDER);
    $found = [];
    $table = null;
    foreach ($calls as $c) {
        [$call, $a, $b] = [$c[1], $c[2], $c[3] ?? ''];
        $static = strpos($c[0], 'Schema::') === 0;
        if ($static && $call === 'table') {
            $table = $a;
        } elseif ($static && ($call === 'drop' || $call === 'dropIfExists')) {
            $found[] = ['drop_table', $a, null];
        } elseif ($static && $call === 'rename' && $b !== '') {
            $found[] = ['rename_table', $a, $b];
        } elseif (!$static && $table !== null && $call === 'dropColumn') {
            $found[] = ['drop_column', "$table.$a", null];
        } elseif (!$static && $table !== null && $call === 'renameColumn' && $b !== '') {
            $found[] = ['rename_column', "$table.$a", $b];
        }
    }
    return $found;
}

// The `destructive=` field of a known line, or ''. A name the field cannot carry
// (whitespace, `,:>=`) is left out rather than break the line.
function slipway_destructive_field($migrator, $migration, string $id): string
{
    if (!method_exists($migration, 'up')) {
        return '';
    }
    try {
        $sql = array_map(function ($q) { return $q['query']; }, slipway_call($migrator, 'getQueries', $migration, 'up'));
        $found = slipway_destructive_sql(implode(";\n", $sql));
    } catch (Throwable $e) {
        fwrite(STDERR, "laravel adapter: pretending $id failed (".slipway_clean($e)."): scanning its up() text\n");
        $found = slipway_destructive_text($migration);
    }
    $items = [];
    foreach ($found as [$kind, $target, $to]) {
        $ok = '/^[^\s,:>=]{1,255}$/';
        if (!preg_match($ok, $target) || ($to !== null && !preg_match($ok, $to))) {
            continue;
        }
        $items[] = $kind.':'.$target.($to === null ? '' : '>'.$to);
    }
    $items = array_values(array_unique($items));
    return $items ? ' destructive='.implode(',', $items) : '';
}

// known: id => [file, reversible, atomic, destructive]
$known = [];
$id = null;
try {
    foreach ($migrator->getMigrationFiles($paths) as $id => $file) {
        $migration = slipway_call($migrator, 'resolvePath', $file);
        $connection = $migrator->resolveConnection($migration->getConnection());
        $grammar = slipway_call($migrator, 'getSchemaGrammar', $connection);
        $known[$id] = [
            'file' => $file,
            'reversible' => method_exists($migration, 'down'),
            'atomic' => $grammar->supportsSchemaTransactions() && $migration->withinTransaction,
            'destructive' => getenv('SLIPWAY_OP') === 'inspect' ? slipway_destructive_field($migrator, $migration, $id) : '',
        ];
    }
} catch (Throwable $e) {
    slipway_line('error cannot load the migrations'.($id === null ? '' : ' ('.$id.')').': '.slipway_clean($e));
    $printApplied();
    exit(2);
}
foreach ($known as $id => $k) {
    slipway_line('known '.$id.' '.($k['reversible'] ? 'reversible' : 'irreversible').' '
        .($k['atomic'] ? 'atomic' : 'nonatomic').$k['destructive']);
}

$op = getenv('SLIPWAY_OP');

if ($op === 'inspect') {
    if ($printApplied() === false) {
        exit(2);
    }
    slipway_line('done');
    exit(0);
}

if ($op === 'migrate') {
    // The migration that is running: started and not ended.
    $running = null;
    $app['events']->listen(Illuminate\Database\Events\MigrationStarted::class, function ($event) use (&$running, $migrator) {
        $running = $migrator->getMigrationName((new ReflectionClass($event->migration))->getFileName());
    });
    $app['events']->listen(Illuminate\Database\Events\MigrationEnded::class, function () use (&$running) {
        $running = null;
    });
    try {
        $status = $kernel->call('migrate', ['--force' => true]);
        fwrite(STDERR, $kernel->output());
    } catch (Throwable $e) {
        fwrite(STDERR, $kernel->output());
        $failed = $running;
        if ($failed === null) {
            // Failed before its up() ran (e.g. a broken file): the migration file the
            // exception comes from.
            $byFile = [];
            foreach ($known as $id => $k) {
                $byFile[realpath($k['file'])] = $id;
            }
            for ($x = $e; $x && $failed === null; $x = $x->getPrevious()) {
                foreach (array_merge([['file' => $x->getFile()]], $x->getTrace()) as $frame) {
                    if (isset($frame['file'], $byFile[realpath($frame['file']) ?: $frame['file']])) {
                        $failed = $byFile[realpath($frame['file'])];
                        break;
                    }
                }
            }
        }
        if ($failed === null) {
            slipway_line('error migrate failed: '.slipway_clean($e));
            $printApplied();
            exit(2);
        }
        slipway_line('failed '.$failed.' '.slipway_clean($e));
        $printApplied();
        exit(1);
    }
    if ($printApplied() === false) {
        exit(2);
    }
    if ($status !== 0) {
        slipway_line('error php artisan migrate exited with status '.$status);
        exit(2);
    }
    slipway_line('done');
    exit(0);
}

if ($op === 'unapply') {
    $ids = array_values(array_filter(array_map('trim', explode("\n", (string) getenv('SLIPWAY_MIGRATIONS'))), 'strlen'));
    try {
        $ran = $repository->repositoryExists() ? $repository->getRan() : [];
    } catch (Throwable $e) {
        slipway_line('error cannot read applied migrations: '.slipway_clean($e));
        exit(2);
    }
    $refusals = [];
    foreach (array_count_values($ids) as $id => $n) {
        if ($n > 1) {
            $refusals[] = "$id is listed $n times";
        }
    }
    foreach ($ids as $id) {
        if (!in_array($id, $ran, true)) {
            $refusals[] = "$id is not applied";
        } elseif (!isset($known[$id])) {
            $refusals[] = "$id is not in this release's code";
        } elseif (!$known[$id]['reversible']) {
            $refusals[] = "$id is irreversible (no down() method)";
        }
    }
    if ($refusals) {
        slipway_line('error refusing to unapply: '.implode('; ', array_unique($refusals)));
        $printApplied();
        exit(3);
    }
    $migrator->setOutput(new Symfony\Component\Console\Output\StreamOutput(STDERR));
    // As `migrate:rollback` does before its runDown() calls.
    $migrator->requireFiles(array_map(function ($id) use ($known) { return $known[$id]['file']; }, $ids));
    foreach ($ids as $id) {
        try {
            slipway_call($migrator, 'runDown', $known[$id]['file'], (object) ['migration' => $id], false);
        } catch (Throwable $e) {
            slipway_line('failed '.$id.' '.slipway_clean($e));
            $printApplied();
            exit(1);
        }
    }
    if ($printApplied() === false) {
        exit(2);
    }
    slipway_line('done');
    exit(0);
}

slipway_line('error unknown SLIPWAY_OP '.json_encode($op === false ? null : $op));
exit(3);
