//! The layout snapshot of ABI epoch 1: abi_stable's layout of the root
//! module and of every type it reaches, printed one type per block into
//! `interface/abi/v1.0.layout` when 1.0.0 was released, and compared with
//! the layout this source compiles to.
//!
//! The committed file is the released layout and is never rewritten. The
//! test fails when a released type changes in any way other than an
//! allowed append: a prefix type (the root module, a trait's vtable) may
//! gain fields after its released ones (and grow in size with them); new
//! types may appear (reached only through appended fields). A field
//! reordered, renamed, retyped or removed, a plain struct or enum that
//! changed, a function signature that changed: each is reported by name.
//!
//! `KOZMO_WRITE_LAYOUT=1` writes the snapshot only when the file does not
//! exist yet (the first release of a new epoch).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::fmt::Write as _;
use std::path::PathBuf;

use abi_stable::type_layout::{TLData, TypeLayout};
use abi_stable::StableAbi;
use kozmo_interface::ffi::v1::PluginModule_Ref;

/// One type of the snapshot: its header line (kind, size, alignment) and
/// one line per field.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TypeBlock {
    prefix: bool,
    header: String,
    fields: Vec<String>,
}

/// Names the types of one walk. abi_stable prints many types without
/// their type arguments (`RResult`, `RVec`, `PrefixRef<'a, VTable>`), so a
/// name alone is ambiguous: every type gets its printed name plus a short
/// hash of its structure (size, alignment, kind, each field's name and
/// type). Kozmo's own prefix types (the root module and the trait vtables,
/// uniquely named) are named without a hash and cut the hashing: their
/// growth by appended fields must not rename the types that point to them.
#[derive(Default)]
struct Names {
    done: HashMap<*const TypeLayout, String>,
    open: HashSet<*const TypeLayout>,
}

fn printed(t: &'static TypeLayout) -> String {
    format!("{}::{}", t.mod_path(), t.full_type())
}

fn is_kozmo_prefix(t: &'static TypeLayout) -> bool {
    t.is_prefix_kind() && printed(t).starts_with("kozmo_interface::")
}

fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl Names {
    fn key(&mut self, t: &'static TypeLayout) -> String {
        let ptr = t as *const TypeLayout;
        if let Some(k) = self.done.get(&ptr) {
            return k.clone();
        }
        if is_kozmo_prefix(t) || self.open.contains(&ptr) {
            return printed(t);
        }
        self.open.insert(ptr);
        let mut shape = format!("{}|{}|{}|{}", printed(t), t.size(), t.alignment(), kind(t).1);
        for (tag, f) in all_fields(t) {
            let _ = write!(shape, "|{tag}{}:{}", f.name(), self.key(f.layout()));
            for func in f.function_range().iter() {
                let _ = write!(shape, "|fn {}({})", func.name, func.param_names);
                for p in func.param_type_layouts.iter() {
                    let _ = write!(shape, ",{}", self.key(p()));
                }
                if let Some(ret) = func.return_type_layout() {
                    let _ = write!(shape, "->{}", self.key(ret()));
                }
            }
        }
        self.open.remove(&ptr);
        let k = format!("{}#{:08x}", printed(t), fnv(&shape) as u32);
        self.done.insert(ptr, k.clone());
        k
    }
}

/// A type's fields, then its phantom fields (abi_stable keeps pointees and
/// type arguments there).
fn all_fields(t: &'static TypeLayout) -> impl Iterator<Item = (&'static str, abi_stable::type_layout::TLField)> {
    let plain = t.get_fields().into_iter().flat_map(|fs| fs.iter()).map(|f| ("", f));
    let phantom = t.phantom_fields().iter().map(|f| ("phantom ", f));
    plain.chain(phantom)
}

fn kind(t: &'static TypeLayout) -> (bool, String) {
    match t.data() {
        TLData::Primitive(p) => (false, format!("primitive {p:?}")),
        TLData::Opaque => (false, "opaque".into()),
        TLData::Struct { .. } => (false, "struct".into()),
        TLData::Union { .. } => (false, "union".into()),
        TLData::Enum(e) => {
            let variants: Vec<String> = e
                .variant_names
                .as_str()
                .split(';')
                .filter(|v| !v.is_empty())
                .zip(e.field_count.as_slice())
                .map(|(v, n)| format!("{v}/{n}"))
                .collect();
            (false, format!("enum [{}]", variants.join(" ")))
        }
        TLData::PrefixType(p) => (true, format!("prefix (frozen fields {})", p.first_suffix_field)),
    }
}

