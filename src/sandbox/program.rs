//! Compiling a deployment and the stored form of its bytecode: a bundle that
//! starts with a format byte and the engine version, so a program written by
//! another format or engine is refused cleanly rather than misread.
//!
//! Layout (integers little-endian u32): `FORMAT`, engine version (u8 length +
//! bytes), entrypoint index, module count, then per module its name and its
//! QuickJS bytecode (each length-prefixed).

use std::collections::BTreeMap;
use std::ffi::CStr;
use std::sync::OnceLock;

use std::cell::RefCell;
use std::rc::Rc;

use rquickjs::loader::{ImportAttributes, Loader, Resolver};
use rquickjs::module::Declared;
use rquickjs::{Context, Ctx, Exception, Module, Runtime, WriteOptions};

use super::engine::{self, Worker};
use super::{CompileError, Program, Source};

const FORMAT: u8 = 1;

/// The engine's version: QuickJS bytecode only loads in the engine that wrote it.
pub(crate) fn engine_version() -> &'static str {
    static VERSION: OnceLock<String> = OnceLock::new();
    VERSION.get_or_init(|| {
        // SAFETY: JS_GetVersion returns a static NUL-terminated string.
        let v = unsafe { CStr::from_ptr(rquickjs::qjs::JS_GetVersion()) };
        format!("quickjs-ng {}", v.to_string_lossy())
    })
}

/// A program's modules, parsed from its bytes (borrowing them).
pub(crate) struct Bundle<'a> {
    pub entry: &'a str,
    pub modules: BTreeMap<&'a str, &'a [u8]>,
}

/// Why a stored program cannot be loaded.
pub(crate) const STALE: &str =
    "the deployment was compiled by another version of the server: deploy it again";

