#!/usr/bin/env bash
# shellcheck disable=SC2016  # PHP code in single quotes: its $ must not expand
# Generate the Laravel test app: tests/frameworks/laravel/make-app.sh DEST VERSION
#
# Laravel 8 from Debian (php-laravel-framework, installed by scripts/install/laravel.sh).
# Without packagist, `composer create-project laravel/laravel` is impossible, so this
# writes the smallest runnable artisan app on Debian's framework (artisan,
# bootstrap/app.php, config/*.php, app/Console/Kernel.php, app/Exceptions/Handler.php,
# and vendor/autoload.php standing in for Composer's autoloader: it loads Debian's
# /usr/share/php/Illuminate/autoload.php and maps App\ to app/), then generates the
# migrations with the framework's own generators (`php artisan make:migration`,
# `php artisan queue:failed-table`) and edits them. Generated files get fixed
# timestamps so migration ids are the same on every run.
#
# Versions (each includes the previous one unless said otherwise):
#   v1  Laravel's usual users, password_resets and failed_jobs tables, plus the
#       "catalog" table items(id, name). Laravel has no modules/apps.
#   v2  v1 + price integer not null default 0 on items, + orders(id, item_id -> items, qty)
#       in its own migration file.
#   v3  v2 + create notes (good), then a migration that creates broken_part and then
#       fails (INSERT into a missing table).
#   v4  v2 + an irreversible migration (no down()): adds items.legacy via raw SQL.
#
# Database settings: `.env` in the app root (Laravel's convention), read at run time:
#   DB_CONNECTION=pgsql|mysql|sqlite  DB_HOST  DB_PORT  DB_DATABASE  DB_USERNAME  DB_PASSWORD
# or DATABASE_URL=postgres://user:pw@host:port/db (mysql://..., sqlite:///path also work);
# with DATABASE_URL alone the connection is chosen by its scheme.
# Build hooks before the migrator can run: none (no composer install; bootstrap/cache
# and storage/ are in the tree and must be writable).
set -euo pipefail

usage() { echo "usage: $0 DEST v1|v2|v3|v4" >&2; exit 2; }
[ $# -eq 2 ] || usage
dest=$1 version=$2
case $version in v1|v2|v3|v4) ;; *) usage ;; esac
if [ -e "$dest" ] && [ -n "$(ls -A "$dest")" ]; then
  echo "make-app.sh: $dest exists and is not empty" >&2; exit 2
fi
command -v php >/dev/null || { echo "make-app.sh: php not found: run scripts/install/laravel.sh" >&2; exit 1; }
[ -f /usr/share/php/Illuminate/autoload.php ] ||
  { echo "make-app.sh: Debian's Laravel (php-laravel-framework) is missing: run scripts/install/laravel.sh" >&2; exit 1; }

mkdir -p "$dest"
cd "$dest"
mkdir -p app/Console app/Exceptions bootstrap/cache config database/migrations \
  storage/app storage/logs storage/framework/cache/data storage/framework/sessions \
  storage/framework/views vendor

cat > artisan <<'PHP'
#!/usr/bin/env php
<?php

define('LARAVEL_START', microtime(true));

require __DIR__.'/vendor/autoload.php';

$app = require_once __DIR__.'/bootstrap/app.php';

$kernel = $app->make(Illuminate\Contracts\Console\Kernel::class);

$status = $kernel->handle(
    $input = new Symfony\Component\Console\Input\ArgvInput,
    new Symfony\Component\Console\Output\ConsoleOutput
);

$kernel->terminate($input, $status);

exit($status);
PHP
chmod +x artisan

cat > vendor/autoload.php <<'PHP'
<?php

// Stands in for Composer's vendor/autoload.php: the framework comes from Debian
// (php-laravel-framework, autoloader in /usr/share/php, which is on PHP's include_path),
// the application's classes are PSR-4: App\ => app/, Database\Seeders\ => database/seeders/.
require_once '/usr/share/php/Illuminate/autoload.php';

spl_autoload_register(function ($class) {
    foreach (['App\\' => '/../app/', 'Database\\Seeders\\' => '/../database/seeders/'] as $prefix => $dir) {
        if (strncmp($class, $prefix, strlen($prefix)) === 0) {
            $file = __DIR__.$dir.str_replace('\\', '/', substr($class, strlen($prefix))).'.php';
            if (is_file($file)) {
                require $file;
            }
            return;
        }
    }
});
PHP

