#!/usr/bin/env bash
# Generates the Rails 6.1 test app (Debian's packaged gems, no rubygems.org) into DEST.
#
#   tests/frameworks/rails/make-app.sh DEST VERSION      (VERSION: v1 | v2 | v3 | v4 | v5)
#
# Built with `rails new` and `bin/rails generate model/migration`, then the generated
# migrations are renamed to fixed timestamps (deterministic ids) and edited:
#   v1  create_items                20240101000001  items(id, name, timestamps)
#   v2  + add_price_to_items        20240102000001  items.price integer not null default 0
#       + create_orders             20240102000002  orders(id, item_id -> items, qty)
#   v3  v2 + create_notes           20240103000001  notes(id, body)
#          + broken_migration       20240103000002  creates broken_part, then fails
#                                                   (INSERT INTO a missing table)
#   v4  v2 + add_legacy_to_items    20240104000001  raw SQL up, down raises
#                                                   ActiveRecord::IrreversibleMigration
#   v5  v2 + remove_price_from_items 20240105000001 remove_column items.price (breaks
#                                                   v2's code while it still serves)
# Rails has no apps/modules: both "catalog" (items) and "orders" live in app/models.
#
# Database settings: the app has no config/database.yml and no config/master.key of its
# own; slipway's rails recipe links both from shared/. The database.yml needs only the
# environment the commands run in, e.g.
#     production:
#       url: postgres://shop:PASSWORD@127.0.0.1:5432/shop
# (or mysql2://USER:PASSWORD@127.0.0.1:3306/DB, sqlite3:db/production.sqlite3).
# master.key: nothing in the app reads credentials (there is no credentials.yml.enc),
# so any file, or none, does.
#
# Gems: the Gemfile names rails, pg, mysql2, sqlite3 without a Gemfile.lock, so the
# host resolves them against its own installed (Debian) gems. Build hook on a host:
#     bundle install --local --quiet
# (writes Gemfile.lock from the installed gems, downloads nothing; without it
# bin/rails resolves and writes the lock itself on first start).
#
# SLIPWAY_FRAMEWORK_CACHE (optional): a directory where the v1 skeleton is cached.
set -euo pipefail

if [ $# -ne 2 ]; then
    echo "usage: $0 DEST v1|v2|v3|v4|v5" >&2
    exit 2
fi
dest=$1
version=$2
case $version in
    v1 | v2 | v3 | v4 | v5) ;;
    *)
        echo "make-app.sh: unknown version '$version' (v1, v2, v3, v4 or v5)" >&2
        exit 2
        ;;
esac
if [ -e "$dest" ] && [ -n "$(ls -A "$dest")" ]; then
    echo "make-app.sh: $dest exists and is not empty" >&2
    exit 2
fi
if ! command -v rails >/dev/null 2>&1; then
    echo "make-app.sh: 'rails' not found; run scripts/install/rails.sh (apt-get install ruby-rails ruby-pg ruby-mysql2 ruby-sqlite3)" >&2
    exit 1
fi

# Rails generators run in development; keep the environment of the caller out.
unset RAILS_ENV RACK_ENV DATABASE_URL BUNDLE_GEMFILE
export BUNDLE_IGNORE_CONFIG=1 DISABLE_SPRING=1

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Writes the v1 skeleton into $1.
skeleton() {
    local app=$1
    (
        cd "$(dirname "$app")"
        rails new "$(basename "$app")" --minimal --skip-bundle --skip-git \
            --skip-webpack-install --skip-sprockets --skip-puma --skip-listen \
            --skip-test --database=postgresql --quiet >/dev/null
    )
    rm -f "$app/.ruby-version"
    cat >"$app/Gemfile" <<'EOF'
source 'https://rubygems.org'

# Resolved against the host's installed gems (Debian's ruby-rails, ruby-pg,
# ruby-mysql2, ruby-sqlite3): build with `bundle install --local`.
gem 'rails', '~> 6.1.7'
gem 'pg', '~> 1.1'
gem 'mysql2', '~> 0.5'
gem 'sqlite3', '~> 1.4'
EOF
    # rails new writes its own database.yml (PostgreSQL, local socket); the deploy
    # links the shared one. Generators below still need it to boot, so it goes last.
    gen "$app" 'model Item name:string'
    fix "$app" create_items 20240101000001
}

# gen APP 'GENERATOR ARGS...'...: runs each `bin/rails generate GENERATOR ARGS...` in
# APP, all in one Rails process (a start-up takes about a second).
gen() {
    local app=$1
    shift
    (
        cd "$app"
        GENERATE=$(printf '%s\n' "$@") bin/rails runner '
            Rails.application.load_generators
            ENV.fetch("GENERATE").each_line do |line|
              name, *args = line.split
              Rails::Generators.invoke(name, args, behavior: :invoke, destination_root: Rails.root)
            end' >/dev/null
    )
}

