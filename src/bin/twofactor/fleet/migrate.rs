//! The fleet schema's migrations: every `sql/NNN_*.sql`, embedded in this
//! binary and listed here in one place. `twofactor fleet init` applies
//! the ones above the database's `twofactor.schema_version`, in order, in
//! one transaction.

/// One migration file.
pub struct Migration {
    /// The number the file name starts with; `schema_version` after it.
    pub version: i32,
    /// The file name under `sql/`.
    pub name: &'static str,
    pub sql: &'static str,
}

/// Every migration, oldest first (a new file goes at the end).
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "001_init.sql",
        sql: include_str!("../../../../sql/001_init.sql"),
    },
    Migration {
        version: 2,
        name: "002_login_calls_plpgsql.sql",
        sql: include_str!("../../../../sql/002_login_calls_plpgsql.sql"),
    },
];

/// The schema version this binary's newest migration leaves.
pub fn newest() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// The migrations a database at `applied` still needs, oldest first
/// (none when it is at or beyond this binary's newest).
pub fn pending(applied: i32) -> &'static [Migration] {
    let first = MIGRATIONS
        .iter()
        .position(|m| m.version > applied)
        .unwrap_or(MIGRATIONS.len());
    &MIGRATIONS[first..]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The list runs 1, 2, 3… with no gap, each file named by its number.
    #[test]
    fn migrations_are_numbered_in_order_by_their_file_names() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i32::try_from(i).unwrap() + 1, "{}", m.name);
            assert_eq!(m.name, format!("{:03}_{}", m.version, &m.name[4..]));
            assert!(m.name.ends_with(".sql") && m.name.as_bytes()[3] == b'_');
            assert!(!m.sql.trim().is_empty(), "{}", m.name);
        }
        assert_eq!(newest(), i32::try_from(MIGRATIONS.len()).unwrap());
    }

    /// A new database gets every file; an up-to-date or newer one none;
    /// one in between gets the rest.
    #[test]
    fn only_migrations_above_the_applied_version_are_pending() {
        assert_eq!(pending(0).len(), MIGRATIONS.len());
        assert_eq!(pending(-1).len(), MIGRATIONS.len());
        assert!(pending(newest()).is_empty());
        assert!(pending(newest() + 5).is_empty());
        for applied in 0..newest() {
            let rest = pending(applied);
            assert_eq!(rest.first().map(|m| m.version), Some(applied + 1));
            assert_eq!(rest.len(), usize::try_from(newest() - applied).unwrap());
        }
    }

    /// Every file under sql/ is in the list (none forgotten).
    #[test]
    fn every_sql_file_is_listed() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sql");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".sql"))
            .collect();
        files.sort();
        let listed: Vec<&str> = MIGRATIONS.iter().map(|m| m.name).collect();
        assert_eq!(files, listed);
    }
}
