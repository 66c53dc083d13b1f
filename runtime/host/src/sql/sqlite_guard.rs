//! SQLite stays inside its file.
//!
//! Every pooled SQLite connection gets, right after sqlx opened it (and ran
//! its own set-up PRAGMAs):
//!
//! - an authorizer ([`decide`]) that allows what a sink needs on its own
//!   file (tables, indexes, views, triggers, reads and writes,
//!   transactions, ordinary functions, recursive queries, the read-only
//!   PRAGMAs of [`SCHEMA_PRAGMAS`] and [`READ_PRAGMAS`]) and denies
//!   everything else: `ATTACH`, `DETACH`, virtual tables, `load_extension`,
//!   and every PRAGMA that changes files or settings;
//! - `SQLITE_LIMIT_ATTACHED` 0, so no other file can be attached by any
//!   route (this is also what stops `VACUUM INTO`, which SQLite does not
//!   pass to the authorizer but runs as an internal `ATTACH`);
//! - `SQLITE_LIMIT_LENGTH` no larger than the sink's result cap, so one
//!   cell (e.g. `randomblob(400000000)`) cannot be materialized past it;
//! - `SQLITE_DBCONFIG_DEFENSIVE` on, trusted schema and extension loading
//!   off.
//!
//! The unsafe FFI is confined to [`install`]; [`decide`] is plain Rust.

#![allow(unsafe_code)]

use std::ffi::{CStr, c_char, c_int, c_void};
use std::ptr::NonNull;

use libsqlite3_sys as ffi;

/// PRAGMAs that describe the schema; their argument is a table or index
/// name, never a new value.
pub(crate) const SCHEMA_PRAGMAS: &[&str] = &[
    "table_info",
    "table_xinfo",
    "table_list",
    "index_list",
    "index_info",
    "index_xinfo",
    "foreign_key_list",
    "foreign_key_check",
    "quick_check",
    "integrity_check",
];

/// PRAGMAs that read a setting; allowed only without an argument (with one
/// they would change it).
pub(crate) const READ_PRAGMAS: &[&str] = &[
    "user_version",
    "application_id",
    "schema_version",
    "data_version",
    "page_size",
    "page_count",
    "freelist_count",
    "encoding",
    "foreign_keys",
    "journal_mode",
    "collation_list",
    "function_list",
];

/// SQL functions a sink may not call: loading code into the process, and
/// the FTS3 tokenizer registration that takes a raw pointer.
pub(crate) const DENIED_FUNCTIONS: &[&str] = &["load_extension", "fts3_tokenizer"];

/// The authorizer's verdict for one action (`SQLITE_OK` or `SQLITE_DENY`).
/// `arg1` and `arg2` are the action's first two details (for a PRAGMA: its
/// name and its argument; for a function: `NULL` and its name).
pub(crate) fn decide(action: c_int, arg1: Option<&str>, arg2: Option<&str>) -> c_int {
    let allowed = match action {
        ffi::SQLITE_CREATE_INDEX
        | ffi::SQLITE_CREATE_TABLE
        | ffi::SQLITE_CREATE_TEMP_INDEX
        | ffi::SQLITE_CREATE_TEMP_TABLE
        | ffi::SQLITE_CREATE_TEMP_TRIGGER
        | ffi::SQLITE_CREATE_TEMP_VIEW
        | ffi::SQLITE_CREATE_TRIGGER
        | ffi::SQLITE_CREATE_VIEW
        | ffi::SQLITE_DELETE
        | ffi::SQLITE_DROP_INDEX
        | ffi::SQLITE_DROP_TABLE
        | ffi::SQLITE_DROP_TEMP_INDEX
        | ffi::SQLITE_DROP_TEMP_TABLE
        | ffi::SQLITE_DROP_TEMP_TRIGGER
        | ffi::SQLITE_DROP_TEMP_VIEW
        | ffi::SQLITE_DROP_TRIGGER
        | ffi::SQLITE_DROP_VIEW
        | ffi::SQLITE_INSERT
        | ffi::SQLITE_READ
        | ffi::SQLITE_SELECT
        | ffi::SQLITE_TRANSACTION
        | ffi::SQLITE_UPDATE
        | ffi::SQLITE_ALTER_TABLE
        | ffi::SQLITE_REINDEX
        | ffi::SQLITE_ANALYZE
        | ffi::SQLITE_SAVEPOINT
        | ffi::SQLITE_RECURSIVE => true,
        ffi::SQLITE_FUNCTION => arg2.is_some_and(|name| {
            !DENIED_FUNCTIONS
                .iter()
                .any(|d| d.eq_ignore_ascii_case(name))
        }),
        ffi::SQLITE_PRAGMA => arg1.is_some_and(|name| {
            let is = |list: &[&str]| list.iter().any(|p| p.eq_ignore_ascii_case(name));
            is(SCHEMA_PRAGMAS) || (is(READ_PRAGMAS) && arg2.is_none())
        }),
        // ATTACH, DETACH, CREATE/DROP VTABLE, and any code SQLite adds later.
        _ => false,
    };
    if allowed {
        ffi::SQLITE_OK
    } else {
        ffi::SQLITE_DENY
    }
}

