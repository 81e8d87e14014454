// DuckDB as an independent Parquet implementation for bitkd's interop tests.
//
//   node duckdb_parquet.mjs read  <file.parquet> <out.json>
//       every row (JSON), column types, key-value metadata, row count, and
//       per-column sums (values, list lengths, element values, string bytes)
//   node duckdb_parquet.mjs write <dir> <out.json>
//       writes DuckDB-default and zstd files (small and multi-row-group) with
//       list<int>, list<float>, list<string>, strings, booleans and nulls, and
//       reports DuckDB's own aggregates of each plus the small files' rows.
import { DuckDBInstance } from '@duckdb/node-api';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

const [mode, target, out] = process.argv.slice(2);
if (!mode || !target || !out) {
  console.error('usage: node duckdb_parquet.mjs read <file.parquet> <out.json> | write <dir> <out.json>');
  process.exit(2);
}

const instance = await DuckDBInstance.create(':memory:');
const con = await instance.connect();

const sqlString = (s) => "'" + s.replaceAll("'", "''") + "'";

async function rowsJson(sql) {
  const reader = await con.runAndReadAll(sql);
  return reader.getRowObjectsJson();
}

async function readFile(file) {
  const f = sqlString(file);
  const types = await rowsJson(`SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM read_parquet(${f}))`);
  const kv = await rowsJson(`SELECT decode(key) AS key, decode(value) AS value FROM parquet_kv_metadata(${f})`);
  const meta = await rowsJson(
    `SELECT row_group_id, path_in_schema, compression, encodings FROM parquet_metadata(${f}) ORDER BY row_group_id, column_id`);
  const data = await rowsJson(`SELECT * FROM read_parquet(${f})`);
  return { rows: data.length, types, kv, chunks: meta, sums: await columnSums(f, types), data };
}

// Per column, DuckDB's own totals: non-null count, sum of numbers, bytes of
// strings, count of true; for lists the summed lengths and the same over the
// elements.
async function columnSums(f, types) {
  const numeric = new Set(['TINYINT', 'SMALLINT', 'INTEGER', 'BIGINT', 'FLOAT', 'DOUBLE']);
  const valueAgg = (expr, type) => {
    if (numeric.has(type)) return `sum(${expr})::DOUBLE`;
    if (type === 'BOOLEAN') return `(count(*) FILTER (WHERE ${expr}))::DOUBLE`;
    if (type === 'VARCHAR') return `sum(strlen(${expr}))::DOUBLE`;
    return null;
  };
  const sums = {};
  for (const { column_name: name, column_type: type } of types) {
    const q = '"' + name.replaceAll('"', '""') + '"';
    const entry = {};
    if (type.endsWith('[]')) {
      const elem = type.slice(0, -2);
      Object.assign(entry, (await rowsJson(
        `SELECT count(${q})::DOUBLE AS count, sum(len(${q}))::DOUBLE AS len FROM read_parquet(${f})`))[0]);
      const agg = valueAgg('v', elem);
      if (agg) {
        entry.elements = (await rowsJson(
          `SELECT ${agg} AS total FROM (SELECT unnest(${q}) AS v FROM read_parquet(${f}))`))[0].total;
      }
    } else {
      const agg = valueAgg(q, type);
      Object.assign(entry, (await rowsJson(
        `SELECT count(${q})::DOUBLE AS count${agg ? `, ${agg} AS total` : ''} FROM read_parquet(${f})`))[0]);
    }
    sums[name] = entry;
  }
  return sums;
}

