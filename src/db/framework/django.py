# slipway's Django adapter (see CONTRACT.md). Run in a release directory as
#   $RUNTIME manage.py shell -c "$PROGRAM"
# with SLIPWAY_OP = inspect | migrate | unapply (and SLIPWAY_MIGRATIONS for unapply).
# Database settings come from the app's own settings (DATABASES['default']).
# Ids are APP.NAME, e.g. catalog.0002_item_price.
# Applied order: django_migrations ordered by its `applied` time, then by id.
import os
import sys


_slipway_secrets = []


def _slipway_main():
    from django.conf import settings
    from django.core.management import call_command
    from django.core.management.commands.migrate import Command as MigrateCommand
    from django.db import DEFAULT_DB_ALIAS, connections
    from django.db.migrations.executor import MigrationExecutor
    from django.db.migrations.recorder import MigrationRecorder

    connection = connections[DEFAULT_DB_ALIAS]
    secrets = _slipway_secrets
    for db in settings.DATABASES.values():
        password = str(db.get("PASSWORD") or "")
        if password:
            from urllib.parse import quote
            secrets += [password, quote(password, safe="")]

    def out(line):
        sys.stdout.write("slipway:" + line + "\n")
        sys.stdout.flush()

    def one_line(exc):
        # The database's message on one line: no caret lines, no password.
        text = str(exc)
        lines = [l.strip() for l in text.splitlines() if l.strip().strip("^").strip()]
        text = " ".join(" ".join(lines).split()) or repr(exc)
        for secret in secrets:
            text = text.replace(secret, "***")
        return "%s: %s" % (type(exc).__name__, text)

    def mid(key):
        return "%s.%s" % key

    def finish(code):
        # Every op ends with the applied migrations as the database has them now.
        try:
            recorder = MigrationRecorder(connection)
            rows = []
            if recorder.has_table():
                rows = list(
                    recorder.migration_qs.order_by("applied", "id").values_list("app", "name")
                )
        except Exception as exc:
            out("error cannot read applied migrations: " + one_line(exc))
            if code == 0:
                code = 2
        else:
            for app, name in rows:
                out("applied %s.%s" % (app, name))
        if code == 0:
            out("done")
        sys.stdout.flush()
        sys.exit(code)

    class TrackingMigrate(MigrateCommand):
        # Django's own migrate command, remembering the migration in progress.
        current = None

        def migration_progress_callback(self, action, migration=None, fake=False):
            if action in ("apply_start", "unapply_start"):
                TrackingMigrate.current = migration
            elif action in ("apply_success", "unapply_success"):
                TrackingMigrate.current = None
            super().migration_progress_callback(action, migration, fake)

    def run_migrate(*args):
        # -> None on success, else exit code after printing failed/error.
        TrackingMigrate.current = None
        try:
            call_command(
                TrackingMigrate(stdout=sys.stderr, stderr=sys.stderr),
                *args,
                interactive=False,
                verbosity=1,
                stdout=sys.stderr,
            )
        except Exception as exc:
            # Ends Django's "  Applying X..." line, for readers that merge the streams.
            sys.stderr.write("\n")
            sys.stderr.flush()
            failed = TrackingMigrate.current
            if failed is not None:
                out("failed %s.%s %s" % (failed.app_label, failed.name, one_line(exc)))
                return 1
            out("error migrate: " + one_line(exc))
            return 2
        return None

    def executor_or_exit():
        try:
            return MigrationExecutor(connection)
        except Exception as exc:
            out("error cannot load migrations: " + one_line(exc))
            finish(2)

    op = os.environ.get("SLIPWAY_OP", "")
    if op not in ("inspect", "migrate", "unapply"):
        out("error SLIPWAY_OP must be inspect, migrate or unapply, not %r" % op)
        finish(3)

    if op == "inspect":
        try:
            executor = MigrationExecutor(connection)
        except Exception as exc:
            # The database cannot be read: the code's migrations still can.
            print("django adapter: database not readable (%s)" % one_line(exc), file=sys.stderr)
            try:
                executor = MigrationExecutor(None)
            except Exception as exc2:
                out("error cannot load migrations: " + one_line(exc2))
                finish(2)
        loader = executor.loader
        can_rollback_ddl = connection.features.can_rollback_ddl
        from django.db.migrations.state import ProjectState

        # The models as each migration finds them (what `migrate` itself builds): the
        # tables and columns its operations touch are read from it.
        state = ProjectState(real_apps=loader.unmigrated_apps)
        for migration, _ in executor.migration_plan(loader.graph.leaf_nodes(), clean_start=True):
            reversible = all(operation.reversible for operation in migration.operations)
            atomic = migration.atomic and can_rollback_ddl
            found = []
            if state is not None:
                try:
                    for operation in migration.operations:
                        found += _slipway_destructive(migration.app_label, operation, state, connection)
                        operation.state_forwards(migration.app_label, state)
                except Exception as exc:
                    print(
                        "django adapter: cannot follow the models through %s.%s (%s): "
                        "no destructive operations reported from there on"
                        % (migration.app_label, migration.name, one_line(exc)),
                        file=sys.stderr,
                    )
                    state = None
            out(
                "known %s.%s %s %s%s"
                % (
                    migration.app_label,
                    migration.name,
                    "reversible" if reversible else "irreversible",
                    "atomic" if atomic else "nonatomic",
                    _slipway_field(found),
                )
            )
        finish(0)

    if op == "migrate":
        code = run_migrate()
        finish(code or 0)

    # unapply: check everything first, change nothing on a refusal.
    ids = [l.strip() for l in os.environ.get("SLIPWAY_MIGRATIONS", "").splitlines() if l.strip()]
    executor = executor_or_exit()
    loader = executor.loader
    graph = loader.graph
    applied = dict(loader.applied_migrations)
    steps = []  # (key, target name or "zero")

    def refuse(message):
        out("error " + message)
        finish(3)

    if len(set(ids)) != len(ids):
        refuse("a migration is listed twice")
    for ident in ids:
        app, _, name = ident.partition(".")
        key = (app, name)
        if not app or not name:
            refuse("%s is not an APP.NAME migration id" % ident)
        if key not in graph.nodes:
            refuse("%s is not a migration of this release's code" % ident)
        if key not in applied:
            refuse("%s is not applied" % ident)
        migration = graph.nodes[key]
        for operation in migration.operations:
            if not operation.reversible:
                refuse(
                    "%s is irreversible (%s has no reverse step)"
                    % (ident, operation.describe())
                )
        parents = sorted(p for p in graph.node_map[key].parents if p[0] == app)
        target = parents[-1][1] if parents else "zero"
        if target != "zero":
            # `migrate APP NAME` takes a name prefix: it must name one migration.
            same_prefix = [k for k in graph.nodes if k[0] == app and k[1].startswith(target)]
            if len(same_prefix) != 1:
                refuse("migrate %s %s would be ambiguous" % (app, target))
        steps.append((key, target))

    # Simulate each step against the applied state the previous steps leave: Django's
    # plan for `migrate APP PREV` must unapply exactly that one migration.
    for key, target in steps:
        loader.applied_migrations = applied
        plan = executor.migration_plan([(key[0], None if target == "zero" else target)])
        touched = [mid((m.app_label, m.name)) for m, _ in plan]
        if any(not backwards for _, backwards in plan):
            refuse(
                "migrate %s %s would apply %s"
                % (key[0], target, " ".join(mid((m.app_label, m.name)) for m, b in plan if not b))
            )
        if touched != [mid(key)]:
            others = [t for t in touched if t != mid(key)]
            refuse(
                "unapplying %s (migrate %s %s) would %s"
                % (
                    mid(key),
                    key[0],
                    target,
                    "also unapply " + " ".join(others) if others else "unapply nothing",
                )
            )
        applied = dict(applied)
        applied.pop(key)

    # Run: before each step, check the plan again against the database, then
    # run Django's migrate APP PREV.
    for index, (key, target) in enumerate(steps):
        check = MigrationExecutor(connection)
        plan = check.migration_plan([(key[0], None if target == "zero" else target)])
        if [(mid((m.app_label, m.name)), b) for m, b in plan] != [(mid(key), True)]:
            out(
                "error before unapplying %s: the database changed, migrate %s %s would touch %s"
                % (mid(key), key[0], target, " ".join(mid((m.app_label, m.name)) for m, _ in plan))
            )
            finish(3 if index == 0 else 2)
        code = run_migrate(key[0], target)
        if code is not None:
            finish(code)
    finish(0)