cat > composer.json <<'JSON'
{
    "name": "slipway/laravel-test-app",
    "type": "project",
    "description": "slipway's Laravel test app, on Debian's php-laravel-framework 8.",
    "require": {
        "php": ">=7.3",
        "laravel/framework": "^8.0"
    },
    "autoload": {
        "psr-4": {
            "App\\": "app/",
            "Database\\Seeders\\": "database/seeders/"
        }
    }
}
JSON

cat > bootstrap/app.php <<'PHP'
<?php

$app = new Illuminate\Foundation\Application(
    $_ENV['APP_BASE_PATH'] ?? dirname(__DIR__)
);

$app->singleton(
    Illuminate\Contracts\Console\Kernel::class,
    App\Console\Kernel::class
);

$app->singleton(
    Illuminate\Contracts\Debug\ExceptionHandler::class,
    App\Exceptions\Handler::class
);

return $app;
PHP

cat > app/Console/Kernel.php <<'PHP'
<?php

namespace App\Console;

use Illuminate\Console\Scheduling\Schedule;
use Illuminate\Foundation\Console\Kernel as ConsoleKernel;

class Kernel extends ConsoleKernel
{
    /**
     * The Artisan commands provided by your application.
     *
     * @var array
     */
    protected $commands = [
        //
    ];

    /**
     * Define the application's command schedule.
     *
     * @param  \Illuminate\Console\Scheduling\Schedule  $schedule
     * @return void
     */
    protected function schedule(Schedule $schedule)
    {
        //
    }
}
PHP

cat > app/Exceptions/Handler.php <<'PHP'
<?php

namespace App\Exceptions;

use Illuminate\Foundation\Exceptions\Handler as ExceptionHandler;

class Handler extends ExceptionHandler
{
    /**
     * The inputs that are never flashed for validation exceptions.
     *
     * @var array
     */
    protected $dontFlash = [
        'current_password',
        'password',
        'password_confirmation',
    ];
}
PHP

cat > config/app.php <<'PHP'
<?php

return [
    'name' => env('APP_NAME', 'Laravel'),
    'env' => env('APP_ENV', 'production'),
    'debug' => (bool) env('APP_DEBUG', false),
    'url' => env('APP_URL', 'http://localhost'),
    'timezone' => 'UTC',
    'locale' => 'en',
    'fallback_locale' => 'en',
    'key' => env('APP_KEY'),
    'cipher' => 'AES-256-CBC',

    // The console subset of Laravel 8's default providers.
    'providers' => [
        Illuminate\Bus\BusServiceProvider::class,
        Illuminate\Cache\CacheServiceProvider::class,
        Illuminate\Foundation\Providers\ConsoleSupportServiceProvider::class,
        Illuminate\Database\DatabaseServiceProvider::class,
        Illuminate\Encryption\EncryptionServiceProvider::class,
        Illuminate\Filesystem\FilesystemServiceProvider::class,
        Illuminate\Foundation\Providers\FoundationServiceProvider::class,
        Illuminate\Hashing\HashServiceProvider::class,
        Illuminate\Pipeline\PipelineServiceProvider::class,
        Illuminate\Queue\QueueServiceProvider::class,
        Illuminate\Translation\TranslationServiceProvider::class,
        Illuminate\Validation\ValidationServiceProvider::class,
        Illuminate\View\ViewServiceProvider::class,
    ],

    'aliases' => [
        'Artisan' => Illuminate\Support\Facades\Artisan::class,
        'DB' => Illuminate\Support\Facades\DB::class,
        'Schema' => Illuminate\Support\Facades\Schema::class,
    ],
];
PHP

cat > config/database.php <<'PHP'
<?php

use Illuminate\Support\Str;

// Settings come from .env in the app root: DB_CONNECTION, DB_HOST, DB_PORT, DB_DATABASE,
// DB_USERNAME, DB_PASSWORD; or DATABASE_URL (then, without DB_CONNECTION, the
// connection is the one its scheme names).
$urlScheme = strtolower((string) parse_url((string) env('DATABASE_URL', ''), PHP_URL_SCHEME));
$urlConnection = [
    'postgres' => 'pgsql', 'postgresql' => 'pgsql', 'pgsql' => 'pgsql',
    'mysql' => 'mysql', 'mysql2' => 'mysql', 'sqlite' => 'sqlite', 'sqlite3' => 'sqlite',
][$urlScheme] ?? 'mysql';

