// `sqlx::migrate!` embeds migrations/ at compile time but does not tell cargo
// to watch the folder, so a new migration file was silently left out of an
// incremental build (its tests then ran against the old schema).
fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