/// Walks `root` and every type it reaches (fields, function parameters and
/// returns), one block per type.
fn snapshot(root: &'static TypeLayout) -> BTreeMap<String, TypeBlock> {
    let mut names = Names::default();
    let mut out = BTreeMap::new();
    let mut todo = VecDeque::from([root]);
    while let Some(t) = todo.pop_front() {
        let k = names.key(t);
        if out.contains_key(&k) {
            continue;
        }
        let (prefix, kind) = kind(t);
        let header = format!("{kind}; size {}; align {}", t.size(), t.alignment());
        let mut fields = Vec::new();
        for (tag, f) in all_fields(t) {
            let mut line = format!("{tag}{}: {}", f.name(), names.key(f.layout()));
            todo.push_back(f.layout());
            for func in f.function_range().iter() {
                let params: Vec<&'static TypeLayout> = func.param_type_layouts.iter().map(|get| get()).collect();
                let param_names: Vec<&str> = func.param_names.as_str().split(';').collect();
                let shown: Vec<String> = params
                    .iter()
                    .enumerate()
                    .map(|(i, p)| format!("{}: {}", param_names.get(i).copied().unwrap_or("_"), names.key(p)))
                    .collect();
                let _ = write!(line, " | fn {}({})", func.name, shown.join(", "));
                todo.extend(params);
                if let Some(ret) = func.return_type_layout() {
                    let ret = ret();
                    let _ = write!(line, " -> {}", names.key(ret));
                    todo.push_back(ret);
                }
            }
            fields.push(line);
        }
        out.insert(k, TypeBlock { prefix, header, fields });
    }
    out
}

fn render(s: &BTreeMap<String, TypeBlock>) -> String {
    let mut text = String::from(
        "# kozmo ABI epoch 1, minor 0: the layout released with kozmo-interface 1.0.0.\n\
         # Never edit: interface/tests/abi_layout.rs compares the current layout with it.\n",
    );
    for (k, b) in s {
        let _ = writeln!(text, "\n== {k}\n{}", b.header);
        for f in &b.fields {
            let _ = writeln!(text, "  {f}");
        }
    }
    text
}

fn parse(text: &str) -> BTreeMap<String, TypeBlock> {
    let mut out = BTreeMap::new();
    let mut current: Option<(String, TypeBlock)> = None;
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        if let Some(k) = line.strip_prefix("== ") {
            out.extend(current.take());
            current = Some((
                k.to_string(),
                TypeBlock {
                    prefix: false,
                    header: String::new(),
                    fields: Vec::new(),
                },
            ));
        } else if let Some((_, b)) = current.as_mut() {
            if let Some(f) = line.strip_prefix("  ") {
                b.fields.push(f.to_string());
            } else {
                b.prefix = line.starts_with("prefix");
                b.header = line.to_string();
            }
        }
    }
    out.extend(current);
    out
}

fn size_of(header: &str) -> Option<usize> {
    header.split("; ").find_map(|p| p.strip_prefix("size ")?.parse().ok())
}

fn without_size(header: &str) -> String {
    header
        .split("; ")
        .filter(|p| !p.starts_with("size "))
        .collect::<Vec<_>>()
        .join("; ")
}

/// What changed from `released` to `now` that an append does not allow.
fn breaking_changes(released: &BTreeMap<String, TypeBlock>, now: &BTreeMap<String, TypeBlock>) -> Vec<String> {
    let mut found = Vec::new();
    for (k, old) in released {
        let Some(new) = now.get(k).or_else(|| same_name(k, released, now)) else {
            found.push(format!("type {k} is gone (renamed, moved or no longer reached)"));
            continue;
        };
        if old.prefix && new.prefix {
            if without_size(&old.header) != without_size(&new.header) {
                found.push(format!("type {k}: `{}` became `{}`", old.header, new.header));
            } else if size_of(&new.header) < size_of(&old.header) {
                found.push(format!("type {k} shrank: `{}` became `{}`", old.header, new.header));
            }
        } else if old.header != new.header {
            found.push(format!("type {k}: `{}` became `{}`", old.header, new.header));
        }
        for (i, f) in old.fields.iter().enumerate() {
            match new.fields.get(i) {
                Some(g) if g == f => {}
                Some(g) => found.push(format!("type {k}, field #{i}: `{f}` became `{g}`")),
                None => found.push(format!("type {k}, field #{i} `{f}` is gone")),
            }
        }
        if !old.prefix && new.fields.len() > old.fields.len() {
            found.push(format!(
                "type {k} gained fields {:?}, but only prefix types (root module, trait vtables) may grow",
                &new.fields[old.fields.len()..]
            ));
        }
    }
    found
}

