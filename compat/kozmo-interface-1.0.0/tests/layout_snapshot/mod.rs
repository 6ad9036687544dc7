//! The layout snapshot of an ABI epoch: abi_stable's layout of the root
//! module and of every type it reaches, one block per type, and the rules
//! that compare a released snapshot with a current one. Used by
//! `interface/tests/abi_layout.rs` and, copied into its source, by the
//! compatibility suite's mini host (which checks a simulated next minor).

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt::Write as _;

use abi_stable::type_layout::{TLData, TypeLayout};

/// One type of the snapshot: its header line (kind, size, alignment) and
/// one line per field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeBlock {
    pub prefix: bool,
    pub header: String,
    pub fields: Vec<String>,
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
pub fn snapshot(root: &'static TypeLayout) -> BTreeMap<String, TypeBlock> {
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

pub fn render(s: &BTreeMap<String, TypeBlock>) -> String {
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

pub fn parse(text: &str) -> BTreeMap<String, TypeBlock> {
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
pub fn breaking_changes(released: &BTreeMap<String, TypeBlock>, now: &BTreeMap<String, TypeBlock>) -> Vec<String> {
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

pub fn appended(released: &BTreeMap<String, TypeBlock>, now: &BTreeMap<String, TypeBlock>) -> Vec<String> {
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