def _slipway_field(found):
    """The `destructive=` field of a known line (CONTRACT.md), or ''. A name the field
    cannot carry (whitespace, `,:>=`) is left out rather than break the line."""
    import re

    ok = re.compile(r"^[^\s,:>=]{1,255}$")
    items = []
    for kind, target, to in found:
        if not ok.match(target) or (to is not None and not ok.match(to)):
            continue
        item = "%s:%s%s" % (kind, target, "" if to is None else ">" + to)
        if item not in items:
            items.append(item)
    return " destructive=" + ",".join(items) if items else ""


def _slipway_destructive(app_label, operation, state, connection):
    """What `operation` (of a migration of `app_label`, against the models `state` has
    before it) does that breaks code written for the models before it: drops or
    renames a table or column, changes a column's type (not only its length), makes
    one NOT NULL without a default. [(kind, target, new name or None)]. RunSQL/RunPython are not read."""
    from django.db.migrations import operations as ops
    from django.db.models import NOT_PROVIDED

    def model(name):
        return state.models.get((app_label, name.lower()))

    def managed(ms):
        return ms is not None and ms.options.get("managed", True) and not ms.options.get("proxy")

    def table(ms):
        return ms.options.get("db_table") or "%s_%s" % (app_label, ms.name_lower)

    def column(field, name):
        f = field.clone()
        f.set_attributes_from_name(name)
        return f

    if isinstance(operation, ops.DeleteModel):
        ms = model(operation.name)
        return [("drop_table", table(ms), None)] if managed(ms) else []
    if isinstance(operation, ops.RenameModel):
        ms = model(operation.old_name)
        if not managed(ms) or ms.options.get("db_table"):
            return []  # an explicit db_table stays
        return [("rename_table", table(ms), "%s_%s" % (app_label, operation.new_name.lower()))]
    if isinstance(operation, ops.AlterModelTable):
        ms = model(operation.name)
        if not managed(ms):
            return []
        new = operation.table or "%s_%s" % (app_label, ms.name_lower)
        return [("rename_table", table(ms), new)] if new != table(ms) else []
    if isinstance(operation, (ops.RemoveField, ops.RenameField, ops.AlterField)):
        ms = model(operation.model_name)
        if not managed(ms):
            return []
        name = operation.old_name if isinstance(operation, ops.RenameField) else operation.name
        old_field = ms.fields.get(name)
        if old_field is None:
            return []
        old = column(old_field, name)
        if old.column is None:
            return []  # many-to-many: no column
        at = "%s.%s" % (table(ms), old.column)
        if isinstance(operation, ops.RemoveField):
            return [("drop_column", at, None)]
        if isinstance(operation, ops.RenameField):
            new = column(old_field, operation.new_name)
            return [("rename_column", at, new.column)] if new.column != old.column else []
        new = column(operation.field, name)
        found = []
        if new.column != old.column:
            found.append(("rename_column", at, new.column))
        try:
            old_type, new_type = old.db_type(connection), new.db_type(connection)
        except Exception:
            old_type = new_type = None  # e.g. a foreign key to a model not loaded
        # A type of its own, not a length or precision (widening a varchar is harmless).
        if old_type and new_type and old_type.split("(")[0] != new_type.split("(")[0]:
            found.append(("change_type", at, None))
        default = new.has_default() or getattr(new, "db_default", NOT_PROVIDED) is not NOT_PROVIDED
        if old.null and not new.null and not default:
            found.append(("set_not_null", at, None))
        return found
    return []


try:
    _slipway_main()
except SystemExit:
    raise
except BaseException as _exc:
    _text = " ".join(("%s: %s" % (type(_exc).__name__, _exc)).split())
    for _secret in _slipway_secrets:
        _text = _text.replace(_secret, "***")
    sys.stdout.write("slipway:error %s\n" % _text)
    sys.stdout.flush()
    sys.exit(2)