impl<'a> Bundle<'a> {
    pub fn parse(bytes: &'a [u8]) -> Result<Bundle<'a>, String> {
        let mut r = Reader { bytes, at: 0 };
        let bad = || STALE.to_string();
        if r.u8().ok_or_else(bad)? != FORMAT {
            return Err(bad());
        }
        let len = r.u8().ok_or_else(bad)? as usize;
        let version = r.take(len).ok_or_else(bad)?;
        if version != engine_version().as_bytes() {
            return Err(bad());
        }
        let entry = r.u32().ok_or_else(bad)? as usize;
        let count = r.u32().ok_or_else(bad)? as usize;
        let mut names = Vec::new();
        let mut modules = BTreeMap::new();
        for _ in 0..count {
            let len = r.u32().ok_or_else(bad)? as usize;
            let name = std::str::from_utf8(r.take(len).ok_or_else(bad)?).map_err(|_| bad())?;
            let len = r.u32().ok_or_else(bad)? as usize;
            let code = r.take(len).ok_or_else(bad)?;
            names.push(name);
            modules.insert(name, code);
        }
        if r.at != bytes.len() {
            return Err(bad());
        }
        let entry = *names.get(entry).ok_or_else(bad)?;
        Ok(Bundle { entry, modules })
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let out = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(out)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

fn write(entry: usize, modules: &[(String, Vec<u8>)]) -> Vec<u8> {
    let version = engine_version().as_bytes();
    let mut out = Vec::with_capacity(
        16 + version.len()
            + modules
                .iter()
                .map(|(n, c)| 8 + n.len() + c.len())
                .sum::<usize>(),
    );
    out.push(FORMAT);
    out.push(version.len() as u8);
    out.extend_from_slice(version);
    out.extend_from_slice(&(entry as u32).to_le_bytes());
    out.extend_from_slice(&(modules.len() as u32).to_le_bytes());
    for (name, code) in modules {
        out.extend_from_slice(&(name.len() as u32).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&(code.len() as u32).to_le_bytes());
        out.extend_from_slice(code);
    }
    out
}

/// A module's name as the deployment spells it, normalised: relative, `/`
/// separated, without `.` or `..` segments.
pub(crate) fn normalise(path: &str) -> Option<String> {
    if path.is_empty() || path.starts_with('/') || path.contains(['\\', '\0', '<']) {
        return None;
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => return None,
            p => parts.push(p),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// Resolves `specifier` imported from module `base`: only relative paths to the
/// deployment's own modules exist.
pub(crate) fn resolve(base: &str, specifier: &str) -> Result<String, String> {
    if !(specifier.starts_with("./") || specifier.starts_with("../")) {
        return Err(format!(
            "cannot import '{specifier}': only the deployment's own modules can be imported, by relative path (such as './lib.js'); bundle packages into the deployment"
        ));
    }
    let mut parts: Vec<&str> = base.split('/').collect();
    parts.pop();
    for part in specifier.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(format!(
                        "cannot import '{specifier}' from '{base}': it points outside the deployment"
                    ));
                }
            }
            p => parts.push(p),
        }
    }
    Ok(parts.join("/"))
}

/// How long top-level code may run while a deployment is checked.
const CHECK_CPU: std::time::Duration = std::time::Duration::from_secs(2);

pub(crate) fn compile(source: &Source) -> Result<Program, CompileError> {
    let error = |message: String, module: Option<&str>, line: Option<u32>| CompileError {
        message,
        module: module.map(str::to_string),
        line,
    };
    if source.modules.is_empty() {
        return Err(error("the deployment has no modules".into(), None, None));
    }
    let mut names = BTreeMap::new();
    for (name, text) in &source.modules {
        let normal = normalise(name).ok_or_else(|| {
            error(
                format!("'{name}' is not a relative module path inside the deployment"),
                Some(name),
                None,
            )
        })?;
        if names.insert(normal.clone(), text.as_str()).is_some() {
            return Err(error(
                format!("two modules are named '{normal}'"),
                Some(name),
                None,
            ));
        }
    }
    let entry = normalise(&source.entrypoint)
        .filter(|e| names.contains_key(e))
        .ok_or_else(|| {
            error(
                format!(
                    "the entrypoint '{}' is not one of the deployment's modules",
                    source.entrypoint
                ),
                None,
                None,
            )
        })?;

    let runtime =
        Runtime::new().map_err(|_| error("the engine could not start".into(), None, None))?;
    let limits = super::Limits::default();
    runtime.set_memory_limit(limits.memory);
    runtime.set_max_stack_size(limits.stack);
    // QuickJS resolves a module's imports when it is declared: imported modules
    // are declared (and their bytecode written) by the loader, from source.
    let sources: Rc<BTreeMap<String, String>> = Rc::new(
        names
            .iter()
            .map(|(n, t)| (n.clone(), t.to_string()))
            .collect(),
    );
    let written: Rc<RefCell<BTreeMap<String, Vec<u8>>>> = Rc::default();
    runtime.set_loader(
        SourceResolver(sources.clone()),
        SourceLoader {
            sources: sources.clone(),
            written: written.clone(),
        },
    );
    let context = Context::full(&runtime)
        .map_err(|_| error("the engine could not start".into(), None, None))?;
    let all: Vec<String> = names.keys().cloned().collect();
    context.with(|ctx| -> Result<(), CompileError> {
        for (name, text) in &names {
            if written.borrow().contains_key(name) {
                continue;
            }
            let module = Module::declare(ctx.clone(), name.as_str(), *text)
                .map_err(|e| syntax_error(&ctx, e, name, &all))?;
            let code = module
                .write(WriteOptions::default())
                .map_err(|_| error("the module could not be compiled".into(), Some(name), None))?;
            written.borrow_mut().insert(name.clone(), code);
        }
        Ok(())
    })?;
    drop(context);
    drop(runtime);
    let compiled: Vec<(String, Vec<u8>)> = written.take().into_iter().collect();
    let entry_index = compiled.iter().position(|(n, _)| *n == entry).unwrap_or(0);
    let bytes = write(entry_index, &compiled);

    // Linking and the entrypoint's default export are only known once the
    // modules are evaluated: do it once now, in a sandbox with no host, so a bad
    // import or a missing export is a deployment error rather than a failure of
    // every execution.
    let mut worker =
        Worker::new().map_err(|_| error("the engine could not start".into(), None, None))?;
    let check = super::Limits {
        cpu: CHECK_CPU,
        wall: CHECK_CPU,
        ..limits
    };
    worker
        .check(&bytes, &check)
        .map_err(|(message, module, line)| CompileError {
            message,
            module,
            line,
        })?;
    Ok(Program::from_bytes(bytes))
}

/// A compile error at its module and line (QuickJS puts `file:line:column` in the
/// stack of a syntax error; it may be in a module `module` imports).
fn syntax_error(
    ctx: &Ctx<'_>,
    error: rquickjs::Error,
    module: &str,
    all: &[String],
) -> CompileError {
    let caught = engine::caught(ctx, error);
    let stack = caught.stack.as_deref().unwrap_or("");
    let (module, line) = engine::locate(stack, all)
        .map(|(m, l)| (m, Some(l)))
        .unwrap_or_else(|| (module.to_string(), caught.line));
    CompileError {
        message: caught.message,
        module: Some(module),
        line,
    }
}

struct SourceResolver(Rc<BTreeMap<String, String>>);

impl Resolver for SourceResolver {
    fn resolve<'js>(
        &mut self,
        ctx: &Ctx<'js>,
        base: &str,
        name: &str,
        _attributes: Option<ImportAttributes<'js>>,
    ) -> rquickjs::Result<String> {
        match resolve(base, name) {
            Ok(resolved) if self.0.contains_key(&resolved) => Ok(resolved),
            Ok(resolved) => Err(Exception::throw_reference(
                ctx,
                &format!(
                    "cannot import '{name}' from '{base}': the deployment has no module '{resolved}'"
                ),
            )),
            Err(message) => Err(Exception::throw_reference(ctx, &message)),
        }
    }
}