return [
    'default' => env('DB_CONNECTION', $urlConnection),

    'connections' => [
        'sqlite' => [
            'driver' => 'sqlite',
            'url' => env('DATABASE_URL'),
            'database' => env('DB_DATABASE', database_path('database.sqlite')),
            'prefix' => '',
            'foreign_key_constraints' => env('DB_FOREIGN_KEYS', true),
        ],

        'mysql' => [
            'driver' => 'mysql',
            'url' => env('DATABASE_URL'),
            'host' => env('DB_HOST', '127.0.0.1'),
            'port' => env('DB_PORT', '3306'),
            'database' => env('DB_DATABASE', 'forge'),
            'username' => env('DB_USERNAME', 'forge'),
            'password' => env('DB_PASSWORD', ''),
            'unix_socket' => env('DB_SOCKET', ''),
            'charset' => 'utf8mb4',
            'collation' => 'utf8mb4_unicode_ci',
            'prefix' => '',
            'prefix_indexes' => true,
            'strict' => true,
            'engine' => null,
            'options' => extension_loaded('pdo_mysql') ? array_filter([
                PDO::MYSQL_ATTR_SSL_CA => env('MYSQL_ATTR_SSL_CA'),
            ]) : [],
        ],

        'pgsql' => [
            'driver' => 'pgsql',
            'url' => env('DATABASE_URL'),
            'host' => env('DB_HOST', '127.0.0.1'),
            'port' => env('DB_PORT', '5432'),
            'database' => env('DB_DATABASE', 'forge'),
            'username' => env('DB_USERNAME', 'forge'),
            'password' => env('DB_PASSWORD', ''),
            'charset' => 'utf8',
            'prefix' => '',
            'prefix_indexes' => true,
            'schema' => 'public',
            'sslmode' => 'prefer',
        ],
    ],

    'migrations' => 'migrations',
];
PHP

cat > config/logging.php <<'PHP'
<?php

use Monolog\Handler\StreamHandler;

return [
    'default' => env('LOG_CHANNEL', 'stderr'),

    'deprecations' => env('LOG_DEPRECATIONS_CHANNEL', 'null'),

    'channels' => [
        'single' => [
            'driver' => 'single',
            'path' => storage_path('logs/laravel.log'),
            'level' => env('LOG_LEVEL', 'debug'),
        ],

        'stderr' => [
            'driver' => 'monolog',
            'level' => env('LOG_LEVEL', 'debug'),
            'handler' => StreamHandler::class,
            'with' => [
                'stream' => 'php://stderr',
            ],
        ],

        'null' => [
            'driver' => 'monolog',
            'handler' => Monolog\Handler\NullHandler::class,
        ],
    ],
];
PHP

cat > config/queue.php <<'PHP'
<?php

return [
    'default' => env('QUEUE_CONNECTION', 'sync'),

    'connections' => [
        'sync' => [
            'driver' => 'sync',
        ],
    ],

    'failed' => [
        'driver' => env('QUEUE_FAILED_DRIVER', 'database-uuids'),
        'database' => env('DB_CONNECTION', 'mysql'),
        'table' => 'failed_jobs',
    ],
];
PHP

cat > config/view.php <<'PHP'
<?php

return [
    'paths' => [
        resource_path('views'),
    ],

    'compiled' => realpath(storage_path('framework/views')) ?: storage_path('framework/views'),
];
PHP

cat > .env.example <<'ENV'
APP_ENV=production
DB_CONNECTION=pgsql
DB_HOST=127.0.0.1
DB_PORT=5432
DB_DATABASE=app
DB_USERNAME=app
DB_PASSWORD=
ENV

for d in bootstrap/cache storage/app storage/logs storage/framework/cache/data \
         storage/framework/sessions storage/framework/views; do
  printf '*\n!.gitignore\n' > "$d/.gitignore"
done
printf '/.env\n' > .gitignore

# --- migrations, generated by the framework, then edited ---------------------------

# The generators read no database; give them an .env-free, file-less environment.
artisan() { APP_ENV=local DB_CONNECTION=sqlite DB_DATABASE=:memory: php artisan "$@" >/dev/null; }

