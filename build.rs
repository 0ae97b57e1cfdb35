//! Rebuilds the crate when a migration changes: `embed_migrations!` reads `migrations/` at
//! compile time, and cargo does not know it, so an incremental build after adding a migration
//! kept embedding the old set (`tend::migrate` then silently skipped the new one).
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
