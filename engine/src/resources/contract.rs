//! The behaviour every [`ResourceBackend`] keeps, as functions a backend's
//! tests call (built for this crate's tests and with the `contract`
//! feature): [`run`] runs them all on fresh backends from a factory. Most
//! go through [`TaskResources`], the proxy plugins see, so the answers a
//! plugin gets are checked, not only the backend's.
//!
//! These functions assert: they are test code, not part of the daemon.

#![allow(clippy::missing_panics_doc)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use kozmo_interface::{
    AllocationStatus, ResourceConstraint, ResourceConstraintsSpec, ResourceManager, ResourceNamespace,
};

use super::{
    Allocation, NamespaceMembers, NamespaceUsage, ResourceBackend, ScopeConstraint, TaskResources, TokenOwner,
};
use crate::model::TokenRow;

/// Makes a fresh, empty backend whose id is the one given to [`run`], with
/// these quotas (fully qualified namespace → quota).
pub type Factory<'a> = &'a dyn Fn(BTreeMap<String, i64>) -> Arc<dyn ResourceBackend>;

/// Runs every check of the contract, each on a fresh backend.
pub fn run(id: &str, make: Factory<'_>) {
    quota_is_strict_idempotent_and_release_frees(id, make);
    constraints_count_whole_segments(id, make);
    zero_quota_or_constraint_can_never_be_granted(id, make);
    unknown_namespace_is_an_error_and_release_of_nothing_is_false(id, make);
    held_by_lists_namespace_token_and_attempt(id, make);
    usage_reports_quota_in_use_and_waiting(id, make);
    restore_reinstalls_grants_idempotently(id, make);
    restore_keeps_tokens_of_unregistered_namespaces(id, make);
    release_wakes_the_waiters_once(id, make);
}

fn owner(id: &str) -> TokenOwner {
    TokenOwner {
        execution_id: id.into(),
        attempt: 0,
    }
}

fn with_quota(id: &str, make: Factory<'_>, quota: i64) -> Arc<dyn ResourceBackend> {
    let m = make(BTreeMap::from([(format!("{id}:plug:q"), quota)]));
    assert_eq!(m.id(), id, "the factory makes backends with the id given to run");
    m
}

fn proxy(m: &Arc<dyn ResourceBackend>, project: &str, exec: &str) -> TaskResources {
    TaskResources::new(m.clone(), "plug", project, "dev", owner(exec))
}

fn none() -> ResourceConstraintsSpec {
    ResourceConstraintsSpec::default()
}

/// Quota 1: granted, granted again (not a new token), exhausted for
/// another execution, granted to it after the release.
pub fn quota_is_strict_idempotent_and_release_frees(id: &str, make: Factory<'_>) {
    let m = with_quota(id, make, 1);
    let a = proxy(&m, "p", "a");
    let b = proxy(&m, "p", "b");
    let ns = ResourceNamespace::new("q");
    assert_eq!(
        a.allocate_resource(&ns, "t", &none()).unwrap(),
        AllocationStatus::GRANTED
    );
    assert_eq!(
        a.allocate_resource(&ns, "t", &none()).unwrap(),
        AllocationStatus::GRANTED
    );
    assert_eq!(a.take_ops().granted.len(), 1, "a re-grant is not a new token");
    assert_eq!(
        b.allocate_resource(&ns, "t", &none()).unwrap(),
        AllocationStatus::EXHAUSTED
    );
    a.release_resource(&ns, "t").unwrap();
    assert_eq!(
        a.take_ops().released,
        vec![(format!("{id}:plug:q"), "ex:p:dev:a-t".to_string())]
    );
    assert_eq!(
        b.allocate_resource(&ns, "t", &none()).unwrap(),
        AllocationStatus::GRANTED
    );
    assert_eq!(m.held_by("b").len(), 1);
    assert!(m.held_by("a").is_empty());
    assert_eq!(m.in_use(&format!("{id}:plug:q")), 1);
    assert_eq!(
        m.held_by("b")[0].1,
        "ex:p:dev:b-t",
        "tokens are ex:<project>:<domain>:<name>-<token>"
    );
    // The backend's own answers.
    let q = format!("{id}:plug:q");
    assert_eq!(
        m.allocate(&q, "ex:p:dev:b-t", &[], &owner("b")).unwrap(),
        Allocation::Granted { new: false }
    );
    assert_eq!(
        m.allocate(&q, "ex:p:dev:c-t", &[], &owner("c")).unwrap(),
        Allocation::Exhausted
    );
    assert!(m.release(&q, "ex:p:dev:b-t").unwrap());
    assert!(!m.release(&q, "ex:p:dev:b-t").unwrap(), "released twice: not held");
    assert_eq!(
        m.allocate(&q, "ex:p:dev:c-t", &[], &owner("c")).unwrap(),
        Allocation::Granted { new: true }
    );
}

