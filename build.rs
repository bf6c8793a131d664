//! Rebuilds the crate when a migration changes: `sqlx::migrate!` embeds them at
//! compile time but does not tell cargo to watch them. Lists the bundled images
//! of the avatars service (`data/avatars/{flags,browsers,credit-cards}/*.svg`) for
//! it to embed, one sorted table per set.

use std::fmt::Write as _;
use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=migrations");
    let out_dir = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    // Flags are named by their two-letter code; icons by Appwrite's codes
    // (`ch`, `union-china-pay`).
    let flag = |code: &str| code.len() == 2 && code.bytes().all(|b| b.is_ascii_lowercase());
    let icon = |code: &str| {
        !code.is_empty()
            && code.len() <= 32
            && code.bytes().all(|b| b.is_ascii_lowercase() || b == b'-')
    };
    embed("flags", &out_dir, flag);
    embed("browsers", &out_dir, icon);
    embed("credit-cards", &out_dir, icon);
}

/// Writes `OUT_DIR/{set}.rs`: `&[(code, bytes)]` of `data/avatars/{set}/*.svg`,
/// sorted by code, for `include!`.
fn embed(set: &str, out_dir: &str, valid: impl Fn(&str) -> bool) {
    let relative = format!("data/avatars/{set}");
    println!("cargo:rerun-if-changed={relative}");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(&relative);
    let mut codes: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("{relative} is readable: {err}"))
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            let code = name.strip_suffix(".svg")?;
            valid(code).then(|| code.to_string())
        })
        .collect();
    codes.sort();
    let mut list = String::from("&[\n");
    for code in codes {
        let path = dir.join(format!("{code}.svg"));
        writeln!(
            list,
            "    ({code:?}, include_bytes!({:?})),",
            path.display().to_string()
        )
        .expect("writing to a string");
    }
    list.push(']');
    std::fs::write(Path::new(out_dir).join(format!("{set}.rs")), list)
        .expect("OUT_DIR is writable");
}
