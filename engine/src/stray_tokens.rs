//! Tokens left held by executions that have ended, on a store several
//! daemons share.
//!
//! An execution's owner releases what it still holds when it finishes
//! ([`Engine::finish_step`]), so on one node nothing is left held. With
//! several nodes, a node paused past its lease may go on with a round it
//! had under way: the plugin's `allocate` reaches the resource manager
//! (which knows nothing of leases) before the store's fencing check
//! refuses that round's commit. If the execution's new owner had already
//! finished it, nobody would release that token again and its slot would
//! be lost to the quota for ever. The node thread therefore looks, once a
//! lease period, for holders the store shows ended and releases their
//! tokens. A token name carries its execution's name, so no live execution
//! can hold a token of an ended one. A holder the store does not know is
//! left alone: it may be another cluster's, sharing the Redis prefix.

use std::collections::BTreeSet;

use crate::store::Cluster;
use crate::Engine;

/// Holder ids asked of the store per query.
const IDS_PER_QUERY: usize = 1000;

impl Engine {
    /// Releases every token an ended execution still holds; how many were
    /// released.
    pub(crate) fn release_stray_tokens(&self, cluster: &dyn Cluster) -> usize {
        let holders: Vec<String> = self
            .resources
            .members()
            .into_iter()
            .flat_map(|m| m.holders)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut released = 0;
        for ids in holders.chunks(IDS_PER_QUERY) {
            let ended = match cluster.ended_of(ids) {
                Ok(ended) => ended,
                Err(e) => {
                    log::warn!("node {}: cannot check token holders (retrying): {e}", cluster.node_id());
                    return released;
                }
            };
            for id in ended {
                released += self.release_all_of(&id);
            }
        }
        released
    }

    /// Releases what the ended execution `id` holds.
    fn release_all_of(&self, id: &str) -> usize {
        let held = match self.resources.try_held_by(id) {
            Ok(held) => held,
            Err(e) => {
                log::warn!("execution {id}: cannot list its resource tokens (retrying): {e}");
                return 0;
            }
        };
        let mut released = 0;
        for (ns, tok, attempt) in held {
            if self.release_leaked(&ns, &tok) == Some(true) {
                log::warn!(
                    "execution {id} has ended but still held resource token [{tok}] in [{ns}] (attempt {attempt}; \
                     most likely taken by a step whose commit fencing refused); released"
                );
                released += 1;
            }
        }
        released
    }
}