/// The one type of `now` printed like `k` (its structure hash aside) that
/// `released` does not have: the same type, changed.
fn same_name<'a>(
    k: &str,
    released: &BTreeMap<String, TypeBlock>,
    now: &'a BTreeMap<String, TypeBlock>,
) -> Option<&'a TypeBlock> {
    let name = |k: &str| k.split('#').next().unwrap_or(k).to_string();
    let mut candidates = now
        .iter()
        .filter(|(n, _)| name(n) == name(k) && !released.contains_key(*n));
    match (candidates.next(), candidates.next()) {
        (Some((_, b)), None) => Some(b),
        _ => None,
    }
}

fn appended(released: &BTreeMap<String, TypeBlock>, now: &BTreeMap<String, TypeBlock>) -> Vec<String> {
    let mut out = Vec::new();
    for (k, new) in now {
        match released.get(k) {
            None => out.push(format!("new type {k}")),
            Some(old) if new.fields.len() > old.fields.len() => {
                out.push(format!("{k} appends {:?}", &new.fields[old.fields.len()..]))
            }
            Some(_) => {}
        }
    }
    out
}

fn snapshot_file() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("abi")
        .join("v1.0.layout")
}

#[test]
fn epoch_1_changes_only_by_appending() {
    let now = snapshot(<PluginModule_Ref as StableAbi>::LAYOUT);
    let path = snapshot_file();
    if !path.exists() && std::env::var_os("KOZMO_WRITE_LAYOUT").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, render(&now)).unwrap();
    }
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; it holds the released layout of epoch 1 and must be committed",
            path.display()
        )
    });
    let released = parse(&text);
    assert!(
        released.len() > 20,
        "{} holds too few types to be the real snapshot",
        path.display()
    );
    let broken = breaking_changes(&released, &now);
    assert!(
        broken.is_empty(),
        "ABI epoch 1 changed in a way old plugins cannot survive (compared with {}):\n  {}\n\
         Only appends at the `kozmo-abi-append` markers are allowed; anything else needs a new epoch module (ffi::v2).",
        path.display(),
        broken.join("\n  ")
    );
    for a in appended(&released, &now) {
        println!("appended since 1.0: {a}");
    }
}

fn block(prefix: bool, header: &str, fields: &[&str]) -> TypeBlock {
    TypeBlock {
        prefix,
        header: header.into(),
        fields: fields.iter().map(|f| f.to_string()).collect(),
    }
}

fn one(k: &str, b: TypeBlock) -> BTreeMap<String, TypeBlock> {
    BTreeMap::from([(k.to_string(), b)])
}

#[test]
fn appends_to_prefix_types_pass_and_every_other_change_is_named() {
    let vt = "prefix (frozen fields 2); size 16; align 8";
    let released = one("m::VTable", block(true, vt, &["a: u8", "b: u16"]));
    let grown = one(
        "m::VTable",
        block(
            true,
            "prefix (frozen fields 2); size 24; align 8",
            &["a: u8", "b: u16", "c: u32"],
        ),
    );
    assert!(breaking_changes(&released, &grown).is_empty());
    assert_eq!(
        appended(&released, &grown),
        vec![r#"m::VTable appends ["c: u32"]"#.to_string()]
    );

    let reordered = one("m::VTable", block(true, vt, &["b: u16", "a: u8"]));
    let msg = breaking_changes(&released, &reordered).join("\n");
    assert!(msg.contains("field #0: `a: u8` became `b: u16`"), "{msg}");

    let retyped = one("m::VTable", block(true, vt, &["a: u8", "b: u32"]));
    assert!(breaking_changes(&released, &retyped)[0].contains("`b: u16` became `b: u32`"));

    let refrozen = one(
        "m::VTable",
        block(true, "prefix (frozen fields 3); size 16; align 8", &["a: u8", "b: u16"]),
    );
    assert!(breaking_changes(&released, &refrozen)[0].contains("frozen fields 3"));

    let plain = one("m::Value", block(false, "struct; size 8; align 8", &["x: u64"]));
    let plain_grown = one(
        "m::Value",
        block(false, "struct; size 16; align 8", &["x: u64", "y: u64"]),
    );
    let msg = breaking_changes(&plain, &plain_grown).join("\n");
    assert!(msg.contains("became `struct; size 16; align 8`"), "{msg}");
    assert!(msg.contains("only prefix types"), "{msg}");

    assert!(breaking_changes(&plain, &BTreeMap::new())[0].contains("m::Value is gone"));
}

#[test]
fn the_snapshot_text_round_trips() {
    let now = snapshot(<PluginModule_Ref as StableAbi>::LAYOUT);
    let names: BTreeSet<&str> = now.keys().map(String::as_str).collect();
    assert!(names.iter().any(|k| k.ends_with("PluginModule")), "{names:?}");
    assert_eq!(parse(&render(&now)), now);
}
