# slipway's Rails adapter (see CONTRACT.md), for Rails 6.1 APIs. Run in a release
# directory as
#   RAILS_ENV="${RAILS_ENV:-production}" bin/rails runner "$PROGRAM"
# with SLIPWAY_OP = inspect | migrate | unapply (and SLIPWAY_MIGRATIONS for unapply).
# Database settings: the app's own config/database.yml (ActiveRecord::Base, the
# primary database of RAILS_ENV). Ids are migration versions (the file name's
# timestamp, e.g. 20240102000001), which is all schema_migrations stores.
# Applied order: schema_migrations stores no order (nor time), so the applied ones
# are listed in ascending version order, the order Rails' own migrate applies them.
# Rails' migration messages go to stderr; stdout carries only slipway: lines.
module SlipwayRails
  OUT = STDOUT
  SECRETS = []

  class Refusal < StandardError; end

  module_function

  def out(line)
    OUT.write("slipway:#{line}\n")
    OUT.flush
  end

  def scrub(text)
    text = text.to_s.dup
    SECRETS.each { |s| text = text.gsub(s, "***") }
    text = text.gsub(%r{(\w[\w+.-]*://[^/\s:@]*:)[^@\s]*@}, '\1***@')
    # {:password=>"..."}, password: "...", password=... (conninfo); not "password: YES".
    text = text.gsub(/(:?password"?\s*(?:=>|:)\s*)"(?:[^"\\]|\\.)*"/i, '\1"***"')
    text.gsub(/(\bpassword=)(?!>)('[^']*'|[^\s'"]+)/i, '\1***')
  end

  # The database's error on one line: the innermost cause (PG::Error, Mysql2::Error,
  # SQLite3::Exception, or the Ruby error the migration raised), no backtrace, no caret
  # lines, no password.
  def one_line(exc)
    root = exc
    root = root.cause while root.cause && !root.cause.equal?(root)
    lines = root.message.to_s.lines.map(&:strip).reject { |l| l.delete("^").strip.empty? }
    text = lines.join(" ").split.join(" ")
    text = root.class.name if text.empty?
    text = "#{root.class.name}: #{text}" unless text.start_with?(root.class.name.to_s)
    text = text[0, 2000] + " ..." if text.length > 2000
    scrub(text)
  end

  def collect_secrets
    require "erb"
    require "cgi"
    cfg = ActiveRecord::Base.connection_db_config.configuration_hash
    password = cfg[:password].to_s
    unless password.empty?
      SECRETS.concat([password, ERB::Util.url_encode(password), CGI.escape(password)].uniq)
    end
    url = cfg[:url].to_s
    if (m = url.match(%r{://[^/@]*:([^@/]*)@}))
      SECRETS << m[1] unless m[1].empty?
      SECRETS << CGI.unescape(m[1]) unless m[1].empty?
    end
    SECRETS.sort_by! { |s| -s.length }
  rescue StandardError
    nil
  end

  def connection
    ActiveRecord::Base.connection
  end

  def context
    connection.migration_context
  end

  def applied_versions
    # Ascending version: see the header.
    context.get_all_versions.sort
  end

  def finish(code)
    begin
      ActiveRecord::Base.connection_pool.with_connection do
        applied_versions.each { |v| out("applied #{v}") }
      end
    rescue StandardError => e
      out("error cannot read applied migrations: #{one_line(e)}")
      code = 2 if code.zero?
    end
    out("done") if code.zero?
    exit(code)
  end

  def supports_ddl_transactions?
    connection.supports_ddl_transactions?
  rescue StandardError
    %w[postgresql postgis sqlite3].include?(ActiveRecord::Base.connection_db_config.adapter.to_s)
  end

  def owned_by_app?(method)
    !method.owner.name.to_s.start_with?("ActiveRecord::")
  end

  # Whether the source of `method` mentions IrreversibleMigration (a down step that
  # refuses). Read from the file, never run.
  def mentions_irreversible?(method)
    file, line = method.source_location
    return false unless file && File.readable?(file)
    lines = File.readlines(file)
    first = line - 1
    last = lines.length - 1
    begin
      node = RubyVM::AbstractSyntaxTree.of(method)
      first = node.first_lineno - 1
      last = node.last_lineno - 1
    rescue StandardError
      nil # the rest of the file from the definition on
    end
    lines[first..last].to_a.join.include?("IrreversibleMigration")
  end

  # Rails reverts a `change` migration by recording its commands with a
  # CommandRecorder in revert mode; an operation with no inverse raises
  # IrreversibleMigration right there. That recording is done here without running
  # anything: the commands are only recorded, then the `reversible`/`execute_block`
  # blocks the revert would run are called with the recorder as the connection (so
  # their schema changes are recorded too, and a `raise IrreversibleMigration` in a
  # `dir.down` shows). Whatever the migration does outside the migration's connection
  # (models, ActiveRecord::Base.connection) runs inside a transaction that is rolled
  # back. Only IrreversibleMigration makes it irreversible; another error in the dry
  # run is left to the real revert.
  def change_reversible?(migration)
    reversible = true
    delegate = dry_run_delegate
    dry_run = lambda do
      recorder = ActiveRecord::Migration::CommandRecorder.new(delegate)
      migration.instance_variable_set(:@connection, recorder)
      migration.suppress_messages do
        recorder.revert { migration.change }
        recorder.commands.each do |command, _args, block|
          block.call if command == :execute_block && block
        end
      end
    rescue ActiveRecord::IrreversibleMigration
      reversible = false
    rescue StandardError => e
      # Not Rails saying "irreversible" (e.g. a model the migration uses has no table
      # yet): the real revert decides, and reports its own failure.
      warn "slipway: dry run of reverting #{migration.version} #{migration.name}: #{one_line(e)}"
    ensure
      migration.instance_variable_set(:@connection, nil)
    end
    rolled_back(delegate, &dry_run)
    reversible
  end

  # Runs the block inside a transaction that is rolled back (with a connection), so
  # that what a dry run does outside the recorder leaves nothing behind.
  def rolled_back(delegate)
    return yield unless delegate

    ActiveRecord::Base.transaction(requires_new: true) do
      yield
      raise ActiveRecord::Rollback
    end
  end

  # The real connection (the recorder asks it for table definitions), or nil when the
  # database cannot be reached.
  def dry_run_delegate
    return @delegate if defined?(@delegate)
    @delegate = begin
      connection
    rescue StandardError
      nil
    end
  end

  # What a migration does that breaks code written for the schema before it (see
  # CONTRACT.md): its commands recorded forward (`change`, or `up`) by a
  # CommandRecorder, as change_reversible? records them in revert mode: nothing runs,
  # the `reversible`/`execute_block` blocks are called with the recorder as the
  # connection, anything else inside a transaction that is rolled back. `execute`d
  # SQL is read for DROP/RENAME. [[kind, target, new name or nil]]
  def destructive(migration)
    found = []
    delegate = dry_run_delegate
    dry_run = lambda do
      recorder = ActiveRecord::Migration::CommandRecorder.new(delegate)
      migration.instance_variable_set(:@connection, recorder)
      migration.suppress_messages do
        migration.respond_to?(:change) ? migration.change : migration.up
        index = 0
        while index < recorder.commands.length
          command, _args, block = recorder.commands[index]
          block.call if command == :execute_block && block
          index += 1
        end
      end
      recorder.commands.each { |command, args, _| found.concat(destructive_command(command, args)) }
    rescue StandardError => e
      warn "slipway: dry run of #{migration.version} #{migration.name}: #{one_line(e)}"
    ensure
      migration.instance_variable_set(:@connection, nil)
    end
    rolled_back(delegate, &dry_run)
    found
  end

  def destructive_command(command, args)
    args = args.dup
    options = args.last.is_a?(Hash) ? args.pop : {}
    table = args[0].to_s
    case command
    when :remove_column then [["drop_column", "#{table}.#{args[1]}", nil]]
    when :remove_columns then args[1..].map { |c| ["drop_column", "#{table}.#{c}", nil] }
    when :remove_timestamps then %w[created_at updated_at].map { |c| ["drop_column", "#{table}.#{c}", nil] }
    when :remove_reference, :remove_belongs_to
      cols = ["#{args[1]}_id"]
      cols << "#{args[1]}_type" if options[:polymorphic]
      cols.map { |c| ["drop_column", "#{table}.#{c}", nil] }
    when :drop_table then args.map { |t| ["drop_table", t.to_s, nil] }
    when :drop_join_table
      name = options[:table_name] || [args[0].to_s, args[1].to_s].sort.join("_")
      [["drop_table", name.to_s, nil]]
    when :rename_table then [["rename_table", table, args[1].to_s]]
    when :rename_column then [["rename_column", "#{table}.#{args[1]}", args[2].to_s]]
    when :change_column then [["change_type", "#{table}.#{args[1]}", nil]]
    when :change_column_null
      args[2] == false && args[3].nil? ? [["set_not_null", "#{table}.#{args[1]}", nil]] : []
    when :execute then destructive_sql(args[0].to_s)
    else []
    end
  end

  NAME = /[`"\[]?([\w$]+)[`"\]]?/.source
  QNAME = "(#{NAME}(?:\\.#{NAME})?)"

  def unquote(name)
    name.to_s.delete('`"[]')
  end

  # DROP TABLE, ALTER TABLE ... DROP COLUMN / RENAME [COLUMN] ... TO / RENAME TO.
  def destructive_sql(sql)
    found = []
    sql.split(";").each do |statement|
      st = statement.strip
      if (m = st.match(/\Adrop\s+table\s+(?:if\s+exists\s+)?#{QNAME}/i))
        found << ["drop_table", unquote(m[1]), nil]
      elsif (m = st.match(/\Aalter\s+table\s+(?:if\s+exists\s+)?(?:only\s+)?#{QNAME}\s+(.*)\z/im))
        table = unquote(m[1])
        rest = m[m.size - 1]
        rest.scan(/\bdrop\s+(?:column\s+)?(?:if\s+exists\s+)?#{NAME}/i) do |(col)|
          found << ["drop_column", "#{table}.#{col}", nil] unless %w[constraint index key foreign primary check default not].include?(col.downcase)
        end
        rest.scan(/\brename\s+(?:column\s+)?#{NAME}\s+to\s+#{NAME}/i) do |from, to|
          found << ["rename_column", "#{table}.#{from}", to]
        end
        if (r = rest.match(/\Arename\s+to\s+#{QNAME}/i))
          found << ["rename_table", table, unquote(r[1])]
        end
      end
    end
    found
  end

  # The `destructive=` field of a known line, or "". A name the field cannot carry
  # (whitespace, `,:>=`) is left out rather than break the line.
  def destructive_field(found)
    ok = /\A[^\s,:>=]{1,255}\z/
    items = found.select { |_, target, to| target.match?(ok) && (to.nil? || to.match?(ok)) }
                 .map { |kind, target, to| to ? "#{kind}:#{target}>#{to}" : "#{kind}:#{target}" }
                 .uniq
    items.empty? ? "" : " destructive=#{items.join(',')}"
  end

  def reversible?(migration)
    if migration.respond_to?(:change)
      change_reversible?(migration)
    elsif owned_by_app?(migration.method(:down))
      !mentions_irreversible?(migration.method(:down))
    elsif migration.class.respond_to?(:down)
      # Old style: class methods self.up/self.down.
      !mentions_irreversible?(migration.class.method(:down))
    else
      false # up without down: Rails would "revert" it by doing nothing
    end
  end

  def load_migration(proxy)
    proxy.send(:migration)
  end

  # This release's migrations, read from its files (no database needed).
  def known
    paths = ActiveRecord::Base.connection_db_config.migrations_paths ||
            ActiveRecord::Migrator.migrations_paths
    ActiveRecord::MigrationContext.new(paths, ActiveRecord::SchemaMigration)
                                  .migrations.sort_by(&:version)
  end

  def op_inspect
    proxies = begin
      known
    rescue StandardError => e
      out("error cannot load migrations: #{one_line(e)}")
      finish(2)
    end
    ddl = supports_ddl_transactions?
    proxies.each do |proxy|
      migration = load_migration(proxy)
      rev = reversible?(migration) ? "reversible" : "irreversible"
      atomic = ddl && !migration.disable_ddl_transaction ? "atomic" : "nonatomic"
      out("known #{proxy.version} #{rev} #{atomic}#{destructive_field(destructive(migration))}")
    end
    finish(0)
  end

  # Notes the migration Rails is running, so a failure names it.
  module Tracker
    def migrate(direction)
      SlipwayRails.current = version
      super
    end
  end

  class << self
    attr_accessor :current
  end

  def before_change_error?(exc)
    [ActiveRecord::ConcurrentMigrationError, ActiveRecord::DuplicateMigrationVersionError,
     ActiveRecord::DuplicateMigrationNameError, ActiveRecord::UnknownMigrationVersionError,
     ActiveRecord::IllegalMigrationNameError].any? { |k| exc.is_a?(k) }
  end

  def op_migrate
    ActiveRecord::Migration.prepend(Tracker)
    self.current = nil
    begin
      # What `bin/rails db:migrate` does for the primary database (the schema dump
      # it may add afterwards is off in production and changes no database).
      context.migrate
    rescue StandardError => e
      if current
        out("failed #{current} #{one_line(e)}")
        finish(1)
      end
      out("error migrate: #{one_line(e)}")
      finish(before_change_error?(e) ? 3 : 2)
    end
    finish(0)
  end

  def op_unapply
    ids = ENV.fetch("SLIPWAY_MIGRATIONS", "").lines.map(&:strip).reject(&:empty?)
    proxies = known
    by_version = proxies.to_h { |p| [p.version.to_s, p] }
    applied = applied_versions.map(&:to_s)
    raise Refusal, "a migration is listed twice" if ids.uniq.length != ids.length
    ids.each do |id|
      proxy = by_version[id]
      raise Refusal, "#{id} is not a migration of this release's code" unless proxy
      raise Refusal, "#{id} is not applied" unless applied.include?(id)
      unless reversible?(load_migration(proxy))
        raise Refusal, "#{id} (#{proxy.name}) is irreversible"
      end
    end
    ActiveRecord::Migration.prepend(Tracker)
    ids.each_with_index do |id, index|
      # Rails' `db:migrate:down VERSION=id`: reverts exactly that version, nothing else.
      unless applied_versions.map(&:to_s).include?(id)
        out("error before unapplying #{id}: it is no longer applied")
        finish(index.zero? ? 3 : 2)
      end
      begin
        context.run(:down, id.to_i)
      rescue StandardError => e
        out("failed #{id} #{one_line(e)}")
        finish(1)
      end
    end
    finish(0)
  rescue Refusal => e
    out("error #{e.message}")
    finish(3)
  end

  def main
    $stdout = $stderr # Rails' "== 2024... migrating" lines
    collect_secrets
    case ENV["SLIPWAY_OP"]
    when "inspect" then op_inspect
    when "migrate" then op_migrate
    when "unapply" then op_unapply
    else
      out("error SLIPWAY_OP must be inspect, migrate or unapply, not #{ENV['SLIPWAY_OP'].inspect}")
      finish(3)
    end
  end
end

begin
  SlipwayRails.main
rescue SystemExit
  raise
rescue Exception => e # rubocop:disable Lint/RescueException
  SlipwayRails.out("error #{SlipwayRails.one_line(e)}")
  exit 2
end