/// Project and domain constraints count tokens by whole segments: `proj`
/// does not count `proj2`'s tokens, `dev` not `dev2`'s.
pub fn constraints_count_whole_segments(id: &str, make: Factory<'_>) {
    let m = with_quota(id, make, 10);
    let ns = ResourceNamespace::new("q");
    let project1 = ResourceConstraintsSpec {
        project_scope: Some(ResourceConstraint { value: 1 }),
        namespace_scope: None,
    };
    assert_eq!(
        proxy(&m, "proj2", "x").allocate_resource(&ns, "t", &project1).unwrap(),
        AllocationStatus::GRANTED
    );
    assert_eq!(
        proxy(&m, "proj", "y").allocate_resource(&ns, "t", &project1).unwrap(),
        AllocationStatus::GRANTED
    );
    assert_eq!(
        proxy(&m, "proj", "z").allocate_resource(&ns, "t", &project1).unwrap(),
        AllocationStatus::EXHAUSTED
    );
    // Domain scope: `ex:d:dev:` and `ex:d:dev2:` are different domains.
    let q = format!("{id}:plug:q");
    let domain2 = [ScopeConstraint {
        prefix: "ex:d:dev:".into(),
        value: 2,
    }];
    for (tok, exec) in [("ex:d:dev2:u-t", "u"), ("ex:d:dev:v-t", "v"), ("ex:d:dev:w-t", "w")] {
        assert_eq!(
            m.allocate(&q, tok, &domain2, &owner(exec)).unwrap(),
            Allocation::Granted { new: true },
            "{tok}"
        );
    }
    assert_eq!(
        m.allocate(&q, "ex:d:dev:x2-t", &domain2, &owner("x2")).unwrap(),
        Allocation::Exhausted
    );
    // Both constraints hold: the tighter one decides.
    let both = [
        ScopeConstraint {
            prefix: "ex:e:".into(),
            value: 5,
        },
        ScopeConstraint {
            prefix: "ex:e:dev:".into(),
            value: 1,
        },
    ];
    assert_eq!(
        m.allocate(&q, "ex:e:dev:a-t", &both, &owner("ea")).unwrap(),
        Allocation::Granted { new: true }
    );
    assert_eq!(
        m.allocate(&q, "ex:e:dev:b-t", &both, &owner("eb")).unwrap(),
        Allocation::Exhausted
    );
    assert_eq!(
        m.allocate(&q, "ex:e:prod:c-t", &both[..1], &owner("ec")).unwrap(),
        Allocation::Granted { new: true }
    );
    assert_eq!(m.in_use(&q), 7);
}

/// Quota 0 or a constraint of 0 is `Never`, with the messages plugins see.
pub fn zero_quota_or_constraint_can_never_be_granted(id: &str, make: Factory<'_>) {
    let m = with_quota(id, make, 0);
    let p = proxy(&m, "p", "a");
    let e = p
        .allocate_resource(&ResourceNamespace::new("q"), "t", &none())
        .unwrap_err();
    assert_eq!(e.code, "ResourceNeverAvailable");
    assert_eq!(
        p.take_ops().never.unwrap(),
        format!("the quota of resource [{id}:plug:q] is 0: token [ex:p:dev:a-t] can never be granted")
    );
    let m = with_quota(id, make, 5);
    let p = proxy(&m, "p", "a");
    let zero = ResourceConstraintsSpec {
        project_scope: None,
        namespace_scope: Some(ResourceConstraint { value: 0 }),
    };
    assert!(p.allocate_resource(&ResourceNamespace::new("q"), "t", &zero).is_err());
    assert_eq!(
        p.take_ops().never.unwrap(),
        format!(
            "the constraint on [ex:p:dev] in resource [{id}:plug:q] is 0: token [ex:p:dev:a-t] can never be granted"
        )
    );
    assert_eq!(m.in_use(&format!("{id}:plug:q")), 0);
    assert!(m.held_by("a").is_empty());
}