// Deterministic test table: every shape bitkd must read, including nulls,
// empty lists, null lists and null list elements.
function tableSql(n) {
  return `SELECT i::BIGINT AS id,
    ((i * 7919) % 1000 - 500)::INTEGER AS i32,
    ((i % 100) * 0.25 - 3)::FLOAT AS f,
    (i * 1.5)::DOUBLE AS d,
    (i % 3 = 0) AS flag,
    'tok' || (i % 37) AS s,
    'unique_' || i AS u,
    CASE WHEN i % 5 = 0 THEN NULL ELSE i::INTEGER END AS n_int,
    CASE WHEN i % 11 = 0 THEN []::INTEGER[] WHEN i % 13 = 0 THEN NULL
         ELSE [i % 7, CASE WHEN i % 17 = 0 THEN NULL ELSE i % 100 END]::INTEGER[] END AS li,
    [((i % 10) * 0.5)::FLOAT, -1.25::FLOAT] AS lf,
    CASE WHEN i % 19 = 0 THEN []::VARCHAR[] ELSE ['a' || (i % 5), 'b'] END AS ls,
    [i % 2 = 0] AS lb
  FROM range(${n}) r(i)`;
}

const aggSql = (f) => `SELECT
    count(*)::DOUBLE AS rows,
    sum(id)::DOUBLE AS id_sum,
    sum(i32)::DOUBLE AS i32_sum,
    sum(f)::DOUBLE AS f_sum,
    sum(d)::DOUBLE AS d_sum,
    count(*) FILTER (WHERE flag)::DOUBLE AS flag_true,
    sum(strlen(s))::DOUBLE AS s_bytes,
    sum(strlen(u))::DOUBLE AS u_bytes,
    count(n_int)::DOUBLE AS n_int_count,
    sum(n_int)::DOUBLE AS n_int_sum,
    count(li)::DOUBLE AS li_lists,
    sum(len(li))::DOUBLE AS li_len,
    (SELECT sum(v) FROM (SELECT unnest(li) AS v FROM read_parquet(${f})))::DOUBLE AS li_sum,
    (SELECT count(*) FROM (SELECT unnest(li) AS v FROM read_parquet(${f})) WHERE v IS NULL)::DOUBLE AS li_null_elems,
    sum(len(lf))::DOUBLE AS lf_len,
    (SELECT sum(v) FROM (SELECT unnest(lf) AS v FROM read_parquet(${f})))::DOUBLE AS lf_sum,
    sum(len(ls))::DOUBLE AS ls_len,
    (SELECT sum(strlen(v)) FROM (SELECT unnest(ls) AS v FROM read_parquet(${f})))::DOUBLE AS ls_bytes,
    (SELECT count(*) FROM (SELECT unnest(lb) AS v FROM read_parquet(${f})) WHERE v)::DOUBLE AS lb_true
  FROM read_parquet(${f})`;

async function writeFiles(dir) {
  const result = { files: [] };
  const variants = [
    { name: 'duckdb_default_small.parquet', n: 500, opts: '' },
    { name: 'duckdb_zstd_small.parquet', n: 500, opts: '(FORMAT parquet, COMPRESSION zstd)' },
    { name: 'duckdb_default_big.parquet', n: 300000, opts: '' },
    { name: 'duckdb_zstd_big.parquet', n: 300000, opts: '(FORMAT parquet, COMPRESSION zstd)' },
  ];
  for (const v of variants) {
    const path = join(dir, v.name);
    await con.run(`COPY (${tableSql(v.n)}) TO ${sqlString(path)} ${v.opts}`);
    const f = sqlString(path);
    const agg = (await rowsJson(aggSql(f)))[0];
    const groups = (await rowsJson(`SELECT count(*)::INTEGER AS n FROM parquet_metadata(${f}) WHERE column_id = 0`))[0].n;
    const encodings = await rowsJson(
      `SELECT DISTINCT path_in_schema, compression, encodings FROM parquet_metadata(${f}) ORDER BY path_in_schema`);
    const entry = { file: v.name, row_groups: groups, agg, encodings };
    if (v.n <= 1000) entry.data = await rowsJson(`SELECT * FROM read_parquet(${f})`);
    result.files.push(entry);
  }
  return result;
}

let result;
if (mode === 'read') result = await readFile(target);
else if (mode === 'write') result = await writeFiles(target);
else {
  console.error(`unknown mode ${mode}`);
  process.exit(2);
}
writeFileSync(out, JSON.stringify(result));