struct SourceLoader {
    sources: Rc<BTreeMap<String, String>>,
    written: Rc<RefCell<BTreeMap<String, Vec<u8>>>>,
}

impl Loader for SourceLoader {
    fn load<'js>(
        &mut self,
        ctx: &Ctx<'js>,
        name: &str,
        _attributes: Option<ImportAttributes<'js>>,
    ) -> rquickjs::Result<Module<'js, Declared>> {
        let Some(text) = self.sources.get(name) else {
            return Err(Exception::throw_reference(
                ctx,
                &format!("the deployment has no module '{name}'"),
            ));
        };
        let module = Module::declare(ctx.clone(), name, text.as_str())?;
        let code = module.write(WriteOptions::default())?;
        self.written.borrow_mut().insert(name.to_string(), code);
        Ok(module)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_relative_imports_only() {
        assert_eq!(resolve("index.js", "./lib.js").unwrap(), "lib.js");
        assert_eq!(resolve("a/b.js", "../c.js").unwrap(), "c.js");
        assert_eq!(resolve("a/b.js", "./d/e.js").unwrap(), "a/d/e.js");
        assert!(resolve("index.js", "../x.js").is_err());
        assert!(resolve("index.js", "fs").is_err());
        assert!(resolve("index.js", "/etc/passwd").is_err());
        assert_eq!(normalise("./src//index.js").unwrap(), "src/index.js");
        assert!(normalise("../x.js").is_none());
        assert!(normalise("/x.js").is_none());
    }

    #[test]
    fn refuses_bundles_of_another_format() {
        assert!(Bundle::parse(&[]).is_err());
        assert!(Bundle::parse(&[0, 1, 2, 3]).is_err());
        let good = write(0, &[("index.js".into(), vec![1, 2, 3])]);
        let parsed = Bundle::parse(&good).unwrap();
        assert_eq!(parsed.entry, "index.js");
        let mut other = good.clone();
        other[0] = FORMAT + 1;
        assert_eq!(Bundle::parse(&other).err().unwrap(), STALE);
        let mut truncated = good.clone();
        truncated.pop();
        assert!(Bundle::parse(&truncated).is_err());
        let mut other_engine = good;
        other_engine[3] ^= 1;
        assert!(Bundle::parse(&other_engine).is_err());
    }
}
