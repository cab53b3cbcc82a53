# slipway's adapter for Alembic (see CONTRACT.md). Run as `$RUNTIME -c "$PROGRAM"`
# in a release directory; it reads alembic.ini there (ALEMBIC_CONFIG overrides the
# file name) and runs the app's own env.py, which connects the way the app does.
#
# Ids are Alembic revision ids.
# - applied: Alembic stores no applied order, only the current heads (the rows
#   of alembic_version). The applied revisions are the heads and all their
#   ancestors (down revisions and depends_on), printed in a stable topological
#   order, base first: the reverse of Alembic's own walk from the heads down.
# - known: every revision of the script directory, base first (reverse of
#   ScriptDirectory.walk_revisions), an order Alembic's upgrade would follow.
# - reversible: the module's downgrade() does something. It is irreversible when
#   there is no downgrade(), or its body (docstring aside) is only `pass` / `...`
#   / `return`, or starts with `raise` (e.g. NotImplementedError).
# - atomic: the dialect has transactional DDL as configured by env.py
#   (MigrationContext.impl.transactional_ddl; PostgreSQL and SQLite yes, MySQL
#   no) and the module's source does not use autocommit_block().
# - destructive: read from the source of the module's upgrade() with the ast module
#   (nothing runs): op.drop_table, op.drop_column, op.rename_table,
#   op.alter_column(new_column_name= / type_= / nullable=False without server_default),
#   the same on `with op.batch_alter_table(T) as b:`, and DROP/RENAME in op.execute("...")
#   string literals. Names that are not string literals are not followed.
# migrate is `alembic upgrade heads` (the same steps, run through env.py):
# without transaction_per_migration, one transaction for all pending revisions
# on PostgreSQL, so a failure leaves none of them applied.
# unapply runs one downgrade step per listed id (MigrationStep.downgrade_from_script,
# what `alembic downgrade` runs per revision), all in env.py's transaction. It
# refuses, before changing anything, an id that is not a head at its turn
# (unapplying it would need its applied descendants unapplied too), a merge
# point, and a revision another applied revision depends on.
import ast
import inspect
import os
import re
import sys
import textwrap


def out(line):
    sys.stdout.write("slipway:" + line + "\n")
    sys.stdout.flush()


SECRETS = []


def scrub(text):
    text = " ".join(str(text).split())
    for s in SECRETS:
        if s:
            text = text.replace(s, "***")
    return re.sub(r"([a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s]*@", r"\1***@", text, flags=re.I)


def error_text(exc):
    orig = getattr(exc, "orig", None)  # the DBAPI error inside SQLAlchemy's wrapper
    if orig is not None:
        text = str(orig).strip().splitlines()
        text = text[0] if text else type(orig).__name__
    else:
        text = str(exc).strip().splitlines()
        text = text[0] if text else type(exc).__name__
    return scrub(text)


class Refusal(Exception):
    pass


