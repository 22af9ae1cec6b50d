//! Storage's database side (migration 0010) from a Supabase user's side, against a real PostgreSQL
//! migrated by the real `madbase` binary: the columns of `storage.buckets`/`storage.objects`, the
//! policy helpers, the list functions (`storage.search` for list v1, `storage.search_v2` and
//! `storage.list_objects_with_delimiter` for list v2) with their folders, paging and sorting, the
//! triggers, row level security deciding what the API roles see and list (checked on a connection
//! logged in as `authenticator`, MadBase's login role, switching role and claims per transaction
//! as the Storage service does), and running the migration again — also over an older Supabase
//! Storage schema.

mod support;

use madbase_pg::{Connection, PgError, SimpleResult};
use support::{as_authenticator, run_sql, TestServer, ALICE, BOB};

const MIGRATION: &str = include_str!("../migrations/0010_storage.sql");

/// Rows of the last statement of `sql` that returned a result, one line per row with the cells
/// joined by `|` (`NULL` for NULL).
fn lines_of(sets: &[SimpleResult]) -> Vec<String> {
    let set = sets.iter().rev().find(|set| !set.columns.is_empty()).expect("a statement with a result");
    set.rows
        .iter()
        .map(|row| (0..row.len()).map(|i| row.get_str(i).unwrap_or("NULL")).collect::<Vec<_>>().join("|"))
        .collect()
}

fn lines(server: &TestServer, sql: &str) -> Vec<String> {
    lines_of(&server.sql(sql))
}

fn value(server: &TestServer, sql: &str) -> String {
    lines(server, sql).into_iter().next().unwrap_or_else(|| panic!("no rows: {sql}"))
}

/// Runs `sql` as the superuser and returns its error.
fn sql_error(server: &TestServer, sql: &str) -> PgError {
    run_sql(&server.cluster.connection_url(), sql).expect_err(sql)
}

