"""How the migrator reads migration files (shared/runtime/db.py): the split of a nontransactional
migration into statements, which Postgres would otherwise run as one implicit transaction."""

from shared.runtime.db import _migration_files, read_migration, split_statements


def test_statements_are_cut_only_at_a_semicolon_that_ends_one() -> None:
    sql = """
        -- a comment; not a statement
        CREATE TABLE "odd;name" (note text DEFAULT 'it''s; fine');
        /* a block /* nested; */ comment; */
        CREATE FUNCTION f(v int) RETURNS int LANGUAGE plpgsql AS $body$
        BEGIN
            RETURN v; -- $$ inside another tag is text
        END;
        $body$;
        SELECT E'a\\';b', $$x;y$$, a$b FROM t WHERE c = $1;
        SELECT 1
    """
    assert [s.split(None, 2)[:2] for s in split_statements(sql)] == [
        ["--", "a"],  # the leading comment stays with its statement
        ["/*", "a"],
        ["SELECT", "E'a\\';b',"],
        ["SELECT", "1"],
    ]
    statements = split_statements(sql)
    assert statements[0].endswith("""CREATE TABLE "odd;name" (note text DEFAULT 'it''s; fine');""")
    assert statements[1].endswith("END;\n        $body$;")
    assert statements[2] == "SELECT E'a\\';b', $$x;y$$, a$b FROM t WHERE c = $1;"


def test_comments_and_blank_space_alone_are_no_statement() -> None:
    assert split_statements("-- nothing\n/* here; */\n ;\n") == []
    assert split_statements("") == []


def test_the_kind_is_in_the_file_name() -> None:
    assert read_migration("0009_x.sql", "SELECT 1;").transactional
    alone = read_migration("0010_y.nontransactional.sql", "SELECT 1; SELECT 2;")
    assert (alone.number, alone.transactional, alone.statements) == (
        10,
        False,
        ["SELECT 1;", "SELECT 2;"],
    )


def test_every_shipped_migration_reads() -> None:
    migrations = _migration_files()
    assert [m.number for m in migrations] == list(range(1, len(migrations) + 1))
    assert all(m.statements for m in migrations)