def main():
    op = os.environ.get("SLIPWAY_OP", "")
    if op not in ("inspect", "migrate", "unapply"):
        out("error SLIPWAY_OP must be inspect, migrate or unapply, not %r" % op)
        return 3
    try:
        from alembic.config import Config
        from alembic.runtime.environment import EnvironmentContext
        from alembic.runtime.migration import MigrationStep
        from alembic.script import ScriptDirectory
    except ImportError as e:
        out("error cannot import alembic with %s: %s" % (sys.executable, e))
        return 2

    ini = os.environ.get("ALEMBIC_CONFIG", "alembic.ini")
    if not os.path.exists(ini):
        out("error no %s in %s" % (ini, os.getcwd()))
        return 2
    cfg = Config(ini)
    try:
        script = ScriptDirectory.from_config(cfg)
        # Base first: walk_revisions goes from the heads down.
        known = [s for s in reversed(list(script.walk_revisions("base", "heads")))]
    except Exception as e:
        out("error cannot list the revisions: %s" % scrub(e))
        return 2
    by_id = {s.revision: s for s in known}

    def collect_secrets():
        url = cfg.get_main_option("sqlalchemy.url")
        if url:
            SECRETS.append(url)
            try:
                from sqlalchemy.engine import make_url

                password = make_url(url).password
                if password:
                    SECRETS.append(str(password))
            except Exception:
                pass

    def applied_order(heads):
        if not heads:
            return []
        unknown = [r for r in heads if r not in by_id]
        if unknown:
            # Only the heads are stored: their ancestors are in the code that has them.
            raise Refusal(
                "alembic_version holds %s, unknown to this release (alembic stores only the heads)"
                % " ".join(unknown)
            )
        down = list(script.revision_map.iterate_revisions(tuple(heads), "base"))
        return [s.revision for s in reversed(down)]

    def run_env(fn, dont_mutate):
        with EnvironmentContext(cfg, script, fn=fn, dont_mutate=dont_mutate):
            try:
                script.run_env()
            finally:
                collect_secrets()

    state = {"heads": None, "ddl": None, "current": None, "before": None}

    def read_heads(rev, context):
        state["heads"] = tuple(context.get_current_heads())
        state["ddl"] = bool(context.impl.transactional_ddl)
        return []

    def print_applied():
        """Reads the heads again (own connection, changes nothing) and prints them."""
        state["heads"] = None
        try:
            run_env(read_heads, True)
            order = applied_order(state["heads"])
        except Exception as e:
            out("error cannot read applied migrations: %s" % error_text(e))
            return False
        for rid in order:
            out("applied " + rid)
        return True

    def print_known(transactional_ddl):
        for s in known:
            rev = "reversible" if downgrade_does_something(s.module) else "irreversible"
            try:
                source = inspect.getsource(s.module)
            except (OSError, TypeError):
                source = ""
            atomic = transactional_ddl and "autocommit_block" not in source
            out("known %s %s %s%s" % (s.revision, rev, "atomic" if atomic else "nonatomic", destructive_field(s.module)))

    ids = [line.strip() for line in os.environ.get("SLIPWAY_MIGRATIONS", "").splitlines() if line.strip()]

    def check_unapply(heads):
        if not ids:
            raise Refusal("SLIPWAY_MIGRATIONS lists no migration to unapply")
        if len(set(ids)) != len(ids):
            raise Refusal("a migration is listed twice")
        applied = set(applied_order(heads))
        for rid in ids:
            s = by_id.get(rid)
            if s is None:
                raise Refusal("%s is not a migration of this release" % rid)
            if rid not in applied:
                raise Refusal("%s is not applied" % rid)
            if not downgrade_does_something(s.module):
                raise Refusal("%s is irreversible" % rid)
        # Simulate each step: the id must be needed by no other applied revision.
        for rid in ids:
            s = by_id[rid]
            if len(s._all_down_revisions) > 1 or s.dependencies:
                raise Refusal("%s is a merge point or has depends_on; alembic cannot unapply it alone" % rid)
            for other in applied:
                if other != rid and rid in by_id[other]._all_down_revisions:
                    raise Refusal(
                        "%s is needed by applied %s, which is not unapplied before it" % (rid, other)
                    )
            applied.discard(rid)

    def plan(rev, context):
        heads = tuple(context.get_current_heads())
        state["before"] = heads
        state["ddl"] = bool(context.impl.transactional_ddl)
        print_known(state["ddl"])
        if op == "inspect":
            state["heads"] = heads
            return []
        if op == "migrate":
            unknown = [r for r in heads if r not in by_id]
            if unknown:
                raise Refusal("applied revisions unknown to this release: " + " ".join(unknown))
            steps = script._upgrade_revs("heads", heads)
        else:
            unknown = [r for r in heads if r not in by_id]
            if unknown:
                raise Refusal("applied revisions unknown to this release: " + " ".join(unknown))
            check_unapply(heads)
            steps = [MigrationStep.downgrade_from_script(script.revision_map, by_id[rid]) for rid in ids]
        return run_steps(steps)

    def run_steps(steps):
        # A generator: Alembic asks for the next step only after the previous one
        # is done, so "current" names the step that is running when one fails.
        for step in steps:
            state["current"] = step.revision.revision
            yield step
        state["current"] = None

    try:
        run_env(plan, op == "inspect")
    except Refusal as e:
        out("error " + scrub(e))
        print_applied()
        return 3
    except Exception as e:
        if state["current"] is not None:
            out("failed %s %s" % (state["current"], error_text(e)))
            print_applied()
            return 1
        if state["before"] is None:
            out("error cannot read applied migrations: %s" % error_text(e))
            return 2
        out("error %s: %s" % (op, error_text(e)))
        print_applied()
        return 2

    if op == "inspect":
        try:
            order = applied_order(state["heads"])
        except Refusal as e:
            out("error cannot read applied migrations: %s" % scrub(e))
            return 2
        for rid in order:
            out("applied " + rid)
        out("done")
        return 0
    if not print_applied():
        return 2
    out("done")
    return 0


def downgrade_does_something(module):
    fn = getattr(module, "downgrade", None)
    if not callable(fn):
        return False
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    except (OSError, TypeError, SyntaxError):
        return True  # cannot read it: assume it does what it says
    func = tree.body[0]
    if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return True
    body = list(func.body)
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) and isinstance(
        body[0].value.value, str
    ):
        body = body[1:]  # docstring
    if not body:
        return False
    if isinstance(body[0], ast.Raise):
        return False
    for stmt in body:
        if isinstance(stmt, ast.Pass):
            continue
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
            continue  # `...` or a string
        if isinstance(stmt, ast.Return) and (stmt.value is None or isinstance(stmt.value, ast.Constant)):
            continue
        return True
    return False


SQL_NAME = r'[`"\[]?([\w$]+)[`"\]]?'
SQL_QNAME = r"(%s(?:\.%s)?)" % (SQL_NAME, SQL_NAME)
NOT_COLUMNS = ("constraint", "index", "key", "foreign", "primary", "check", "default", "not")


def unquote(name):
    return re.sub(r'[`"\[\]]', "", name)