/// `sql` in one transaction as `role` with the JWT claims of `sub`, as the Storage service runs a
/// caller's statement.
fn as_caller(role: &str, sub: Option<&str>, sql: &str) -> String {
    let claims = match sub {
        Some(sub) => format!(r#"{{"sub":"{sub}","role":"{role}","exp":9999999999}}"#),
        None => format!(r#"{{"role":"{role}","exp":9999999999}}"#),
    };
    format!("begin; set local role {role}; select set_config('request.jwt.claims', '{claims}', true);\n{sql};\ncommit;")
}

/// Runs each of `batches` on one connection logged in as `authenticator`; their results in order.
fn run_batches(server: &TestServer, batches: &[String]) -> Vec<Result<Vec<SimpleResult>, PgError>> {
    let batches = batches.to_vec();
    as_authenticator(server, async move |conn: &Connection| {
        let mut out = Vec::new();
        for batch in &batches {
            let result = conn.simple_query(batch).await;
            if result.is_err() {
                // Leave the failed transaction before the next batch.
                conn.simple_query("rollback").await.expect("rollback");
            }
            out.push(result);
        }
        out
    })
}

/// A bucket of photos: files and folders at several levels, with fixed timestamps.
const PHOTOS: &str = "
insert into storage.buckets (id, name, public) values ('photos', 'photos', true);
insert into storage.objects (bucket_id, name, created_at, updated_at, last_accessed_at, metadata) values
  ('photos', 'avatar.png',           '2024-01-05 00:00+00', '2024-01-05 00:00+00', '2024-01-08 00:00+00', '{\"size\": 100}'),
  ('photos', 'beach.jpg',            '2024-01-03 00:00+00', '2024-01-09 00:00+00', '2024-01-02 00:00+00', '{\"size\": 200}'),
  ('photos', 'Animals/cat.jpg',      '2024-01-02 00:00+00', '2024-01-02 00:00+00', '2024-01-02 00:00+00', '{\"size\": 300}'),
  ('photos', 'Animals/dog.jpg',      '2024-01-04 00:00+00', '2024-01-04 00:00+00', '2024-01-04 00:00+00', '{\"size\": 400}'),
  ('photos', 'Animals/big/lion.jpg', '2024-01-01 00:00+00', '2024-01-01 00:00+00', '2024-01-01 00:00+00', '{\"size\": 500}'),
  ('photos', 'cars/red.png',         '2024-01-06 00:00+00', '2024-01-06 00:00+00', '2024-01-06 00:00+00', '{\"size\": 600}'),
  ('photos', 'folder/.emptyFolderPlaceholder',
                                     '2024-01-07 00:00+00', '2024-01-07 00:00+00', '2024-01-07 00:00+00', '{\"size\": 0}');
insert into storage.buckets (id, name) values ('other', 'other');
insert into storage.objects (bucket_id, name, metadata) values ('other', 'avatar.png', '{\"size\": 7}');
";

/// `storage.search` rows as `name|id is null|created_at is null|metadata is null`.
fn search(server: &TestServer, args: &str) -> Vec<String> {
    lines(
        server,
        &format!(
            "select name, (id is null)::text, (updated_at is null and created_at is null and last_accessed_at is null)::text,
                    (metadata is null)::text
             from storage.search({args})"
        ),
    )
}

#[test]
fn tables_helpers_triggers_and_grants() {
    let server = TestServer::start();
    assert_eq!(value(&server, "select name from _madbase.migrations where version = 10"), "storage");

    // The columns, in order, with their types, as Supabase Storage's migrations leave them.
    let columns = |table: &str| {
        lines(
            &server,
            &format!(
                "select attname, format_type(atttypid, atttypmod), attnotnull::text, coalesce(pg_get_expr(adbin, adrelid), '')
                 from pg_attribute left join pg_attrdef on adrelid = attrelid and adnum = attnum
                 where attrelid = '{table}'::regclass and attnum > 0 and not attisdropped order by attnum"
            ),
        )
    };
    assert_eq!(
        columns("storage.buckets"),
        [
            "id|text|true|",
            "name|text|true|",
            "owner|uuid|false|",
            "created_at|timestamp with time zone|false|now()",
            "updated_at|timestamp with time zone|false|now()",
            "public|boolean|false|false",
            "avif_autodetection|boolean|false|false",
            "file_size_limit|bigint|false|",
            "allowed_mime_types|text[]|false|",
            "owner_id|text|false|",
            "type|storage.buckettype|true|'STANDARD'::storage.buckettype",
        ]
    );
    assert_eq!(
        columns("storage.objects"),
        [
            "id|uuid|true|gen_random_uuid()",
            "bucket_id|text|false|",
            "name|text|false|",
            "owner|uuid|false|",
            "created_at|timestamp with time zone|false|now()",
            "updated_at|timestamp with time zone|false|now()",
            "last_accessed_at|timestamp with time zone|false|now()",
            "metadata|jsonb|false|",
            "path_tokens|text[]|false|string_to_array(name, '/'::text)",
            "version|text|false|",
            "owner_id|text|false|",
            "user_metadata|jsonb|false|",
        ]
    );
    assert_eq!(
        value(&server, "select string_agg(enumlabel, ',' order by enumsortorder) from pg_enum where enumtypid = 'storage.buckettype'::regtype"),
        "STANDARD,ANALYTICS,VECTOR"
    );
    // Keys and indexes.
    assert_eq!(
        lines(
            &server,
            "select indexrelid::regclass::text || '|' || indisunique || '|' || pg_get_indexdef(indexrelid)
             from pg_index where indrelid in ('storage.buckets'::regclass, 'storage.objects'::regclass)
             order by indexrelid::regclass::text collate \"C\""
        ),
        [
            "storage.bname|true|CREATE UNIQUE INDEX bname ON storage.buckets USING btree (name)",
            "storage.bucketid_objname|true|CREATE UNIQUE INDEX bucketid_objname ON storage.objects USING btree (bucket_id, name)",
            "storage.buckets_pkey|true|CREATE UNIQUE INDEX buckets_pkey ON storage.buckets USING btree (id)",
            "storage.idx_objects_bucket_id_name|false|CREATE INDEX idx_objects_bucket_id_name ON storage.objects USING btree (bucket_id, name COLLATE \"C\")",
            "storage.idx_objects_bucket_id_name_lower|false|CREATE INDEX idx_objects_bucket_id_name_lower ON storage.objects USING btree (bucket_id, lower(name) COLLATE \"C\")",
            "storage.name_prefix_search|false|CREATE INDEX name_prefix_search ON storage.objects USING btree (name text_pattern_ops)",
            "storage.objects_pkey|true|CREATE UNIQUE INDEX objects_pkey ON storage.objects USING btree (id)",
            // MadBase's own (migration 0011): the sweeper's lookups by version.
            "storage.objects_version_idx|false|CREATE INDEX objects_version_idx ON storage.objects USING btree (version) WHERE (version IS NOT NULL)",
        ]
    );
    assert_eq!(
        value(&server, "select pg_get_constraintdef(oid) from pg_constraint where conrelid = 'storage.objects'::regclass and contype = 'f'"),
        "FOREIGN KEY (bucket_id) REFERENCES storage.buckets(id)"
    );
    // Row level security on, the storage admin owns the tables, the API roles hold every privilege.
    assert_eq!(
        lines(
            &server,
            "select relname, relrowsecurity::text, pg_get_userbyid(relowner) from pg_class
             where relnamespace = 'storage'::regnamespace and relkind = 'r' order by relname"
        ),
        ["buckets|true|supabase_storage_admin", "objects|true|supabase_storage_admin"]
    );
    for role in ["anon", "authenticated", "service_role"] {
        for table in ["storage.buckets", "storage.objects"] {
            for privilege in ["select", "insert", "update", "delete", "truncate", "references", "trigger"] {
                assert_eq!(
                    value(&server, &format!("select has_table_privilege('{role}', '{table}', '{privilege}')::text")),
                    "true",
                    "{role} {privilege} on {table}"
                );
            }
        }
        assert_eq!(value(&server, &format!("select has_schema_privilege('{role}', 'storage', 'usage')::text")), "true");
    }
    assert_eq!(value(&server, "select rolbypassrls::text from pg_roles where rolname = 'service_role'"), "true");
    // The functions run as their caller (policies apply), owned by the storage admin.
    assert_eq!(
        value(
            &server,
            "select count(*) filter (where prosecdef) || '|' || count(*) filter (where pg_get_userbyid(proowner) <> 'supabase_storage_admin')
             from pg_proc where pronamespace = 'storage'::regnamespace"
        ),
        "0|0"
    );

    // The policy helpers, as storage policies use them.
    assert_eq!(
        value(&server, "select storage.foldername('a/b/c.png')::text || '|' || storage.filename('a/b/c.png') || '|' || storage.extension('a/b/c.png')"),
        "{a,b}|c.png|png"
    );
    assert_eq!(
        value(&server, "select storage.foldername('c.png')::text || '|' || storage.filename('c.png') || '|' || storage.extension('a/archive.tar.gz') || '|' || storage.extension('a/README')"),
        "{}|c.png|gz|README"
    );
    assert_eq!(
        value(&server, "select string_agg(provolatile::text, '') from pg_proc where oid in ('storage.foldername(text)'::regprocedure, 'storage.filename(text)'::regprocedure, 'storage.extension(text)'::regprocedure)"),
        "iii"
    );
    // Operation-aware helpers read `storage.operation`, with or without the `storage.` prefix.
    assert_eq!(
        value(
            &server,
            "select coalesce(storage.operation(), 'NULL') || '|' || storage.allow_only_operation('object.list') || '|' ||
                    storage.allow_any_operation(array['object.list'])"
        ),
        "NULL|false|false"
    );
    assert_eq!(
        value(
            &server,
            "select set_config('storage.operation', 'storage.object.list', false);
             select storage.operation() || '|' || storage.allow_only_operation('object.list') || '|' ||
                    storage.allow_only_operation('storage.object.list') || '|' || storage.allow_only_operation('object.get') || '|' ||
                    storage.allow_only_operation('') || '|' || storage.allow_any_operation(array['object.get', 'storage.object.list']) || '|' ||
                    storage.allow_any_operation(array['object.get', ''])"
        ),
        "storage.object.list|true|true|false|false|true|false"
    );

    server.sql(PHOTOS);
    // path_tokens is generated from the name; the id defaults to a new uuid; a bucket's type to STANDARD.
    assert_eq!(
        value(&server, "select path_tokens::text || '|' || (id is not null) from storage.objects where name = 'Animals/big/lion.jpg'"),
        "{Animals,big,lion.jpg}|true"
    );
    assert_eq!(
        value(&server, "select type::text || '|' || public from storage.buckets where id = 'photos'"),
        "STANDARD|true"
    );
    assert_eq!(
        lines(&server, "select bucket_id || '=' || size from storage.get_size_by_bucket() order by bucket_id"),
        ["other=7", "photos=2100"]
    );
    // One object per name in a bucket; objects need their bucket.
    assert_eq!(
        sql_error(&server, "insert into storage.objects (bucket_id, name) values ('photos', 'beach.jpg')").code(),
        Some("23505")
    );
    assert_eq!(
        sql_error(&server, "insert into storage.objects (bucket_id, name) values ('nope', 'x')").code(),
        Some("23503")
    );
    // updated_at follows every update.
    assert_eq!(
        value(
            &server,
            "update storage.objects set metadata = '{\"size\": 101}' where name = 'avatar.png' and bucket_id = 'photos';
             select (updated_at > '2024-01-05 00:00+00')::text || '|' || (created_at = '2024-01-05 00:00+00')::text from storage.objects
             where name = 'avatar.png' and bucket_id = 'photos'"
        ),
        "true|true"
    );
    // Bucket names are at most 100 characters.
    let long =
        sql_error(&server, &format!("insert into storage.buckets (id, name) values ('long', '{}')", "n".repeat(101)));
    assert!(long.to_string().contains("is too long (101 characters). Max is 100."), "{long}");
    // Deleting rows directly is refused unless the Storage API says so.
    let refused = sql_error(&server, "delete from storage.objects where bucket_id = 'other'");
    assert_eq!(refused.code(), Some("42501"));
    assert!(refused.to_string().contains("Direct deletion from storage tables is not allowed"), "{refused}");
    assert_eq!(sql_error(&server, "delete from storage.buckets where id = 'other'").code(), Some("42501"));
    assert_eq!(
        value(
            &server,
            "begin; set local storage.allow_delete_query = 'true';
             delete from storage.objects where bucket_id = 'other'; delete from storage.buckets where id = 'other'; commit;
             select count(*) from storage.buckets where id = 'other'"
        ),
        "0"
    );
}

#[test]
fn search_lists_one_folder_level() {
    let server = TestServer::start();
    server.sql(PHOTOS);
    let folder = |name: &str| format!("{name}|true|true|true");
    let file = |name: &str| format!("{name}|false|false|false");

    // The top level: folders are rows with NULL id, timestamps and metadata; by name, folders and
    // files interleave in the order of the lowercased names.
    assert_eq!(
        search(&server, "'', 'photos'"),
        [folder("Animals"), file("avatar.png"), file("beach.jpg"), folder("cars"), folder("folder")]
    );
    // One level below a prefix (as the API passes it, with its '/'); names are relative to it.
    assert_eq!(search(&server, "'Animals/', 'photos'"), [folder("big"), file("cat.jpg"), file("dog.jpg")]);
    assert_eq!(search(&server, "'Animals/big/', 'photos'"), [file("lion.jpg")]);
    assert_eq!(search(&server, "'folder/', 'photos'"), [file(".emptyFolderPlaceholder")]);
    assert!(search(&server, "'nothing/', 'photos'").is_empty());
    assert!(search(&server, "'', 'no-such-bucket'").is_empty());
    // The files carry their row.
    assert_eq!(
        value(
            &server,
            "select s.id = o.id and s.created_at = o.created_at and s.metadata = o.metadata
             from storage.search('Animals/', 'photos') s join storage.objects o on o.name = 'Animals/' || s.name"
        ),
        "t"
    );

    // limit and offset page through folders and files alike.
    assert_eq!(search(&server, "'', 'photos', 2"), [folder("Animals"), file("avatar.png")]);
    assert_eq!(search(&server, "'', 'photos', 2, 1, 2"), [file("beach.jpg"), folder("cars")]);
    assert_eq!(search(&server, "'', 'photos', 2, 1, 4"), [folder("folder")]);
    assert!(search(&server, "'', 'photos', 2, 1, 5").is_empty());
    assert_eq!(search(&server, "'Animals/', 'photos', 2, 2, 1"), [file("cat.jpg"), file("dog.jpg")]);

    // `search` narrows by the start of the name, case-insensitively.
    assert_eq!(search(&server, "'', 'photos', 100, 1, 0, 'a'"), [folder("Animals"), file("avatar.png")]);
    assert_eq!(search(&server, "'', 'photos', 100, 1, 0, 'ANI'"), [folder("Animals")]);
    assert_eq!(search(&server, "'animals/', 'photos', 100, 2, 0, 'D'"), [file("dog.jpg")]);

    // Descending by name.
    assert_eq!(
        search(&server, "'', 'photos', 100, 1, 0, '', 'name', 'desc'"),
        [folder("folder"), folder("cars"), file("beach.jpg"), file("avatar.png"), folder("Animals")]
    );
    assert_eq!(search(&server, "'', 'photos', 2, 1, 1, '', 'name', 'desc'"), [folder("cars"), file("beach.jpg")]);
    // By a timestamp: the folders (by name) first, then the files by that column.
    assert_eq!(
        search(&server, "'', 'photos', 100, 1, 0, '', 'created_at', 'asc'"),
        [folder("Animals"), folder("cars"), folder("folder"), file("beach.jpg"), file("avatar.png")]
    );
    assert_eq!(
        search(&server, "'', 'photos', 100, 1, 0, '', 'updated_at', 'desc'"),
        [folder("folder"), folder("cars"), folder("Animals"), file("beach.jpg"), file("avatar.png")]
    );
    assert_eq!(
        search(&server, "'Animals/', 'photos', 100, 2, 0, '', 'created_at', 'desc'"),
        [folder("big"), file("dog.jpg"), file("cat.jpg")]
    );
    assert_eq!(
        search(&server, "'', 'photos', 2, 1, 3, '', 'last_accessed_at', 'asc'"),
        [file("beach.jpg"), file("avatar.png")]
    );
    // The sort column is validated: anything else sorts by name, never reaches the SQL.
    assert_eq!(
        search(&server, "'', 'photos', 2, 1, 0, '', 'id; drop table storage.objects', 'asc'"),
        search(&server, "'', 'photos', 2")
    );
    assert_eq!(value(&server, "select count(*) from storage.objects"), "8");
}

#[test]
fn list_v2_functions_page_with_cursors() {
    let server = TestServer::start();
    server.sql(PHOTOS);
    // search_v2(prefix, bucket, limit, levels, start_after, sort_order, sort_column, sort_column_after):
    // `key|name|id is null`.
    let v2 =
        |args: &str| lines(&server, &format!("select key, name, (id is null)::text from storage.search_v2({args})"));
    assert_eq!(
        v2("'', 'photos'"),
        [
            "Animals|Animals|true",
            "avatar.png|avatar.png|false",
            "beach.jpg|beach.jpg|false",
            "cars|cars|true",
            "folder|folder|true",
        ]
    );
    assert_eq!(v2("'Animals/', 'photos', 2, 2"), ["big|Animals/big|true", "cat.jpg|Animals/cat.jpg|false"]);
    // The cursor is the last name returned: a key resumes after the key, a folder after the folder.
    assert_eq!(v2("'Animals/', 'photos', 2, 2, 'Animals/cat.jpg'"), ["dog.jpg|Animals/dog.jpg|false"]);
    assert_eq!(
        v2("'Animals/', 'photos', 2, 2, 'Animals/big'"),
        ["cat.jpg|Animals/cat.jpg|false", "dog.jpg|Animals/dog.jpg|false"]
    );
    assert_eq!(
        v2("'', 'photos', 3, 1, '', 'desc'"),
        ["folder|folder|true", "cars|cars|true", "beach.jpg|beach.jpg|false"]
    );
    assert_eq!(v2("'', 'photos', 3, 1, 'beach.jpg', 'desc'"), ["avatar.png|avatar.png|false", "Animals|Animals|true"]);
    // By created_at, to the millisecond: a folder dates from its oldest object; the cursor is the
    // last row's timestamp and name.
    assert_eq!(
        v2("'', 'photos', 10, 1, '', 'asc', 'created_at'"),
        [
            "Animals|Animals|true",
            "beach.jpg|beach.jpg|false",
            "avatar.png|avatar.png|false",
            "cars|cars|true",
            "folder|folder|true",
        ]
    );
    assert_eq!(
        v2("'', 'photos', 2, 1, 'beach.jpg', 'asc', 'created_at', '2024-01-03T00:00:00.000Z'"),
        ["avatar.png|avatar.png|false", "cars|cars|true"]
    );
    assert_eq!(
        v2("'', 'photos', 2, 1, 'cars', 'desc', 'created_at', '2024-01-06T00:00:00.000Z'"),
        ["avatar.png|avatar.png|false", "beach.jpg|beach.jpg|false"]
    );
    assert_eq!(
        value(&server, "select (created_at at time zone 'UTC')::date::text from storage.search_v2('', 'photos', 10, 1, '', 'asc', 'updated_at') where name = 'Animals'"),
        "2024-01-01"
    );

    // S3-style listing, case-sensitive and in byte order ('A' before 'a'); any delimiter; full names.
    let s3 = |args: &str| {
        lines(&server, &format!("select name, (id is null)::text from storage.list_objects_with_delimiter({args})"))
    };
    assert_eq!(
        s3("'photos', '', '/'"),
        ["Animals|true", "avatar.png|false", "beach.jpg|false", "cars|true", "folder|true"]
    );
    assert_eq!(s3("'photos', 'animals/', '/'"), Vec::<String>::new());
    assert_eq!(s3("'photos', 'Animals/', '/', 1, 'Animals/big'"), ["Animals/cat.jpg|false"]);
    assert_eq!(s3("'photos', 'Animals/', '/', 2, '', 'Animals/cat.jpg'"), ["Animals/dog.jpg|false"]);
    assert_eq!(
        s3("'photos', 'Animals/', '/', 10, '', '', 'desc'"),
        ["Animals/dog.jpg|false", "Animals/cat.jpg|false", "Animals/big|true"]
    );
    assert_eq!(s3("'photos', 'Animals/', '.', 10"), ["Animals/big/lion|true", "Animals/cat|true", "Animals/dog|true"]);
    assert_eq!(s3("'photos', 'Animals/', '', 2"), ["Animals/big/lion.jpg|false", "Animals/cat.jpg|false"]);
}

#[test]
fn row_level_security_decides_what_callers_see_and_list() {
    let server = TestServer::start();
    server.sql(&format!(
        "insert into storage.buckets (id, name) values ('docs', 'docs');
         insert into storage.objects (bucket_id, name, owner) values
           ('docs', 'alice/1.txt', '{ALICE}'), ('docs', 'alice/notes/2.txt', '{ALICE}'),
           ('docs', 'bob/1.txt', '{BOB}'), ('docs', 'shared.txt', null);"
    ));
    let listing = "select string_agg(name, ',' order by name) from storage.objects";
    let search = "select string_agg(name || ':' || (id is null), ',') from storage.search('', 'docs')";
    let list_v2 = "select string_agg(name, ',') from storage.search_v2('alice/', 'docs', 10, 2)";
    let buckets = "select count(*) from storage.buckets";
    let callers = |batches: &[String]| -> Vec<String> {
        run_batches(&server, batches)
            .into_iter()
            .map(|result| match result {
                Ok(sets) => lines_of(&sets).join(";"),
                Err(error) => format!("error {}", error.code().unwrap_or("?")),
            })
            .collect()
    };

    // Without policies the API roles see nothing, and cannot write; the service role sees all.
    let without = callers(&[
        as_caller("authenticated", Some(ALICE), listing),
        as_caller("authenticated", Some(ALICE), search),
        as_caller("authenticated", Some(ALICE), buckets),
        as_caller("anon", None, listing),
        as_caller(
            "authenticated",
            Some(ALICE),
            "insert into storage.objects (bucket_id, name, owner) values ('docs', 'alice/3.txt', auth.uid())",
        ),
        as_caller("service_role", None, listing),
        as_caller("service_role", None, search),
    ]);
    assert_eq!(
        without,
        [
            "NULL",
            "NULL",
            "0",
            "NULL",
            "error 42501",
            "alice/1.txt,alice/notes/2.txt,bob/1.txt,shared.txt",
            "alice:true,bob:true,shared.txt:false",
        ]
    );

    // The usual owner policy: each user sees, lists and writes their own objects.
    server.sql(
        "create policy \"own objects\" on storage.objects for select to authenticated using (owner = auth.uid());
         create policy \"own uploads\" on storage.objects for insert to authenticated with check (owner = auth.uid());
         create policy \"folder by user\" on storage.objects for select to anon
           using (bucket_id = 'docs' and (storage.foldername(name))[1] = 'bob' and storage.extension(name) = 'txt');",
    );
    let with = callers(&[
        as_caller("authenticated", Some(ALICE), listing),
        as_caller("authenticated", Some(ALICE), search),
        as_caller("authenticated", Some(ALICE), list_v2),
        as_caller("authenticated", Some(ALICE), "select string_agg(name, ',') from storage.list_objects_with_delimiter('docs', '', '/')"),
        as_caller("authenticated", Some(BOB), listing),
        as_caller("authenticated", Some(BOB), search),
        as_caller("authenticated", Some(BOB), list_v2),
        as_caller("anon", None, listing),
        as_caller("authenticated", Some(ALICE), "insert into storage.objects (bucket_id, name, owner) values ('docs', 'alice/3.txt', auth.uid()) returning name"),
        as_caller("authenticated", Some(ALICE), &format!("insert into storage.objects (bucket_id, name, owner) values ('docs', 'bob/2.txt', '{BOB}')")),
    ]);
    assert_eq!(
        with,
        [
            "alice/1.txt,alice/notes/2.txt",
            "alice:true",
            "alice/1.txt,alice/notes",
            "alice",
            "bob/1.txt",
            "bob:true",
            "NULL",
            "bob/1.txt",
            "alice/3.txt",
            "error 42501",
        ]
    );
    assert_eq!(value(&server, "select count(*) from storage.objects"), "5");
}

/// The storage schema's catalog: relations with owners, ACLs and RLS; columns with types and
/// defaults; constraints; indexes; triggers; policies; enum labels; functions with their
/// signatures, owners, ACLs, settings and bodies.
const CATALOG: &str = "select string_agg(line, E'\\n' order by line) from (
    select format('%s %s %s %s %s', relname, relkind, pg_get_userbyid(relowner), relacl, relrowsecurity)
    from pg_class where relnamespace = 'storage'::regnamespace
  union all
    select format('%s.%s %s %s %s', attrelid::regclass, attname, format_type(atttypid, atttypmod), attnotnull,
                  pg_get_expr(adbin, adrelid))
    from pg_attribute left join pg_attrdef on adrelid = attrelid and adnum = attnum
    where attrelid in (select oid from pg_class where relnamespace = 'storage'::regnamespace) and attnum > 0
      and not attisdropped
  union all
    select format('%s %s', conname, pg_get_constraintdef(oid)) from pg_constraint
    where connamespace = 'storage'::regnamespace
  union all
    select indexdef from pg_indexes where schemaname = 'storage'
  union all
    select pg_get_triggerdef(oid) from pg_trigger
    where tgrelid in (select oid from pg_class where relnamespace = 'storage'::regnamespace) and not tgisinternal
  union all
    select format('policy %s %s', polname, pg_get_expr(polqual, polrelid)) from pg_policy
    where polrelid in (select oid from pg_class where relnamespace = 'storage'::regnamespace)
  union all
    select format('enum %s', enumlabel) from pg_enum where enumtypid = 'storage.buckettype'::regtype
  union all
    select format('%s %s %s %s %s %s %s', oid::regprocedure, pg_get_userbyid(proowner), proacl, provolatile, prosecdef,
                  proconfig, md5(prosrc))
    from pg_proc where pronamespace = 'storage'::regnamespace
) as catalog (line)";

#[test]
fn migration_runs_again_harmlessly() {
    let server = TestServer::start();
    server.sql(PHOTOS);
    server.sql("create policy \"public photos\" on storage.objects for select using (bucket_id = 'photos')");
    let before = value(&server, CATALOG);
    for expected in [
        "objects r supabase_storage_admin",
        "storage.objects.path_tokens text[] f string_to_array(name, '/'::text)",
        "CREATE TRIGGER update_objects_updated_at BEFORE UPDATE ON storage.objects",
        "storage.search(text,text,integer,integer,integer,text,text,text) supabase_storage_admin",
        "storage.search_v2(text,text,integer,integer,text,text,text,text) supabase_storage_admin",
        "storage.list_objects_with_delimiter(text,text,text,integer,text,text,text) supabase_storage_admin",
        "policy public photos (bucket_id = 'photos'::text)",
    ] {
        assert!(before.contains(expected), "{expected} not in\n{before}");
    }
    let listing = search(&server, "'', 'photos'");
    server.sql(MIGRATION);
    server.sql(MIGRATION);
    assert_eq!(value(&server, CATALOG), before);
    assert_eq!(search(&server, "'', 'photos'"), listing);
    assert_eq!(value(&server, "select count(*) from storage.objects"), "8");
    assert_eq!(value(&server, "select count(*) from _madbase.migrations where version = 10"), "1");
}

/// Storage's schema as an older Supabase Storage left it: fewer bucket and object columns, the
/// since-dropped `level` column, a bucket type without VECTOR, the first signatures of the list
/// functions and `get_size_by_bucket`'s first result shape — and a policy on `foldername`.
const OLDER_SUPABASE: &str = "
set storage.allow_delete_query = 'true';
drop schema storage cascade;
create schema storage authorization supabase_storage_admin;
grant usage on schema storage to anon, authenticated, service_role;
create type storage.buckettype as enum ('STANDARD', 'ANALYTICS');
create table storage.buckets (
  id text not null primary key, name text not null, owner uuid,
  created_at timestamptz default now(), updated_at timestamptz default now(),
  public boolean default false, type storage.buckettype not null default 'STANDARD');
create unique index bname on storage.buckets (name);
create table storage.objects (
  id uuid not null default gen_random_uuid() primary key, bucket_id text references storage.buckets (id), name text,
  owner uuid, created_at timestamptz default now(), updated_at timestamptz default now(),
  last_accessed_at timestamptz default now(), metadata jsonb,
  path_tokens text[] generated always as (string_to_array(name, '/')) stored, level int);
create unique index bucketid_objname on storage.objects (bucket_id, name);
alter table storage.objects enable row level security;
alter table storage.buckets enable row level security;
grant all on storage.buckets, storage.objects to anon, authenticated, service_role;
create function storage.foldername(name text) returns text[] language plpgsql as
  $$ declare p text[] := string_to_array(name, '/'); begin return p[1 : array_length(p, 1) - 1]; end $$;
create function storage.search(prefix text, bucketname text, limits int default 100, levels int default 1,
    offsets int default 0)
  returns table (name text, id uuid, updated_at timestamptz, created_at timestamptz, last_accessed_at timestamptz, metadata jsonb)
  language sql as $$ select null::text, null::uuid, null::timestamptz, null::timestamptz, null::timestamptz, null::jsonb where false $$;
create function storage.list_objects_with_delimiter(bucket_id text, prefix_param text, delimiter_param text,
    max_keys integer default 100, start_after text default '', next_token text default '')
  returns table (name text, id uuid, metadata jsonb, updated_at timestamptz)
  language sql as $$ select null::text, null::uuid, null::jsonb, null::timestamptz where false $$;
create function storage.get_size_by_bucket() returns table (size bigint, bucket text)
  language sql as $$ select 0::bigint, ''::text where false $$;
create policy \"public folder\" on storage.objects for select to anon
  using (bucket_id = 'old' and (storage.foldername(name))[1] = 'public');
insert into storage.buckets (id, name, public) values ('old', 'old', true);
insert into storage.objects (bucket_id, name, metadata, level) values
  ('old', 'public/a.txt', '{\"size\": 3}', 2), ('old', 'private/b.txt', '{\"size\": 4}', 2), ('old', 'c.txt', '{\"size\": 5}', 1);
";

#[test]
fn migration_upgrades_an_older_supabase_storage_schema() {
    let server = TestServer::start();
    server.sql(OLDER_SUPABASE);
    server.sql(MIGRATION);
    // Columns added after the existing ones; the old column and the rows stay.
    assert_eq!(
        value(&server, "select string_agg(attname, ',' order by attnum) from pg_attribute where attrelid = 'storage.buckets'::regclass and attnum > 0 and not attisdropped"),
        "id,name,owner,created_at,updated_at,public,type,avif_autodetection,file_size_limit,allowed_mime_types,owner_id"
    );
    assert_eq!(
        value(&server, "select string_agg(attname, ',' order by attnum) from pg_attribute where attrelid = 'storage.objects'::regclass and attnum > 0 and not attisdropped"),
        "id,bucket_id,name,owner,created_at,updated_at,last_accessed_at,metadata,path_tokens,level,version,owner_id,user_metadata"
    );
    assert_eq!(
        value(&server, "select string_agg(enumlabel, ',' order by enumsortorder) from pg_enum where enumtypid = 'storage.buckettype'::regtype"),
        "STANDARD,ANALYTICS,VECTOR"
    );
    // One signature each, so calls with the old argument counts are not ambiguous.
    assert_eq!(
        lines(&server, "select oid::regprocedure::text from pg_proc where pronamespace = 'storage'::regnamespace and proname in ('search', 'list_objects_with_delimiter', 'get_size_by_bucket') order by 1"),
        [
            "storage.get_size_by_bucket()",
            "storage.list_objects_with_delimiter(text,text,text,integer,text,text,text)",
            "storage.search(text,text,integer,integer,integer,text,text,text)",
        ]
    );
    assert_eq!(
        search(&server, "'', 'old', 100, 1, 0"),
        ["c.txt|false|false|false", "private|true|true|true", "public|true|true|true"]
    );
    assert_eq!(
        value(
            &server,
            "select string_agg(name, ',') from storage.list_objects_with_delimiter('old', '', '/', 100, '', '')"
        ),
        "c.txt,private,public"
    );
    assert_eq!(value(&server, "select bucket_id || '=' || size from storage.get_size_by_bucket()"), "old=12");
    // The policy on foldername still holds.
    let anon = run_batches(&server, &[as_caller("anon", None, "select string_agg(name, ',') from storage.objects")]);
    assert_eq!(lines_of(anon[0].as_ref().expect("anon reads")), ["public/a.txt"]);
    // And it settles: a further run changes nothing.
    let settled = value(&server, CATALOG);
    server.sql(MIGRATION);
    assert_eq!(value(&server, CATALOG), settled);
}
