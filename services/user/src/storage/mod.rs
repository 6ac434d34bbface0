//! Profile storage: repository functions that run one statement each, on
//! the pool or inside a unit of work (`portico_common::db::Conn`), with
//! SQL written once for PostgreSQL and SQLite. The flows that combine them
//! in one transaction are in `accounts`.

pub mod profiles;

use portico_common::db;

/// Embedded migrations for both backends.
pub const MIGRATIONS: db::Migrations = db::Migrations {
    postgres: &[
        (
            1,
            "create users",
            include_str!("../../migrations/postgres/0001_create_users.sql"),
        ),
        (
            2,
            "profile fields and outbox",
            include_str!("../../migrations/postgres/0002_profile_fields_and_outbox.sql"),
        ),
        (
            3,
            "deliveries",
            include_str!("../../migrations/postgres/0003_deliveries.sql"),
        ),
        (
            4,
            "directory",
            include_str!("../../migrations/postgres/0004_directory.sql"),
        ),
        (
            5,
            "scrubbing",
            include_str!("../../migrations/postgres/0005_scrubbing.sql"),
        ),
    ],
    sqlite: &[
        (
            1,
            "create users",
            include_str!("../../migrations/sqlite/0001_create_users.sql"),
        ),
        (
            2,
            "profile fields and outbox",
            include_str!("../../migrations/sqlite/0002_profile_fields_and_outbox.sql"),
        ),
        (
            3,
            "deliveries",
            include_str!("../../migrations/sqlite/0003_deliveries.sql"),
        ),
        (
            4,
            "directory",
            include_str!("../../migrations/sqlite/0004_directory.sql"),
        ),
        (
            5,
            "scrubbing",
            include_str!("../../migrations/sqlite/0005_scrubbing.sql"),
        ),
    ],
};
