//! The layout check Kozmo runs instead of abi_stable's own, so the
//! boundary can grow in both directions.
//!
//! abi_stable compares the host's layout of the root module (and of every
//! type it reaches) with the library's, and refuses a library whose prefix
//! types have *fewer* fields than the host's. For a prefix type the host
//! reads, that is too strict: every field after `last_prefix_field` is read
//! through an accessor that checks the library's own field count at run
//! time (an `Option`, or the trait method's default body for a
//! `#[sabi_trait]` vtable). So an older plugin in a newer host would be
//! safe, but abi_stable refuses it (its issue #118).
//!
//! [`check`] runs abi_stable's checker and forgives exactly these errors:
//!
//! * a prefix type (root module or trait vtable) with more fields on the
//!   host's side than on the library's — the appended ones are optional;
//!   the prefix up to `last_prefix_field` is still compared field by field
//!   (`MismatchedPrefixSize` is never forgiven);
//! * the size of such a prefix type growing with it;
//! * the crate version recorded in each type, which is not the ABI version
//!   (the epoch was already matched before this check runs).
//!
//! Everything else (a field reordered, renamed or retyped, a plain struct
//! or enum that changed, a function signature) stays an error.

use abi_stable::abi_stability::abi_checking::{
    check_layout_compatibility, AbiInstability, AbiInstabilityError, AbiInstabilityErrors,
};
use abi_stable::type_layout::{TLFieldOrFunction, TypeLayout};

/// Why a library's layout is incompatible: the `Error:`-style summary lines
/// and abi_stable's whole report.
#[derive(Debug, Clone)]
pub struct LayoutErrors {
    /// One line per incompatibility.
    pub summary: Vec<String>,
    /// abi_stable's full report (hundreds of lines).
    pub report: String,
}

/// Checks that a library whose root module has layout `library` can be used
/// through this host's `host` layout (see the module docs for the rules).
pub fn check(host: &'static TypeLayout, library: &'static TypeLayout) -> Result<(), LayoutErrors> {
    let errors = match check_layout_compatibility(host, library) {
        Ok(()) => return Ok(()),
        Err(e) => e,
    };
    let fatal: Vec<&AbiInstabilityError> = errors.errors.iter().filter(|e| !is_forgiven(e)).collect();
    if fatal.is_empty() {
        return Ok(());
    }
    Err(LayoutErrors {
        summary: summarize(&errors, &fatal),
        report: errors.to_string(),
    })
}

/// The type whose own fields an error is about: the type of the last field
/// on the error's path (`None` for a function signature or the root).
fn subject(e: &AbiInstabilityError) -> Option<&'static TypeLayout> {
    match &e.stack_trace.last()?.expected {
        TLFieldOrFunction::Field(f) => Some(f.layout()),
        TLFieldOrFunction::Function(_) => None,
    }
}

fn is_forgiven(e: &AbiInstabilityError) -> bool {
    let grows = subject(e).is_some_and(|t| t.is_prefix_kind());
    e.errs.iter().all(|err| match err {
        AbiInstability::PackageVersion(_) => true,
        AbiInstability::FieldCountMismatch(c) => grows && c.expected > c.found,
        AbiInstability::Size(s) => grows && s.expected > s.found,
        _ => false,
    })
}

fn summarize(all: &AbiInstabilityErrors, fatal: &[&AbiInstabilityError]) -> Vec<String> {
    let mut lines = Vec::new();
    for e in fatal {
        let place = match e.stack_trace.last() {
            Some(ef) => match &ef.expected {
                TLFieldOrFunction::Field(f) => format!("field `{}` of type {}", f.name(), f.layout().full_type()),
                TLFieldOrFunction::Function(f) => format!("function `{}`", f.name),
            },
            None => format!("{}", all.interface.full_type()),
        };
        for err in &e.errs {
            if !matches!(err, AbiInstability::PackageVersion(_)) {
                lines.push(format!("Error: {place}: {}", describe(err)));
            }
        }
    }
    lines
}

fn describe(err: &AbiInstability) -> String {
    match err {
        AbiInstability::FieldCountMismatch(c) => {
            format!("field count differs (host {}, library {})", c.expected, c.found)
        }
        AbiInstability::Size(s) => format!("size differs (host {}, library {})", s.expected, s.found),
        AbiInstability::Alignment(a) => format!("alignment differs (host {}, library {})", a.expected, a.found),
        AbiInstability::UnexpectedField(f) => format!(
            "field differs (host `{}`, library `{}`)",
            f.expected.name(),
            f.found.name()
        ),
        AbiInstability::Name(n) => format!("type differs (host {}, library {})", n.expected, n.found),
        AbiInstability::MismatchedPrefixSize(p) => format!(
            "the frozen prefix differs (host {} fields, library {})",
            p.expected, p.found
        ),
        AbiInstability::MismatchedPrimitive(p) => {
            format!("primitive differs (host {:?}, library {:?})", p.expected, p.found)
        }
        AbiInstability::TooManyVariants(v) => {
            format!("variant count differs (host {}, library {})", v.expected, v.found)
        }
        other => format!("{other:?}").chars().take(300).collect(),
    }
}