# fix APP NAME VERSION: gives the freshly generated db/migrate/*_NAME.rb a fixed
# timestamp.
fix() {
    local app=$1 name=$2 ts=$3 f
    f=$(ls "$app"/db/migrate/*_"$name".rb)
    mv "$f" "$app/db/migrate/${ts}_$name.rb"
}

app=$work/shop
cache=${SLIPWAY_FRAMEWORK_CACHE:-}
if [ -n "$cache" ] && [ -f "$cache/rails-v1/Gemfile" ]; then
    cp -a "$cache/rails-v1" "$app"
else
    skeleton "$app"
    if [ -n "$cache" ]; then
        mkdir -p "$cache"
        tmp=$(mktemp -d "$cache/rails-v1.XXXXXX")
        cp -a "$app/." "$tmp/"
        rm -rf "$cache/rails-v1"
        mv "$tmp" "$cache/rails-v1" 2>/dev/null || rm -rf "$tmp"
    fi
fi

cat >"$app/db/migrate/20240101000001_create_items.rb" <<'EOF'
class CreateItems < ActiveRecord::Migration[6.1]
  def change
    create_table :items do |t|
      t.string :name, null: false
    end
  end
end
EOF

if [ "$version" != v1 ]; then
    gen "$app" 'migration AddPriceToItems price:integer' 'model Order item:references qty:integer'
    fix "$app" add_price_to_items 20240102000001
    fix "$app" create_orders 20240102000002
    cat >"$app/db/migrate/20240102000001_add_price_to_items.rb" <<'EOF'
class AddPriceToItems < ActiveRecord::Migration[6.1]
  def change
    add_column :items, :price, :integer, null: false, default: 0
  end
end
EOF
    cat >"$app/db/migrate/20240102000002_create_orders.rb" <<'EOF'
class CreateOrders < ActiveRecord::Migration[6.1]
  def change
    create_table :orders do |t|
      t.references :item, null: false, foreign_key: true
      t.integer :qty, null: false, default: 1
    end
  end
end
EOF
    cat >"$app/app/models/item.rb" <<'EOF'
class Item < ApplicationRecord
  has_many :orders
end
EOF
fi

if [ "$version" = v3 ]; then
    gen "$app" 'model Note body:text' 'migration BrokenMigration'
    fix "$app" create_notes 20240103000001
    fix "$app" broken_migration 20240103000002
    cat >"$app/db/migrate/20240103000001_create_notes.rb" <<'EOF'
class CreateNotes < ActiveRecord::Migration[6.1]
  def change
    create_table :notes do |t|
      t.text :body
    end
  end
end
EOF
    cat >"$app/db/migrate/20240103000002_broken_migration.rb" <<'EOF'
# Fails midway: the first statement succeeds, the second is a database error.
class BrokenMigration < ActiveRecord::Migration[6.1]
  def up
    create_table :broken_part do |t|
      t.string :name
    end
    execute "INSERT INTO missing_table (id) VALUES (1)"
  end

  def down
    drop_table :broken_part
  end
end
EOF
fi

if [ "$version" = v4 ]; then
    gen "$app" 'migration AddLegacyToItems'
    fix "$app" add_legacy_to_items 20240104000001
    cat >"$app/db/migrate/20240104000001_add_legacy_to_items.rb" <<'EOF'
# Irreversible: raw SQL up, and a down that refuses.
class AddLegacyToItems < ActiveRecord::Migration[6.1]
  def up
    execute "ALTER TABLE items ADD COLUMN legacy text"
  end

  def down
    raise ActiveRecord::IrreversibleMigration
  end
end
EOF
fi

if [ "$version" = v5 ]; then
    gen "$app" 'migration RemovePriceFromItems price:integer'
    fix "$app" remove_price_from_items 20240105000001
    cat >"$app/db/migrate/20240105000001_remove_price_from_items.rb" <<'EOF'
class RemovePriceFromItems < ActiveRecord::Migration[6.1]
  def change
    remove_column :items, :price, :integer, null: false, default: 0
  end
end
EOF
fi

# Shared on the hosts (slipway's rails recipe); resolved per host.
rm -f "$app/config/database.yml" "$app/config/master.key" "$app/config/credentials.yml.enc" \
    "$app/Gemfile.lock"
rm -rf "$app/tmp" "$app/log"
mkdir -p "$app/tmp" "$app/log"

mkdir -p "$dest"
cp -a "$app/." "$dest/"
