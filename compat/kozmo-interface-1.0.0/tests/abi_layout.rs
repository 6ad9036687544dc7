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

mod layout_snapshot;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use abi_stable::StableAbi;
use kozmo_interface::ffi::v1::PluginModule_Ref;
use layout_snapshot::{appended, breaking_changes, parse, render, snapshot, TypeBlock};

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