# gen TIMESTAMP NAME [make:migration options]: php artisan make:migration, then the file
# gets the fixed TIMESTAMP; prints the path.
gen() {
  local ts=$1 name=$2 f
  shift 2
  artisan make:migration "$name" "$@"
  f=$(find database/migrations -name "????_??_??_??????_${name}.php" | head -n1)
  [ -n "$f" ] || { echo "make-app.sh: make:migration $name made no file" >&2; exit 1; }
  mv "$f" "database/migrations/${ts}_${name}.php"
  echo "database/migrations/${ts}_${name}.php"
}

# body FILE OLD NEW: replace the first occurrence of OLD (literal, may span lines) by NEW.
body() {
  OLD=$2 NEW=$3 php -r '
    $f = $argv[1]; $s = file_get_contents($f); $old = getenv("OLD");
    $i = strpos($s, $old);
    if ($i === false) { fwrite(STDERR, "make-app.sh: $f: text to edit not found\n"); exit(1); }
    file_put_contents($f, substr_replace($s, getenv("NEW"), $i, strlen($old)));' "$1"
}

create_body='$table->id();
            $table->timestamps();'
update_up="Schema::table('items', function (Blueprint \$table) {
            //
        });"

{
  # Laravel's usual starting point (laravel/laravel 8's database/migrations).
  f=$(gen 2014_10_12_000000 create_users_table)
  body "$f" "$create_body" '$table->id();
            $table->string('"'name'"');
            $table->string('"'email'"')->unique();
            $table->timestamp('"'email_verified_at'"')->nullable();
            $table->string('"'password'"');
            $table->rememberToken();
            $table->timestamps();'

  f=$(gen 2014_10_12_100000 create_password_resets_table)
  body "$f" "$create_body" '$table->string('"'email'"')->index();
            $table->string('"'token'"');
            $table->timestamp('"'created_at'"')->nullable();'

  artisan queue:failed-table
  f=$(find database/migrations -name '????_??_??_??????_create_failed_jobs_table.php' | head -n1)
  [ -n "$f" ] || { echo "make-app.sh: queue:failed-table made no file" >&2; exit 1; }
  mv "$f" database/migrations/2019_08_19_000000_create_failed_jobs_table.php

  # catalog: items
  f=$(gen 2024_01_01_000000 create_items_table)
  body "$f" "$create_body" '$table->id();
            $table->string('"'name'"');'
}

if [ "$version" != v1 ]; then
  f=$(gen 2024_02_01_000000 add_price_to_items_table --table=items)
  body "$f" "$update_up" "Schema::table('items', function (Blueprint \$table) {
            \$table->integer('price')->default(0);
        });"
  body "$f" "$update_up" "Schema::table('items', function (Blueprint \$table) {
            \$table->dropColumn('price');
        });"

  # orders, in its own migration file (Laravel has no second app/module)
  f=$(gen 2024_02_01_000001 create_orders_table)
  body "$f" "$create_body" '$table->id();
            $table->foreignId('"'item_id'"')->constrained('"'items'"');
            $table->integer('"'qty'"');'
fi

if [ "$version" = v3 ]; then
  f=$(gen 2024_03_01_000000 create_notes_table)
  body "$f" "$create_body" '$table->id();
            $table->text('"'body'"');'

  # Fails midway: creates broken_part, then a statement on a missing table.
  f=$(gen 2024_03_01_000001 create_broken_part_table)
  body "$f" "$create_body
        });" '$table->id();
        });
        DB::statement('"'INSERT INTO missing_table (id) VALUES (1)'"');'
  body "$f" 'use Illuminate\Support\Facades\Schema;' 'use Illuminate\Support\Facades\DB;
use Illuminate\Support\Facades\Schema;'
fi

if [ "$version" = v4 ]; then
  # Irreversible, Laravel's way: raw SQL and no down() method.
  f=$(gen 2024_04_01_000000 add_legacy_to_items_table --table=items)
  body "$f" "$update_up" "DB::statement('ALTER TABLE items ADD COLUMN legacy integer');"
  body "$f" 'use Illuminate\Support\Facades\Schema;' 'use Illuminate\Support\Facades\DB;
use Illuminate\Support\Facades\Schema;'
  body "$f" '

    /**
     * Reverse the migrations.
     *
     * @return void
     */
    public function down()
    {
        Schema::table('"'items'"', function (Blueprint $table) {
            //
        });
    }' ''
fi

# The generators' caches are not part of the app.
find bootstrap/cache -type f ! -name .gitignore -delete