/// An unregistered namespace is an error naming it; releasing a token
/// nobody holds (or in an unknown namespace) is `Ok(false)`.
pub fn unknown_namespace_is_an_error_and_release_of_nothing_is_false(id: &str, make: Factory<'_>) {
    let m = with_quota(id, make, 1);
    let e = m
        .allocate(&format!("{id}:plug:nope"), "ex:p:dev:a-t", &[], &owner("a"))
        .unwrap_err();
    assert_eq!(e, format!("Requested resource [{id}:plug:nope] not found"));
    assert!(!m.release(&format!("{id}:plug:nope"), "ex:p:dev:a-t").unwrap());
    assert!(!m.release(&format!("{id}:plug:q"), "ex:p:dev:a-t").unwrap());
    assert_eq!(m.in_use(&format!("{id}:plug:nope")), 0);
    // Releasing nothing through the proxy records nothing.
    let p = proxy(&m, "p", "a");
    p.release_resource(&ResourceNamespace::new("q"), "t").unwrap();
    assert!(p.take_ops().released.is_empty());
}

/// `held_by` lists every token of an execution with its attempt, in
/// (namespace, token) order, and nothing of other executions.
pub fn held_by_lists_namespace_token_and_attempt(id: &str, make: Factory<'_>) {
    let q1 = format!("{id}:plug:q1");
    let q2 = format!("{id}:plug:q2");
    let m = make(BTreeMap::from([(q1.clone(), 5), (q2.clone(), 5)]));
    let a3 = TokenOwner {
        execution_id: "a".into(),
        attempt: 3,
    };
    for (ns, tok) in [(&q2, "ex:p:dev:a-x"), (&q1, "ex:p:dev:a-y"), (&q1, "ex:p:dev:a-b")] {
        assert_eq!(
            m.allocate(ns, tok, &[], &a3).unwrap(),
            Allocation::Granted { new: true }
        );
    }
    m.allocate(&q1, "ex:p:dev:ab-t", &[], &owner("ab")).unwrap();
    assert_eq!(
        m.held_by("a"),
        vec![
            (q1.clone(), "ex:p:dev:a-b".to_string(), 3),
            (q1.clone(), "ex:p:dev:a-y".to_string(), 3),
            (q2.clone(), "ex:p:dev:a-x".to_string(), 3),
        ]
    );
    assert_eq!(m.held_by("ab"), vec![(q1.clone(), "ex:p:dev:ab-t".to_string(), 0)]);
    assert!(m.held_by("nobody").is_empty());
    for (ns, tok, _) in m.held_by("a") {
        assert!(m.release(&ns, &tok).unwrap());
    }
    assert!(m.held_by("a").is_empty());
}

/// `usage`: every namespace, sorted, with quota, tokens in use and the
/// executions told "exhausted" and not granted since.
pub fn usage_reports_quota_in_use_and_waiting(id: &str, make: Factory<'_>) {
    let q1 = format!("{id}:plug:q1");
    let q2 = format!("{id}:plug:q2");
    let m = make(BTreeMap::from([(q2.clone(), 3), (q1.clone(), 1)]));
    let usage = |ns: &str, quota, in_use, waiting| NamespaceUsage {
        namespace: ns.to_string(),
        quota,
        in_use,
        waiting,
    };
    assert_eq!(m.usage(), vec![usage(&q1, 1, 0, 0), usage(&q2, 3, 0, 0)]);
    m.allocate(&q1, "ex:p:dev:a-t", &[], &owner("a")).unwrap();
    for exec in ["b", "c", "b"] {
        assert_eq!(
            m.allocate(&q1, &format!("ex:p:dev:{exec}-t"), &[], &owner(exec))
                .unwrap(),
            Allocation::Exhausted
        );
    }
    m.allocate(&q2, "ex:p:dev:a-t", &[], &owner("a")).unwrap();
    assert_eq!(m.usage(), vec![usage(&q1, 1, 1, 2), usage(&q2, 3, 1, 0)]);
    // Who: the holders and the waiters by execution, sorted.
    let members = |ns: &str, holders: &[&str], waiters: &[&str]| NamespaceMembers {
        namespace: ns.to_string(),
        holders: holders.iter().map(|h| h.to_string()).collect(),
        waiters: waiters.iter().map(|w| w.to_string()).collect(),
    };
    assert_eq!(
        m.members(),
        vec![members(&q1, &["a"], &["b", "c"]), members(&q2, &["a"], &[])]
    );
    // A waiter granted later is no longer waiting.
    assert!(m.release(&q1, "ex:p:dev:a-t").unwrap());
    assert_eq!(m.usage(), vec![usage(&q1, 1, 0, 0), usage(&q2, 3, 1, 0)]);
    assert_eq!(
        m.allocate(&q1, "ex:p:dev:d-t", &[], &owner("d")).unwrap(),
        Allocation::Granted { new: true }
    );
    assert_eq!(
        m.allocate(&q1, "ex:p:dev:b-t", &[], &owner("b")).unwrap(),
        Allocation::Exhausted
    );
    assert_eq!(m.usage()[0], usage(&q1, 1, 1, 1));
}