def destructive_sql(sql):
    """DROP TABLE, ALTER TABLE ... DROP COLUMN / RENAME [COLUMN] ... TO / RENAME TO."""
    found = []
    for statement in sql.split(";"):
        st = statement.strip()
        m = re.match(r"drop\s+table\s+(?:if\s+exists\s+)?" + SQL_QNAME, st, re.I)
        if m:
            found.append(("drop_table", unquote(m.group(1)), None))
            continue
        m = re.match(r"alter\s+table\s+(?:if\s+exists\s+)?(?:only\s+)?" + SQL_QNAME + r"\s+(.*)\Z", st, re.I | re.S)
        if not m:
            continue
        table, rest = unquote(m.group(1)), m.group(m.lastindex)
        for col in re.findall(r"\bdrop\s+(?:column\s+)?(?:if\s+exists\s+)?" + SQL_NAME, rest, re.I):
            if col.lower() not in NOT_COLUMNS:
                found.append(("drop_column", "%s.%s" % (table, col), None))
        for old, new in re.findall(r"\brename\s+(?:column\s+)?" + SQL_NAME + r"\s+to\s+" + SQL_NAME, rest, re.I):
            found.append(("rename_column", "%s.%s" % (table, old), new))
        r = re.match(r"rename\s+to\s+" + SQL_QNAME, rest, re.I)
        if r:
            found.append(("rename_table", table, unquote(r.group(1))))
    return found


def destructive_ops(module):
    """What the module's upgrade() does that breaks code written for the schema before
    it, read from its source (see the header). [(kind, target, new name or None)]"""
    fn = getattr(module, "upgrade", None)
    if not callable(fn):
        return []
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    except (OSError, TypeError, SyntaxError):
        return []

    def text(node):
        return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None

    def arg(call, index, name):
        for kw in call.keywords:
            if kw.arg == name:
                return kw.value
        return call.args[index] if len(call.args) > index else None

    def kwarg(call, name):
        return next((kw.value for kw in call.keywords if kw.arg == name), None)

    def qualified(call, table):
        schema = text(kwarg(call, "schema")) if kwarg(call, "schema") is not None else None
        return "%s.%s" % (schema, table) if schema else table

    batches = {}  # `as` name -> (table, the batch_alter_table call)
    for node in ast.walk(tree):
        if isinstance(node, (ast.With, ast.AsyncWith)):
            for item in node.items:
                call = item.context_expr
                if (
                    isinstance(call, ast.Call)
                    and isinstance(call.func, ast.Attribute)
                    and call.func.attr == "batch_alter_table"
                    and isinstance(item.optional_vars, ast.Name)
                ):
                    table = text(arg(call, 0, "table_name"))
                    if table:
                        batches[item.optional_vars.id] = (qualified(call, table), call)

    found = []
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)]
    calls.sort(key=lambda n: (n.lineno, n.col_offset))
    for call in calls:
        name = call.func.attr
        owner = call.func.value
        batch = batches.get(owner.id) if isinstance(owner, ast.Name) else None
        if batch is None and not (isinstance(owner, ast.Name) and owner.id == "op"):
            continue
        shift = 0 if batch else 1  # batch ops have no table argument
        table = batch[0] if batch else None
        if not batch and name in ("drop_table", "drop_column", "rename_table", "alter_column"):
            t = text(arg(call, 0, "table_name" if name != "rename_table" else "old_table_name"))
            if t is None:
                continue
            table = qualified(call, t)
        if name == "drop_table" and not batch:
            found.append(("drop_table", table, None))
        elif name == "rename_table" and not batch:
            new = text(arg(call, 1, "new_table_name"))
            if new:
                found.append(("rename_table", table, new))
        elif name == "drop_column":
            col = text(arg(call, shift, "column_name"))
            if col:
                found.append(("drop_column", "%s.%s" % (table, col), None))
        elif name == "alter_column":
            col = text(arg(call, shift, "column_name"))
            if not col:
                continue
            at = "%s.%s" % (table, col)
            new = text(kwarg(call, "new_column_name")) if kwarg(call, "new_column_name") is not None else None
            if new and new != col:
                found.append(("rename_column", at, new))
            if kwarg(call, "type_") is not None:
                found.append(("change_type", at, None))
            nullable = kwarg(call, "nullable")
            if (
                isinstance(nullable, ast.Constant)
                and nullable.value is False
                and kwarg(call, "server_default") is None
            ):
                found.append(("set_not_null", at, None))
        elif name == "execute" and not batch:
            sql = text(arg(call, 0, "sqltext"))
            if sql:
                found += destructive_sql(sql)
    return found


def destructive_field(module):
    """The `destructive=` field of a known line, or "". A name the field cannot carry
    (whitespace, `,:>=`) is left out rather than break the line."""
    ok = re.compile(r"^[^\s,:>=]{1,255}$")
    items = []
    try:
        found = destructive_ops(module)
    except Exception as e:
        sys.stderr.write("alembic adapter: cannot read upgrade() of %s: %s\n" % (module.__name__, e))
        found = []
    for kind, target, to in found:
        if not ok.match(target) or (to is not None and not ok.match(to)):
            continue
        item = "%s:%s%s" % (kind, target, "" if to is None else ">" + to)
        if item not in items:
            items.append(item)
    return " destructive=" + ",".join(items) if items else ""


sys.exit(main())
