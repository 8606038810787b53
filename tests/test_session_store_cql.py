"""Checks of the Cassandra store's statement *texts*, without a server.

This is not a Cassandra test: nothing here executes CQL. It parses our own DDL into tables, keys
and columns, and checks every data statement against it: tables and columns exist, every query
names a whole partition key (no scans), bind markers match, and the LWT-only tables are only ever
written with IF. The contract suite is what runs the store against a real cluster.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest

from session_store.cassandra_schema import (
    BACKFILLS,
    LEGACY_STATEMENTS,
    MIGRATIONS,
    MIGRATIONS_TABLE,
    SESSION_BUCKETS,
    STATEMENTS,
    TABLES,
)
from session_store.records import stable_bucket
from session_store.urls import parse_cassandra_url

LWT_ONLY = {"batches", "batch_by_release", "session_batch", "batcher"}
# Bucket lists whose settled runs are forgotten with one range delete each (a range tombstone),
# not a tombstone per row.
RANGE_DELETES = {"open_index_buckets", "tombstone_index_buckets"}


@dataclass
class Table:
    columns: dict[str, str]
    partition_key: list[str]
    clustering: list[str]


def parse_create_table(ddl: str) -> tuple[str, Table]:
    match = re.fullmatch(r"\s*CREATE TABLE IF NOT EXISTS (\w+) \((.*?)\)(?: WITH (.*))?\s*", ddl, re.S)
    assert match, f"not a CREATE TABLE we understand: {ddl}"
    name, body, options = match.groups()
    order = None
    if options:
        clauses = [clause.strip() for clause in options.split(" AND ")]
        ordering = [c for c in clauses if c.startswith("CLUSTERING ORDER BY")]
        order = re.fullmatch(r"CLUSTERING ORDER BY \(([^)]*)\)", ordering[0])[1] if ordering else None
        for clause in clauses:
            assert clause.startswith(("CLUSTERING ORDER BY", "compaction = {", "gc_grace_seconds = ")), clause
    columns: dict[str, str] = {}
    partition: list[str] = []
    clustering: list[str] = []
    key = re.search(r"PRIMARY KEY \(\((?P<part>[^)]*)\)(?:, (?P<clust>[^)]*))?\)", body)
    body_without_key = body[: key.start()] if key else body
    for item in filter(None, (part.strip() for part in body_without_key.split(","))):
        column, kind, *rest = item.split()
        columns[column] = kind
        if rest == ["PRIMARY", "KEY"]:
            partition = [column]
    if key:
        partition = [c.strip() for c in key["part"].split(",")]
        clustering = [c.strip() for c in (key["clust"] or "").split(",") if c.strip()]
    assert partition, f"{name} has no primary key"
    for column in partition + clustering:
        assert column in columns, f"{name}: key column {column} is not declared"
    if order:
        ordered = [part.split()[0] for part in order.split(",")]
        assert ordered == clustering, f"{name}: clustering order {ordered} is not the clustering key {clustering}"
    return name, Table(columns, partition, clustering)


def all_tables() -> dict[str, Table]:
    ddl = [MIGRATIONS_TABLE] + [statement for _, statements in MIGRATIONS.values() for statement in statements]
    tables: dict[str, Table] = {}
    for statement in ddl:
        if statement in BACKFILLS:
            continue
        if dropped := re.fullmatch(r"DROP TABLE IF EXISTS (\w+)", statement):
            tables.pop(dropped[1])
            continue
        if added := re.fullmatch(r"\s*ALTER TABLE (\w+) ADD (\w+) (\w+)\s*", statement):
            table, column, kind = added.groups()
            assert table in tables and column not in tables[table].columns, statement
            tables[table].columns[column] = kind
            continue
        name, table = parse_create_table(statement)
        tables[name] = table
    return tables


def parse_dml(cql: str) -> tuple[str, str, list[str], list[str], list[str]]:
    """(verb, table, columns read or written, columns restricted in WHERE, columns in IF)."""
    if m := re.fullmatch(r"SELECT (.+) FROM (\w+) WHERE (.+)", cql):
        selected, table, where = m.groups()
        read = [] if selected == "COUNT(*)" else [c.strip() for c in selected.split(",")]
        return "SELECT", table, read, _conditions(where), []
    if m := re.fullmatch(r"INSERT INTO (\w+) \(([^)]*)\) VALUES \(([^)]*)\)( IF NOT EXISTS)?(?: USING TTL \?)?", cql):
        table, columns, values, lwt = m.groups()
        names = [c.strip() for c in columns.split(",")]
        assert len(names) == len(values.split(",")), f"column and value counts differ: {cql}"
        return "INSERT", table, names, [], ["*"] if lwt else []
    if m := re.fullmatch(r"UPDATE (\w+) SET (.+) WHERE (.+?)(?: IF (.+))?", cql):
        table, assignments, where, condition = m.groups()
        written = [a.split("=")[0].strip() for a in assignments.split(",")]
        return "UPDATE", table, written, _conditions(where), _conditions(condition or "")
    if m := re.fullmatch(r"DELETE FROM (\w+) WHERE (.+)", cql):
        table, where = m.groups()
        return "DELETE", table, [], _conditions(where), []
    raise AssertionError(f"statement of an unexpected form: {cql}")


def _conditions(text: str) -> list[str]:
    """The columns restricted, each once; a range (``<``, ``>=``...) counts as restricting its column."""
    found = []
    for part in filter(None, (p.strip() for p in text.split(" AND "))):
        m = re.fullmatch(r"(\w+) (=|<|<=|>=) (\?|'[^']*'|null)", part)
        assert m, f"only equality and range restrictions are expected, got {part!r}"
        if m.group(1) not in found:
            found.append(m.group(1))
    return found


def _ranges(cql: str) -> list[str]:
    return re.findall(r"(\w+) (?:<|<=|>=) \?", cql)


def test_every_table_is_created_and_every_created_table_is_known():
    assert set(all_tables()) == set(TABLES)


def test_keys_keep_partitions_bounded():
    tables = all_tables()
    assert tables["sessions_by_batch"].partition_key == ["batch_id", "bucket"]
    assert tables["sessions_by_batch"].clustering == ["session_id"]
    # The open-session indexes are cut by time as well as by partition and shard: a partition
    # holds one bucket's sessions, however long the system runs and however many are open.
    for index in ("open_index", "tombstone_index"):
        assert tables[index].partition_key == ["partition", "bucket_us", "shard"]
        assert tables[index].clustering == ["session_id"]
    for listing in ("open_index_buckets", "tombstone_index_buckets"):
        assert tables[listing].partition_key == ["partition"] and tables[listing].clustering == ["bucket_us"]
    assert "open_sessions_by_partition" not in tables  # the index version 3 replaced is dropped
    assert tables["batches"].partition_key == ["batch_id"]
    assert tables["batch_by_release"].partition_key == ["release_id"]


@pytest.mark.parametrize("name", sorted(STATEMENTS))
def test_statement_names_existing_columns_and_a_whole_partition_key(name: str):
    cql = STATEMENTS[name]
    assert cql == cql.strip() and not cql.endswith(";") and cql.count("(") == cql.count(")")
    verb, table_name, columns, where, _ = parse_dml(cql)
    table = all_tables().get(table_name)
    assert table is not None, f"{name}: unknown table {table_name}"
    for column in columns + where:
        assert column in table.columns, f"{name}: {table_name} has no column {column}"
    if verb == "INSERT":
        assert set(table.partition_key + table.clustering) <= set(columns), f"{name}: incomplete primary key"
    else:
        assert set(table.partition_key) <= set(where), f"{name}: does not name a whole partition (a scan)"
        assert set(where) <= set(table.partition_key + table.clustering), f"{name}: filters on a regular column"
    if verb in ("UPDATE", "DELETE"):
        assert set(where) == set(table.partition_key + table.clustering), f"{name}: must address one row"
    for column in _ranges(cql):  # a range stays within one partition, on its clustering key
        assert column in table.clustering, f"{name}: a range on {column}, not a clustering column"
        assert verb == "SELECT" or table_name in RANGE_DELETES, f"{name}: a range write on {table_name}"
    assert "ALLOW FILTERING" not in cql


@pytest.mark.parametrize("name", sorted(STATEMENTS))
def test_lwt_tables_are_written_only_with_if_and_the_rest_never(name: str):
    verb, table, _, _, conditions = parse_dml(STATEMENTS[name])
    if verb == "SELECT":
        return
    if table in LWT_ONLY:
        assert conditions, f"{name} writes {table} without IF"
    else:
        assert not conditions, f"{name} uses an LWT on {table}, a hot-path table"


def test_close_is_a_compare_and_set_on_the_open_status():
    _, _, written, where, conditions = parse_dml(STATEMENTS["close_batch"])
    assert where == ["batch_id"] and conditions == ["status"]
    assert {"status", "closed_us", "release_id", "session_count"} <= set(written)


def test_buckets_are_stable_across_processes():
    # crc32, not hash(): Python salts str hashes per process, which would scatter a batch's reads.
    assert stable_bucket("session-42", SESSION_BUCKETS) == 9
    assert {stable_bucket(f"s{i}", SESSION_BUCKETS) for i in range(1000)} == set(range(SESSION_BUCKETS))


def test_cassandra_urls_carry_hosts_port_keyspace_dc_and_credentials():
    url = parse_cassandra_url("cassandra://reader:p%40ss@10.0.0.1,10.0.0.2:9142/clicks?dc=eu-west&rf=3")
    assert url.hosts == ("10.0.0.1", "10.0.0.2")
    assert (url.port, url.keyspace, url.local_dc, url.replication_factor) == (9142, "clicks", "eu-west", 3)
    assert (url.username, url.password) == ("reader", "p@ss")
    assert "p@ss" not in url.redacted()


def test_cassandra_url_defaults():
    url = parse_cassandra_url("cassandra://cass1")
    assert (url.hosts, url.port, url.keyspace, url.local_dc, url.username) == (
        ("cass1",), 9042, "embedding_studio", None, None
    )


@pytest.mark.parametrize(
    "bad",
    [
        "cassandra:///ks",  # no host
        "cassandra://h1:9042,h2:9043/ks",  # the driver takes one port
        "cassandra://h1/ks-with-dash",  # not a CQL identifier
        "cassandra://h1/ks?consistency=ONE",  # unknown option
        "cassandra://::1/ks",  # IPv6 without brackets
    ],
)
def test_malformed_cassandra_urls_are_refused(bad: str):
    with pytest.raises(ValueError):
        parse_cassandra_url(bad)


# --- Cassandra's own grammar (cqlsh's cqlshlib) ---------------------------------------------------
def cqlsh_accepts(cql: str) -> bool:
    """True when cqlsh's CQL grammar consumes the whole statement. Its lexer has no bind marker:
    each ``?`` becomes a literal (``IN ?`` a parenthesised one)."""
    from cqlshlib.cql3handling import CqlRuleSet

    literal = re.sub(r"IN \?", "IN (1)", cql).replace("?", "1")
    return any(not context.remainder for context in CqlRuleSet.cql_parse(literal + ";"))


@pytest.mark.parametrize("name", sorted(STATEMENTS) + sorted(LEGACY_STATEMENTS))
def test_every_statement_the_store_prepares_parses_with_cassandras_grammar(name: str):
    cql = STATEMENTS.get(name) or LEGACY_STATEMENTS[name]
    assert cqlsh_accepts(cql), cql


@pytest.mark.parametrize("broken", [
    "SELECT batch_id FROM WHERE batch_id = ?",
    "UPDATE batches SET status = 'closed' WHERE batch_id = ? IF",
    "INSERT INTO batches (batch_id, status) VALUES (?, ?) IF EXISTS NOT",
    "DELETE open_sessions WHERE session_id = ?",
    "INSERT INTO open_sessions (session_id) VALUES (?) USING TTL",
    "DELETE FROM open_index_buckets WHERE partition = ? AND bucket_us >= AND bucket_us <= ?",
    "SELECT bucket_us FROM open_index_buckets WHERE partition = ? AND bucket_us <",
])
def test_the_grammar_check_rejects_a_broken_statement(broken: str):
    assert not cqlsh_accepts(broken)


def test_tombstones_expire_by_ttl_and_open_states_do_not():
    assert "USING TTL ?" in STATEMENTS["upsert_tombstone"] and "USING TTL ?" in STATEMENTS["upsert_tombstone_index"]
    # An open state is the only copy of its events: it never expires. Its index entries do.
    assert "TTL" not in STATEMENTS["upsert_open_session"]


def test_every_index_and_claim_row_expires():
    writes = {name: cql for name, cql in STATEMENTS.items() if cql.startswith("INSERT")}
    for table in ("open_index", "open_index_buckets", "tombstone_index", "tombstone_index_buckets", "session_batch"):
        inserts = [name for name, cql in writes.items() if cql.startswith(f"INSERT INTO {table} ")]
        assert inserts, table
        for name in inserts:
            assert writes[name].endswith("USING TTL ?"), f"{name} writes {table} rows that never expire"
