//! Rebuilds the crate when a migration changes: `sqlx::migrate!` embeds them at
//! compile time but does not tell cargo to watch them. Lists the bundled images
//! of the avatars service (`data/avatars/{flags,browsers,credit-cards}/*.svg`) for
//! it to embed, one sorted table per set. Lists the console's files (`console/`,
//! its browser tests and notes aside) with a digest of them all, which names the
//! folder they are served from so that browsers may cache them for good.

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
    embed_console(&out_dir);
}

/// Writes `OUT_DIR/console_assets.rs` (`&[(name, bytes)]` of every file under
/// `console/` that a page loads: scripts, styles and images, the browser
/// tests aside, sorted by name),
/// `OUT_DIR/console_version.txt` (a digest of them) and `OUT_DIR/console_index.html`
/// (the page, with `{{ASSETS}}` replaced by `/console/assets/VERSION`).
fn embed_console(out_dir: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("console");
    let mut files = Vec::new();
    collect_console(&root, "", &mut files);
    files.sort();
    // File by file: a directory would be scanned whole, `console/tests/node_modules`
    // included, and installing the browser tests would rebuild the server.
    println!("cargo:rerun-if-changed=console/index.html");
    for name in &files {
        println!("cargo:rerun-if-changed=console/{name}");
    }
    // FNV-1a over names and contents: enough to tell one set of files from the next.
    let mut digest: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for byte in bytes {
            digest ^= u64::from(*byte);
            digest = digest.wrapping_mul(0x0100_0000_01b3);
        }
    };
    let mut list = String::from("&[\n");
    for name in &files {
        let path = root.join(name);
        eat(name.as_bytes());
        eat(&std::fs::read(&path).unwrap_or_else(|err| panic!("console/{name}: {err}")));
        writeln!(
            list,
            "    ({name:?}, include_bytes!({:?})),",
            path.display().to_string()
        )
        .expect("writing to a string");
    }
    list.push(']');
    let version = format!("{digest:016x}");
    let page = std::fs::read_to_string(root.join("index.html")).expect("console/index.html");
    let page = page.replace("{{ASSETS}}", &format!("/console/assets/{version}"));
    let out = Path::new(out_dir);
    std::fs::write(out.join("console_assets.rs"), list).expect("OUT_DIR is writable");
    std::fs::write(out.join("console_version.txt"), version).expect("OUT_DIR is writable");
    std::fs::write(out.join("console_index.html"), page).expect("OUT_DIR is writable");
}

/// The files under `console/{prefix}` that the console serves, as names relative
/// to `console/`: lowercase letters, digits, `.`, `-`, `_` and `/` only.
fn collect_console(root: &Path, prefix: &str, files: &mut Vec<String>) {
    let dir = root.join(prefix);
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|err| panic!("{}: {err}", dir.display()));
    for entry in entries {
        let entry = entry.expect("a readable directory entry");
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let relative = format!("{prefix}{name}");
        let kind = entry.file_type().expect("a file type");
        if kind.is_dir() {
            if relative != "tests" && name != "node_modules" {
                collect_console(root, &format!("{relative}/"), files);
            }
        } else if relative != "index.html"
            && [".js", ".css", ".svg"]
                .iter()
                .any(|ext| name.ends_with(ext))
            && relative.bytes().all(|b| {
                b.is_ascii_lowercase()
                    || b.is_ascii_digit()
                    || matches!(b, b'.' | b'-' | b'_' | b'/')
            })
        {
            files.push(relative);
        }
    }
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
