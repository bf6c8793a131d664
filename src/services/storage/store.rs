//! SQL of buckets, files, file permissions and upload chunks.

use std::collections::HashMap;

use sqlx::any::AnyRow;

use crate::db::columns::{corrupt, json, text};
use sqlx::{Any, AnyConnection, AnyPool, Executor, QueryBuilder, Row as _};

use crate::auth::permissions::{Action, Permission, RoleSet, parse_permissions, permission_rows};
use crate::db::{Dialect, Page};
use crate::files::{Compression, Encoding};

use super::{Bucket, FileStatus, StoredFile};

fn compression_from(row: &AnyRow) -> Result<Compression, sqlx::Error> {
    let stored: String = row.try_get("compression")?;
    stored
        .parse()
        .map_err(|_| corrupt("compression", stored.as_str()))
}

const BUCKET_COLUMNS: &str = "project_id, id, name, enabled, file_security, permissions, \
     maximum_file_size, allowed_file_extensions, compression, encryption, antivirus, \
     transformations, created_at, updated_at";

fn bucket_from(row: &AnyRow) -> Result<Bucket, sqlx::Error> {
    let permissions: Vec<String> =
        serde_json::from_str(&text(row, "permissions")?).map_err(|e| corrupt("permissions", e))?;
    Ok(Bucket {
        project_id: row.try_get("project_id")?,
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        enabled: row.try_get::<i16, _>("enabled")? != 0,
        file_security: row.try_get::<i16, _>("file_security")? != 0,
        permissions: parse_permissions(&permissions).map_err(|e| corrupt("permissions", e))?,
        maximum_file_size: row.try_get::<i64, _>("maximum_file_size")?.max(0) as u64,
        allowed_file_extensions: serde_json::from_str(&text(row, "allowed_file_extensions")?)
            .map_err(|e| corrupt("extensions", e))?,
        compression: compression_from(row)?,
        encryption: row.try_get::<i16, _>("encryption")? != 0,
        antivirus: row.try_get::<i16, _>("antivirus")? != 0,
        transformations: row.try_get::<i16, _>("transformations")? != 0,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn permission_strings(permissions: &[Permission]) -> Vec<String> {
    permissions.iter().map(|p| p.to_string()).collect()
}

pub async fn insert_bucket(conn: &mut AnyConnection, b: &Bucket) -> Result<(), sqlx::Error> {
    sqlx::query(&format!(
        "INSERT INTO storage_buckets ({BUCKET_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    ))
    .bind(&b.project_id)
    .bind(&b.id)
    .bind(&b.name)
    .bind(i16::from(b.enabled))
    .bind(i16::from(b.file_security))
    .bind(json(&permission_strings(&b.permissions)))
    .bind(b.maximum_file_size as i64)
    .bind(json(&b.allowed_file_extensions))
    .bind(b.compression.as_str())
    .bind(i16::from(b.encryption))
    .bind(i16::from(b.antivirus))
    .bind(i16::from(b.transformations))
    .bind(b.created_at)
    .bind(b.updated_at)
    .execute(conn)
    .await
    .map(|_| ())
}

/// Writes every setting of `b`; false when it no longer exists.
pub async fn update_bucket(conn: &mut AnyConnection, b: &Bucket) -> Result<bool, sqlx::Error> {
    sqlx::query(
        "UPDATE storage_buckets SET name = ?, enabled = ?, file_security = ?, permissions = ?, \
         maximum_file_size = ?, allowed_file_extensions = ?, compression = ?, encryption = ?, \
         antivirus = ?, transformations = ?, updated_at = ? WHERE project_id = ? AND id = ?",
    )
    .bind(&b.name)
    .bind(i16::from(b.enabled))
    .bind(i16::from(b.file_security))
    .bind(json(&permission_strings(&b.permissions)))
    .bind(b.maximum_file_size as i64)
    .bind(json(&b.allowed_file_extensions))
    .bind(b.compression.as_str())
    .bind(i16::from(b.encryption))
    .bind(i16::from(b.antivirus))
    .bind(i16::from(b.transformations))
    .bind(b.updated_at)
    .bind(&b.project_id)
    .bind(&b.id)
    .execute(conn)
    .await
    .map(|r| r.rows_affected() == 1)
}

pub async fn find_bucket(
    pool: &AnyPool,
    project_id: &str,
    id: &str,
) -> Result<Option<Bucket>, sqlx::Error> {
    sqlx::query(&format!(
        "SELECT {BUCKET_COLUMNS} FROM storage_buckets WHERE project_id = ? AND id = ?"
    ))
    .bind(project_id)
    .bind(id)
    .fetch_optional(pool)
    .await?
    .as_ref()
    .map(bucket_from)
    .transpose()
}

pub async fn list_buckets(
    pool: &AnyPool,
    project_id: &str,
    page: &Page,
) -> Result<Vec<Bucket>, sqlx::Error> {
    let (keyset, binds) = page.keyset_sql("id");
    let sql = format!("SELECT {BUCKET_COLUMNS} FROM storage_buckets WHERE project_id = ?{keyset}");
    let rows = binds
        .iter()
        .fold(sqlx::query(&sql).bind(project_id), |q, b| q.bind(b))
        .fetch_all(pool)
        .await?;
    rows.iter().map(bucket_from).collect()
}

pub async fn count_buckets(pool: &AnyPool, project_id: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COUNT(*) FROM storage_buckets WHERE project_id = ?")
        .bind(project_id)
        .fetch_one(pool)
        .await
}

/// Deletes a bucket in the transaction open on `tx`; its files, their
/// permissions and upload chunks go with it (foreign keys). False when it did not
/// exist.
pub async fn delete_bucket(
    tx: &mut AnyConnection,
    project_id: &str,
    id: &str,
) -> Result<bool, sqlx::Error> {
    // Children first: MariaDB and SQLite both cascade, but explicit deletes keep a
    // large bucket's cascade from holding one statement's locks for long.
    for table in [
        "storage_upload_chunks",
        "storage_file_perms",
        "storage_files",
    ] {
        sqlx::query(&format!(
            "DELETE FROM {table} WHERE project_id = ? AND bucket_id = ?"
        ))
        .bind(project_id)
        .bind(id)
        .execute(&mut *tx)
        .await?;
    }
    let deleted = sqlx::query("DELETE FROM storage_buckets WHERE project_id = ? AND id = ?")
        .bind(project_id)
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected()
        == 1;
    Ok(deleted)
}

const FILE_COLUMNS: &str = "project_id, bucket_id, id, name, status, uploader, size, stored_size, \
     mime_type, checksum, compression, encryption_salt, chunk_size, chunks_total, chunks_uploaded, \
     created_at, updated_at";

fn file_from(row: &AnyRow) -> Result<StoredFile, sqlx::Error> {
    let status: String = row.try_get("status")?;
    let status = FileStatus::parse(&status).ok_or_else(|| corrupt("file status", &status))?;
    Ok(StoredFile {
        project_id: row.try_get("project_id")?,
        bucket_id: row.try_get("bucket_id")?,
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        status,
        uploader: row.try_get("uploader")?,
        size: row.try_get::<i64, _>("size")?.max(0) as u64,
        stored_size: row.try_get::<i64, _>("stored_size")?.max(0) as u64,
        mime_type: row.try_get("mime_type")?,
        checksum: row.try_get("checksum")?,
        encoding: Encoding {
            compression: compression_from(row)?,
            salt: row.try_get("encryption_salt")?,
        },
        chunk_size: row.try_get::<i64, _>("chunk_size")?.max(0) as u64,
        chunks_total: row.try_get::<i32, _>("chunks_total")?.max(0) as u32,
        chunks_uploaded: row.try_get::<i32, _>("chunks_uploaded")?.max(0) as u32,
        permissions: Vec::new(),
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// Claims a file id: inserts the row (status `uploading`) and its permissions.
/// A unique violation means the id is taken.
pub async fn insert_file(conn: &mut AnyConnection, f: &StoredFile) -> Result<(), sqlx::Error> {
    sqlx::query(&format!(
        "INSERT INTO storage_files ({FILE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    ))
    .bind(&f.project_id)
    .bind(&f.bucket_id)
    .bind(&f.id)
    .bind(&f.name)
    .bind(f.status.as_str())
    .bind(&f.uploader)
    .bind(f.size as i64)
    .bind(f.stored_size as i64)
    .bind(&f.mime_type)
    .bind(&f.checksum)
    .bind(f.encoding.compression.as_str())
    .bind(f.encoding.salt.as_deref())
    .bind(f.chunk_size as i64)
    .bind(f.chunks_total as i32)
    .bind(f.chunks_uploaded as i32)
    .bind(f.created_at)
    .bind(f.updated_at)
    .execute(&mut *conn)
    .await?;
    write_permissions(conn, f, false).await
}

async fn write_permissions(
    conn: &mut AnyConnection,
    f: &StoredFile,
    replace: bool,
) -> Result<(), sqlx::Error> {
    if replace {
        sqlx::query(
            "DELETE FROM storage_file_perms WHERE project_id = ? AND bucket_id = ? AND file_id = ?",
        )
        .bind(&f.project_id)
        .bind(&f.bucket_id)
        .bind(&f.id)
        .execute(&mut *conn)
        .await?;
    }
    let rows = permission_rows(&f.id, &f.permissions);
    if rows.is_empty() {
        return Ok(());
    }
    let mut builder = QueryBuilder::<Any>::new(
        "INSERT INTO storage_file_perms (project_id, bucket_id, file_id, action, role) ",
    );
    builder.push_values(rows, |mut b, (file_id, action, role)| {
        b.push_bind(f.project_id.clone())
            .push_bind(f.bucket_id.clone())
            .push_bind(file_id)
            .push_bind(action)
            .push_bind(role);
    });
    builder.build().execute(&mut *conn).await?;
    Ok(())
}

/// Moves the upload claimed as `f` (its `created_at`) from `uploading` to
/// `finishing`, before its file's object is written; false when that claim is no
/// longer an upload (deleted, swept, or finishing already).
pub async fn mark_finishing<'e>(
    db: impl Executor<'e, Database = Any>,
    f: &StoredFile,
    at: i64,
) -> Result<bool, sqlx::Error> {
    sqlx::query(
        "UPDATE storage_files SET status = 'finishing', updated_at = ? \
         WHERE project_id = ? AND bucket_id = ? AND id = ? AND status = 'uploading' AND created_at = ?",
    )
    .bind(at)
    .bind(&f.project_id)
    .bind(&f.bucket_id)
    .bind(&f.id)
    .bind(f.created_at)
    .execute(db)
    .await
    .map(|r| r.rows_affected() == 1)
}

/// Marks the upload claimed as `f`, finishing, complete with what was stored.
pub async fn mark_ready(conn: &mut AnyConnection, f: &StoredFile) -> Result<bool, sqlx::Error> {
    sqlx::query(
        "UPDATE storage_files SET status = 'ready', size = ?, stored_size = ?, mime_type = ?, \
         checksum = ?, compression = ?, encryption_salt = ?, chunks_uploaded = chunks_total, \
         updated_at = ? WHERE project_id = ? AND bucket_id = ? AND id = ? \
         AND status = 'finishing' AND created_at = ?",
    )
    .bind(f.size as i64)
    .bind(f.stored_size as i64)
    .bind(&f.mime_type)
    .bind(&f.checksum)
    .bind(f.encoding.compression.as_str())
    .bind(f.encoding.salt.as_deref())
    .bind(f.updated_at)
    .bind(&f.project_id)
    .bind(&f.bucket_id)
    .bind(&f.id)
    .bind(f.created_at)
    .execute(&mut *conn)
    .await
    .map(|r| r.rows_affected() == 1)
}

/// Renames a file and replaces its permissions.
/// Writes `f`'s name and permissions over the file as it was read (its claim,
/// `created_at`, and `read_at`, its `updated_at` then): false when it changed
/// since or is gone, so that permissions computed from an older copy never put
/// back a grant another write removed.
pub async fn update_file(
    conn: &mut AnyConnection,
    f: &StoredFile,
    read_at: i64,
) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query(
        "UPDATE storage_files SET name = ?, updated_at = ? \
         WHERE project_id = ? AND bucket_id = ? AND id = ? AND status = 'ready' \
         AND created_at = ? AND updated_at = ?",
    )
    .bind(&f.name)
    .bind(f.updated_at)
    .bind(&f.project_id)
    .bind(&f.bucket_id)
    .bind(&f.id)
    .bind(f.created_at)
    .bind(read_at)
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1;
    if updated {
        write_permissions(conn, f, true).await?;
    }
    Ok(updated)
}

/// Marks the file claimed as `f` (its `created_at`) `removing`, in the caller's
/// transaction on `conn`, only while it is still `f.status` and, when
/// `unchanged_before` is given, unchanged since then (the sweeper's view of it).
/// False when the row is no longer that: nothing was changed.
pub async fn mark_removing(
    conn: &mut AnyConnection,
    f: &StoredFile,
    unchanged_before: Option<i64>,
    at: i64,
) -> Result<bool, sqlx::Error> {
    let stale = if unchanged_before.is_some() {
        " AND updated_at < ?"
    } else {
        ""
    };
    let sql = format!(
        "UPDATE storage_files SET status = 'removing', updated_at = ? WHERE project_id = ? \
         AND bucket_id = ? AND id = ? AND status = ? AND created_at = ?{stale}"
    );
    let mut query = sqlx::query(&sql)
        .bind(at)
        .bind(&f.project_id)
        .bind(&f.bucket_id)
        .bind(&f.id)
        .bind(f.status.as_str())
        .bind(f.created_at);
    if let Some(before) = unchanged_before {
        query = query.bind(before);
    }
    query
        .execute(&mut *conn)
        .await
        .map(|r| r.rows_affected() == 1)
}

/// Deletes the row of the file claimed as `f`, once `removing`, with its
/// permissions and chunk rows; false when that claim's row is not there.
pub async fn delete_removed_file(
    conn: &mut AnyConnection,
    f: &StoredFile,
) -> Result<bool, sqlx::Error> {
    let deleted = sqlx::query(
        "DELETE FROM storage_files WHERE project_id = ? AND bucket_id = ? AND id = ? \
         AND status = 'removing' AND created_at = ?",
    )
    .bind(&f.project_id)
    .bind(&f.bucket_id)
    .bind(&f.id)
    .bind(f.created_at)
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1;
    if !deleted {
        return Ok(false);
    }
    // The foreign keys cascade; these say so where a connection does not enforce them.
    for table in ["storage_upload_chunks", "storage_file_perms"] {
        sqlx::query(&format!(
            "DELETE FROM {table} WHERE project_id = ? AND bucket_id = ? AND file_id = ?"
        ))
        .bind(&f.project_id)
        .bind(&f.bucket_id)
        .bind(&f.id)
        .execute(&mut *conn)
        .await?;
    }
    Ok(true)
}

/// A file with its permissions, whatever its status.
pub async fn find_file(
    pool: &AnyPool,
    project_id: &str,
    bucket_id: &str,
    id: &str,
) -> Result<Option<StoredFile>, sqlx::Error> {
    let Some(row) = sqlx::query(&format!(
        "SELECT {FILE_COLUMNS} FROM storage_files WHERE project_id = ? AND bucket_id = ? AND id = ?"
    ))
    .bind(project_id)
    .bind(bucket_id)
    .bind(id)
    .fetch_optional(pool)
    .await?
    else {
        return Ok(None);
    };
    let mut file = file_from(&row)?;
    let mut permissions = load_permissions(pool, project_id, bucket_id, &[id]).await?;
    file.permissions = permissions.remove(id).unwrap_or_default();
    Ok(Some(file))
}

async fn load_permissions(
    pool: &AnyPool,
    project_id: &str,
    bucket_id: &str,
    ids: &[&str],
) -> Result<HashMap<String, Vec<Permission>>, sqlx::Error> {
    let mut by_file: HashMap<String, Vec<Permission>> = HashMap::new();
    if ids.is_empty() {
        return Ok(by_file);
    }
    let mut builder = QueryBuilder::<Any>::new(
        "SELECT file_id, action, role FROM storage_file_perms WHERE project_id = ",
    );
    builder
        .push_bind(project_id.to_string())
        .push(" AND bucket_id = ")
        .push_bind(bucket_id.to_string())
        .push(" AND file_id IN (");
    let mut list = builder.separated(", ");
    for id in ids {
        list.push_bind(id.to_string());
    }
    list.push_unseparated(") ORDER BY file_id, action, role");
    for row in builder.build().fetch_all(pool).await? {
        let file_id: String = row.try_get("file_id")?;
        let action: String = row.try_get("action")?;
        let role: String = row.try_get("role")?;
        let permission = Permission::new(
            action.parse().map_err(|e| corrupt("file permissions", e))?,
            role.parse().map_err(|e| corrupt("file permissions", e))?,
        );
        by_file.entry(file_id).or_default().push(permission);
    }
    Ok(by_file)
}

/// Which files of a bucket a list may return.
pub struct FileListing<'a> {
    pub project_id: &'a str,
    pub bucket_id: &'a str,
    /// `Some(roles)`: only files whose own permissions let these roles read.
    pub readable_by: Option<&'a RoleSet>,
    /// A case-insensitive part of the name.
    pub search: Option<&'a str>,
    /// The MIME type starts with this.
    pub mime_type_prefix: Option<&'a str>,
}

/// Fewer `read` grants than this for the reader's roles in the bucket, and a
/// page of its files reads them first; more, and it walks the bucket's files
/// by id with a probe each (which fills a page quickly when the reader may read
/// that many). The same rule as the document lists (ADR 0017).
const PAGE_FROM_GRANTS_BELOW: i64 = 1000;

/// The same for the total: counting through the probe reads every file of the
/// bucket, so the grants are the cheaper side until they are many.
const COUNT_FROM_GRANTS_BELOW: i64 = 20_000;

/// Which side a file list reads first when the reader reads file by file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Drive {
    /// The bucket's files by id, each probed in `storage_file_perms`.
    Files,
    /// The reader's `read` grants in the bucket (the `storage_file_perms_role`
    /// index), each file looked up by its key.
    Grants,
}

/// How many `read` grants of the bucket name one of the reader's roles,
/// counted up to `cap` from the `(project_id, bucket_id, action, role,
/// file_id)` index alone; `None` for a reader who reads the whole bucket.
async fn count_grants(
    pool: &AnyPool,
    listing: &FileListing<'_>,
    cap: i64,
) -> Result<Option<i64>, sqlx::Error> {
    let Some(roles) = listing.readable_by else {
        return Ok(None);
    };
    let mut builder = QueryBuilder::<Any>::new(
        "SELECT COUNT(*) FROM (SELECT 1 FROM storage_file_perms WHERE project_id = ",
    );
    builder
        .push_bind(listing.project_id.to_string())
        .push(" AND bucket_id = ")
        .push_bind(listing.bucket_id.to_string())
        .push(" AND action = ")
        .push_bind(Action::Read.as_str())
        .push(" AND role IN (");
    let mut list = builder.separated(", ");
    for role in roles {
        list.push_bind(role.to_string());
    }
    list.push_unseparated(") LIMIT ");
    builder.push_bind(cap).push(") nimbus_grants");
    Ok(Some(builder.build_query_scalar().fetch_one(pool).await?))
}

fn drive(grants: Option<i64>, below: i64) -> Drive {
    match grants {
        Some(grants) if grants < below => Drive::Grants,
        _ => Drive::Files,
    }
}

/// ` FROM … WHERE …` of a file list: from the bucket's files with the
/// permission as a probe, or, driving from the grants, from the reader's
/// grants (each file once) joined to the files in that order.
fn push_listing_filter<'a>(
    builder: &mut QueryBuilder<'a, Any>,
    dialect: Dialect,
    listing: &FileListing<'_>,
    drive: Drive,
) {
    let readable_by = listing.readable_by.filter(|_| drive == Drive::Grants);
    if let Some(roles) = readable_by {
        builder
            .push(
                " FROM (SELECT DISTINCT p.file_id FROM storage_file_perms p \
                 WHERE p.project_id = ",
            )
            .push_bind(listing.project_id.to_string())
            .push(" AND p.bucket_id = ")
            .push_bind(listing.bucket_id.to_string())
            .push(" AND p.action = ")
            .push_bind(Action::Read.as_str())
            .push(" AND p.role IN (");
        let mut list = builder.separated(", ");
        for role in roles {
            list.push_bind(role.to_string());
        }
        list.push_unseparated(format_args!(
            ")) nimbus_reach {} storage_files f ON f.id = nimbus_reach.file_id",
            dialect.ordered_join()
        ));
    } else {
        builder.push(" FROM storage_files f");
    }
    builder
        .push(" WHERE f.project_id = ")
        .push_bind(listing.project_id.to_string())
        .push(" AND f.bucket_id = ")
        .push_bind(listing.bucket_id.to_string())
        .push(" AND f.status = 'ready'");
    if let (Some(roles), Drive::Files) = (listing.readable_by, drive) {
        builder
            .push(
                " AND EXISTS (SELECT 1 FROM storage_file_perms p WHERE p.project_id = f.project_id \
                 AND p.bucket_id = f.bucket_id AND p.file_id = f.id AND p.action = ",
            )
            .push_bind(Action::Read.as_str())
            .push(" AND p.role IN (");
        let mut list = builder.separated(", ");
        for role in roles {
            list.push_bind(role.to_string());
        }
        list.push_unseparated("))");
    }
    if let Some(search) = listing.search {
        builder
            .push(" AND LOWER(f.name) LIKE ")
            .push_bind(format!("%{}%", escape_like(&search.to_lowercase())))
            .push(" ESCAPE '!'");
    }
    if let Some(prefix) = listing.mime_type_prefix {
        builder
            .push(" AND f.mime_type LIKE ")
            .push_bind(format!("{}%", escape_like(prefix)))
            .push(" ESCAPE '!'");
    }
}

/// `%`, `_` and the escape character itself match only themselves.
fn escape_like(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '!') {
            escaped.push('!');
        }
        escaped.push(c);
    }
    escaped
}

/// A page of ready files, by id, with their permissions.
pub async fn list_files(
    pool: &AnyPool,
    dialect: Dialect,
    listing: &FileListing<'_>,
    page: &Page,
) -> Result<Vec<StoredFile>, sqlx::Error> {
    let grants = count_grants(pool, listing, PAGE_FROM_GRANTS_BELOW).await?;
    // The columns are those of `f`: the grants, when read first, give only ids.
    let mut builder = QueryBuilder::<Any>::new(format!("SELECT {FILE_COLUMNS}"));
    push_listing_filter(
        &mut builder,
        dialect,
        listing,
        drive(grants, PAGE_FROM_GRANTS_BELOW),
    );
    if let Some(after) = &page.after {
        builder.push(" AND f.id > ").push_bind(after.clone());
    }
    if let Some(before) = &page.before {
        builder.push(" AND f.id < ").push_bind(before.clone());
    }
    let direction = if page.from_end { "DESC" } else { "ASC" };
    builder.push(format_args!(
        " ORDER BY f.id {direction} LIMIT {}",
        page.limit + 1
    ));
    let rows = builder.build().fetch_all(pool).await?;
    let mut files = rows.iter().map(file_from).collect::<Result<Vec<_>, _>>()?;
    let ids: Vec<&str> = files.iter().map(|f| f.id.as_str()).collect();
    let mut permissions =
        load_permissions(pool, listing.project_id, listing.bucket_id, &ids).await?;
    for file in &mut files {
        file.permissions = permissions.remove(&file.id).unwrap_or_default();
    }
    Ok(files)
}

pub async fn count_files(
    pool: &AnyPool,
    dialect: Dialect,
    listing: &FileListing<'_>,
) -> Result<i64, sqlx::Error> {
    let grants = count_grants(pool, listing, COUNT_FROM_GRANTS_BELOW).await?;
    let mut builder = QueryBuilder::<Any>::new("SELECT COUNT(*)");
    push_listing_filter(
        &mut builder,
        dialect,
        listing,
        drive(grants, COUNT_FROM_GRANTS_BELOW),
    );
    builder.build_query_scalar().fetch_one(pool).await
}

/// A user's unfinished uploads, from their range of `storage_files_by_uploader`.
pub(crate) const PENDING_UPLOADS: &str = "SELECT size FROM storage_files \
     WHERE project_id = ? AND uploader = ? AND status = 'uploading'";

/// The announced sizes of up to `limit` unfinished resumable uploads of `uploader`
/// in a project.
pub async fn pending_upload_sizes(
    pool: &AnyPool,
    project_id: &str,
    uploader: &str,
    limit: u64,
) -> Result<Vec<u64>, sqlx::Error> {
    let rows = sqlx::query(&format!("{PENDING_UPLOADS} LIMIT {limit}"))
        .bind(project_id)
        .bind(uploader)
        .fetch_all(pool)
        .await?;
    rows.iter()
        .map(|row| row.try_get::<i64, _>("size").map(|size| size.max(0) as u64))
        .collect()
}

/// Files left behind, oldest first: uploads unchanged since `before`, and files
/// still finishing or being removed since `abandoned_before` (the request doing it
/// failed, or its server stopped).
pub async fn stale_files(
    pool: &AnyPool,
    before: i64,
    abandoned_before: i64,
    limit: i64,
) -> Result<Vec<StoredFile>, sqlx::Error> {
    let rows = sqlx::query(&format!(
        "SELECT {FILE_COLUMNS} FROM storage_files \
         WHERE (status = 'uploading' AND updated_at < ?) \
         OR (status IN ('finishing', 'removing') AND updated_at < ?) \
         ORDER BY updated_at LIMIT {limit}"
    ))
    .bind(before)
    .bind(abandoned_before)
    .fetch_all(pool)
    .await?;
    rows.iter().map(file_from).collect()
}

/// One received chunk of a resumable upload.
#[derive(Debug, Clone)]
pub struct Chunk {
    pub index: u32,
    pub object_key: String,
    pub size: u64,
}

/// Advances the upload claimed as `file` (its `created_at`), written in place, from
/// `index` chunks received to `index + 1`, in one statement: false (nothing
/// written) when another request got there first or the claim is gone.
pub async fn advance_upload(
    pool: &AnyPool,
    file: &StoredFile,
    index: u32,
    at: i64,
) -> Result<bool, sqlx::Error> {
    let advanced = sqlx::query(
        "UPDATE storage_files SET chunks_uploaded = ?, updated_at = ? WHERE project_id = ? \
         AND bucket_id = ? AND id = ? AND status = 'uploading' AND created_at = ? \
         AND chunks_uploaded = ?",
    )
    .bind(index as i32 + 1)
    .bind(at)
    .bind(&file.project_id)
    .bind(&file.bucket_id)
    .bind(&file.id)
    .bind(file.created_at)
    .bind(index as i32)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(advanced == 1)
}

/// Records chunk `index` of the upload claimed as `file` (its `created_at`) and
/// advances its count from `index` to `index + 1`; false (nothing written) when
/// another request got there first or the claim is gone.
pub async fn record_chunk(
    pool: &AnyPool,
    file: &StoredFile,
    chunk: &Chunk,
    at: i64,
) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let advanced = sqlx::query(
        "UPDATE storage_files SET chunks_uploaded = ?, updated_at = ? WHERE project_id = ? \
         AND bucket_id = ? AND id = ? AND status = 'uploading' AND created_at = ? \
         AND chunks_uploaded = ?",
    )
    .bind(chunk.index as i32 + 1)
    .bind(at)
    .bind(&file.project_id)
    .bind(&file.bucket_id)
    .bind(&file.id)
    .bind(file.created_at)
    .bind(chunk.index as i32)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if !advanced {
        return Ok(false);
    }
    sqlx::query(
        "INSERT INTO storage_upload_chunks (project_id, bucket_id, file_id, chunk_index, object_key, size) \
         VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(&file.project_id)
    .bind(&file.bucket_id)
    .bind(&file.id)
    .bind(chunk.index as i32)
    .bind(&chunk.object_key)
    .bind(chunk.size as i64)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(true)
}

/// The chunks received for a file, in order.
pub async fn chunks(pool: &AnyPool, file: &StoredFile) -> Result<Vec<Chunk>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT chunk_index, object_key, size FROM storage_upload_chunks \
         WHERE project_id = ? AND bucket_id = ? AND file_id = ? ORDER BY chunk_index",
    )
    .bind(&file.project_id)
    .bind(&file.bucket_id)
    .bind(&file.id)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(Chunk {
                index: row.try_get::<i32, _>("chunk_index")?.max(0) as u32,
                object_key: row.try_get("object_key")?,
                size: row.try_get::<i64, _>("size")?.max(0) as u64,
            })
        })
        .collect()
}

/// Where chunk `index` of a file was stored, when it was received.
pub async fn chunk_object_key(
    pool: &AnyPool,
    file: &StoredFile,
    index: u32,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT object_key FROM storage_upload_chunks \
         WHERE project_id = ? AND bucket_id = ? AND file_id = ? AND chunk_index = ?",
    )
    .bind(&file.project_id)
    .bind(&file.bucket_id)
    .bind(&file.id)
    .bind(index as i32)
    .fetch_optional(pool)
    .await
}

/// Forgets the chunk rows of an upload whose file is written; its row, finishing,
/// holds the id, so they are its own.
pub async fn forget_chunks<'e>(
    db: impl Executor<'e, Database = Any>,
    file: &StoredFile,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "DELETE FROM storage_upload_chunks WHERE project_id = ? AND bucket_id = ? AND file_id = ?",
    )
    .bind(&file.project_id)
    .bind(&file.bucket_id)
    .bind(&file.id)
    .execute(db)
    .await
    .map(|_| ())
}
