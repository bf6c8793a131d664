//! Rebuilds the crate when a migration changes: `sqlx::migrate!` embeds them at
//! compile time but does not tell cargo to watch them. Lists the bundled flags
//! (`data/avatars/flags/*.svg`) for the avatars service to embed.

use std::fmt::Write as _;

fn main() {
    println!("cargo:rerun-if-changed=migrations");
    println!("cargo:rerun-if-changed=data/avatars/flags");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/avatars/flags");
    let mut codes: Vec<String> = std::fs::read_dir(&dir)
        .expect("data/avatars/flags is readable")
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            let code = name.strip_suffix(".svg")?;
            (code.len() == 2 && code.bytes().all(|b| b.is_ascii_lowercase()))
                .then(|| code.to_string())
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
    let out = std::path::Path::new(&std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"))
        .join("flags.rs");
    std::fs::write(out, list).expect("OUT_DIR is writable");
}