/// Restored tokens count against the quota, belong to their execution and
/// attempt, and restoring the same rows again changes nothing.
pub fn restore_reinstalls_grants_idempotently(id: &str, make: Factory<'_>) {
    let q = format!("{id}:plug:q");
    let m = with_quota(id, make, 2);
    let rows = [
        TokenRow {
            namespace: q.clone(),
            token: "ex:p:dev:a-t".into(),
            execution_id: "a".into(),
            attempt: 2,
        },
        TokenRow {
            namespace: q.clone(),
            token: "ex:p:dev:b-t".into(),
            execution_id: "b".into(),
            attempt: 0,
        },
    ];
    m.restore(&rows);
    m.restore(&rows);
    assert_eq!(m.in_use(&q), 2);
    assert_eq!(m.held_by("a"), vec![(q.clone(), "ex:p:dev:a-t".to_string(), 2)]);
    assert_eq!(
        m.allocate(&q, "ex:p:dev:c-t", &[], &owner("c")).unwrap(),
        Allocation::Exhausted
    );
    assert_eq!(
        m.allocate(&q, "ex:p:dev:a-t", &[], &owner("a")).unwrap(),
        Allocation::Granted { new: false }
    );
    assert!(m.release(&q, "ex:p:dev:a-t").unwrap());
    assert!(m.held_by("a").is_empty());
    assert_eq!(m.in_use(&q), 1);
}

/// A persisted token of a namespace no plugin registers any more is kept
/// (its execution releases it), and no new token is granted there.
pub fn restore_keeps_tokens_of_unregistered_namespaces(id: &str, make: Factory<'_>) {
    let gone = format!("{id}:plug:gone");
    let m = with_quota(id, make, 1);
    m.restore(&[TokenRow {
        namespace: gone.clone(),
        token: "ex:p:dev:a-t".into(),
        execution_id: "a".into(),
        attempt: 1,
    }]);
    assert_eq!(m.in_use(&gone), 1);
    assert_eq!(m.held_by("a"), vec![(gone.clone(), "ex:p:dev:a-t".to_string(), 1)]);
    assert_eq!(
        m.allocate(&gone, "ex:p:dev:a-t", &[], &owner("a")).unwrap(),
        Allocation::Granted { new: false }
    );
    assert!(matches!(
        m.allocate(&gone, "ex:p:dev:b-t", &[], &owner("b")).unwrap(),
        Allocation::Never(_)
    ));
    assert!(m.release(&gone, "ex:p:dev:a-t").unwrap());
    assert_eq!(m.in_use(&gone), 0);
}

/// A release that frees a slot calls the listener once with each
/// execution waiting on that namespace; a release of nothing calls none.
pub fn release_wakes_the_waiters_once(id: &str, make: Factory<'_>) {
    let q = format!("{id}:plug:q");
    let other = format!("{id}:plug:other");
    let m = make(BTreeMap::from([(q.clone(), 1), (other.clone(), 1)]));
    let woken = Arc::new(Mutex::new(Vec::new()));
    let w = woken.clone();
    m.set_release_listener(Box::new(move |id| w.lock().unwrap().push(id.to_string())));
    m.allocate(&q, "ex:p:dev:a-t", &[], &owner("a")).unwrap();
    m.allocate(&other, "ex:p:dev:x-t", &[], &owner("x")).unwrap();
    for exec in ["b", "c"] {
        assert_eq!(
            m.allocate(&q, &format!("ex:p:dev:{exec}-t"), &[], &owner(exec))
                .unwrap(),
            Allocation::Exhausted
        );
    }
    assert_eq!(
        m.allocate(&other, "ex:p:dev:y-t", &[], &owner("y")).unwrap(),
        Allocation::Exhausted
    );
    assert!(!m.release(&q, "ex:p:dev:nobody-t").unwrap());
    assert!(woken.lock().unwrap().is_empty());
    assert!(m.release(&q, "ex:p:dev:a-t").unwrap());
    let mut got = woken.lock().unwrap().clone();
    got.sort();
    assert_eq!(got, vec!["b".to_string(), "c".to_string()], "only the waiters on [q]");
    // Woken once: the next release wakes nobody until someone waits again.
    m.allocate(&q, "ex:p:dev:b-t", &[], &owner("b")).unwrap();
    woken.lock().unwrap().clear();
    assert!(m.release(&q, "ex:p:dev:b-t").unwrap());
    assert!(woken.lock().unwrap().is_empty());
}