/// The C callback around [`decide`].
extern "C" fn authorize(
    _user: *mut c_void,
    action: c_int,
    arg1: *const c_char,
    arg2: *const c_char,
    _database: *const c_char,
    _trigger: *const c_char,
) -> c_int {
    // SAFETY: SQLite passes either NULL or a NUL-terminated string that
    // stays valid for the duration of this call; nothing keeps a reference.
    let text = |p: *const c_char| {
        if p.is_null() {
            None
        } else {
            unsafe { CStr::from_ptr(p) }.to_str().ok()
        }
    };
    // A panic must not unwind into C; deny if anything goes wrong.
    std::panic::catch_unwind(|| decide(action, text(arg1), text(arg2))).unwrap_or(ffi::SQLITE_DENY)
}

/// Installs the authorizer, the limits and the defensive settings on one
/// connection. `max_length` is the largest string or blob (cell) the
/// connection may produce or store.
///
/// `db` must be the handle of a live connection that no other thread uses
/// during the call: sqlx's `LockedSqliteHandle::as_raw_handle` guarantees
/// that while the lock is held.
pub fn install(db: NonNull<ffi::sqlite3>, max_length: usize) -> Result<(), String> {
    let db = db.as_ptr();
    let length = c_int::try_from(max_length).unwrap_or(c_int::MAX).max(1);
    let mut failed = Vec::new();
    // SAFETY: `db` is a live, locked connection (see above). The authorizer
    // is a plain function with no user data (NULL), so there is nothing to
    // keep alive or free. `sqlite3_limit` and `sqlite3_db_config` with these
    // documented verbs only set integers on the connection; the variadic
    // `sqlite3_db_config` gets the (int, int*) pair these verbs expect.
    unsafe {
        if ffi::sqlite3_set_authorizer(db, Some(authorize), std::ptr::null_mut()) != ffi::SQLITE_OK
        {
            failed.push("authorizer");
        }
        ffi::sqlite3_limit(db, ffi::SQLITE_LIMIT_ATTACHED, 0);
        ffi::sqlite3_limit(db, ffi::SQLITE_LIMIT_LENGTH, length);
        for (verb, value, what) in [
            (ffi::SQLITE_DBCONFIG_DEFENSIVE, 1, "defensive"),
            (ffi::SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, "trusted_schema"),
            (
                ffi::SQLITE_DBCONFIG_ENABLE_LOAD_EXTENSION,
                0,
                "load_extension",
            ),
        ] {
            let mut now: c_int = -1;
            let rc = ffi::sqlite3_db_config(db, verb, value as c_int, &mut now as *mut c_int);
            if rc != ffi::SQLITE_OK || now != value {
                failed.push(what);
            }
        }
        if ffi::sqlite3_limit(db, ffi::SQLITE_LIMIT_ATTACHED, -1) != 0 {
            failed.push("attached limit");
        }
        if ffi::sqlite3_limit(db, ffi::SQLITE_LIMIT_LENGTH, -1) > length {
            failed.push("length limit");
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "cannot restrict the SQLite connection: {} not set",
            failed.join(", ")
        ))
    }
}

/// True when the connection is inside a transaction (not in autocommit
/// mode). Same contract on `db` as [`install`].
pub(crate) fn in_transaction(db: NonNull<ffi::sqlite3>) -> bool {
    // SAFETY: `db` is a live, locked connection (see `install`);
    // `sqlite3_get_autocommit` only reads a flag of it.
    unsafe { ffi::sqlite3_get_autocommit(db.as_ptr()) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denies_by_default_and_allows_the_list() {
        let ok = ffi::SQLITE_OK;
        let deny = ffi::SQLITE_DENY;
        assert_eq!(decide(ffi::SQLITE_ATTACH, Some("/etc/x"), None), deny);
        assert_eq!(decide(ffi::SQLITE_DETACH, Some("main"), None), deny);
        assert_eq!(
            decide(ffi::SQLITE_CREATE_VTABLE, Some("t"), Some("fts5")),
            deny
        );
        assert_eq!(decide(9999, None, None), deny, "unknown codes are denied");
        assert_eq!(
            decide(ffi::SQLITE_FUNCTION, None, Some("load_extension")),
            deny
        );
        assert_eq!(
            decide(ffi::SQLITE_FUNCTION, None, Some("LOAD_EXTENSION")),
            deny
        );
        assert_eq!(decide(ffi::SQLITE_FUNCTION, None, Some("upper")), ok);
        assert_eq!(
            decide(ffi::SQLITE_PRAGMA, Some("table_xinfo"), Some("t")),
            ok
        );
        assert_eq!(decide(ffi::SQLITE_PRAGMA, Some("user_version"), None), ok);
        assert_eq!(
            decide(ffi::SQLITE_PRAGMA, Some("user_version"), Some("7")),
            deny
        );
        assert_eq!(
            decide(ffi::SQLITE_PRAGMA, Some("journal_mode"), Some("off")),
            deny
        );
        assert_eq!(
            decide(ffi::SQLITE_PRAGMA, Some("temp_store_directory"), None),
            deny
        );
        assert_eq!(
            decide(ffi::SQLITE_PRAGMA, Some("database_list"), None),
            deny
        );
        assert_eq!(decide(ffi::SQLITE_INSERT, Some("t"), None), ok);
        assert_eq!(decide(ffi::SQLITE_RECURSIVE, None, None), ok);
    }
}
