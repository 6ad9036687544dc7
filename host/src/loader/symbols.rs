//! Reads a file's dynamic symbol table *without loading it*: `dlopen` runs
//! a library's constructors, so only files exporting abi_stable's root
//! module symbol are ever opened.

use std::path::Path;

use object::{Object, ObjectKind, ObjectSymbol};

use super::errors::{Problem, ProblemKind};

/// Checks that `resolved` is a shared library exporting
/// [`kozmo_interface::host::ROOT_MODULE_SYMBOL`]; `shown` is the path named
/// in messages.
pub fn check_root_module_symbol(shown: &Path, resolved: &Path) -> Result<(), Problem> {
    let file = std::fs::File::open(resolved).map_err(|e| {
        Problem::file(
            ProblemKind::Unreadable,
            shown,
            format!("{}: cannot read the file: {e}", shown.display()),
        )
    })?;
    let cache = object::ReadCache::new(file);
    let obj = object::File::parse(&cache).map_err(|e| {
        Problem::file(
            ProblemKind::NotALibrary,
            shown,
            format!(
                "{}: not a shared library ({e}); remove it from the plugin directory",
                shown.display()
            ),
        )
    })?;
    if obj.kind() != ObjectKind::Dynamic {
        return Err(Problem::file(
            ProblemKind::NotALibrary,
            shown,
            format!(
                "{}: not a shared library (object kind {:?}); build the plugin as a cdylib",
                shown.display(),
                obj.kind()
            ),
        ));
    }
    if exports_root_module(&obj) {
        Ok(())
    } else {
        Err(Problem::file(
            ProblemKind::NoRootModule,
            shown,
            format!(
                "{}: no Kozmo root module (symbol {} not exported); build the plugin with kozmo_interface::export_plugins!",
                shown.display(),
                kozmo_interface::host::ROOT_MODULE_SYMBOL
            ),
        ))
    }
}

fn is_root_module_name(name: &[u8]) -> bool {
    let want = kozmo_interface::host::ROOT_MODULE_SYMBOL.as_bytes();
    // Mach-O prefixes C symbol names with an underscore.
    name == want || name.strip_prefix(b"_") == Some(want)
}

fn exports_root_module<'d, R: object::ReadRef<'d>>(obj: &object::File<'d, R>) -> bool {
    let in_dynsym = obj
        .dynamic_symbols()
        .any(|s| !s.is_undefined() && s.name_bytes().is_ok_and(is_root_module_name));
    in_dynsym
        || obj
            .exports()
            .is_ok_and(|e| e.iter().any(|e| is_root_module_name(e.name())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_bytes_are_not_a_library() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("junk.so");
        std::fs::write(&p, (0..4096u32).map(|i| (i * 7919 % 251) as u8).collect::<Vec<_>>()).unwrap();
        let e = check_root_module_symbol(&p, &p).unwrap_err();
        assert_eq!(e.kind, ProblemKind::NotALibrary);
        assert!(e.message.contains("junk.so"), "{}", e.message);
    }

    #[test]
    fn an_executable_without_the_symbol_is_refused() {
        let exe = std::env::current_exe().unwrap();
        let e = check_root_module_symbol(&exe, &exe).unwrap_err();
        assert!(
            matches!(e.kind, ProblemKind::NotALibrary | ProblemKind::NoRootModule),
            "{e:?}"
        );
    }
}
