//! Acknowledged positions: per client id, the last event id the client says
//! it has shown (`POST /v1/ack`). A new connection with that client id and
//! no `Last-Event-ID` resumes after it, which `EventSource` cannot do after
//! a page load; the backend reads it as a delivery receipt.
//!
//! Bounded: at most `max` client ids are kept, the longest unacknowledged
//! forgotten first. With a durable store they are written with the next
//! commit (the clock flushes them within a tick), so a flood of acks costs
//! one write per tick, not one per ack.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use super::Hub;
use super::state::State;
use crate::store::Ack;

/// The positions held, and their age order for eviction.
#[derive(Default)]
pub(super) struct Acks {
    by_client: HashMap<Arc<str>, (Ack, u64)>,
    /// Acknowledgement number → client id: the oldest first.
    by_age: BTreeMap<u64, Arc<str>>,
    next: u64,
}

impl Acks {
    /// Records `ack` for `client`; returns the client ids forgotten to stay
    /// within `max`.
    pub fn set(&mut self, client: &str, ack: Ack, max: usize) -> Vec<Arc<str>> {
        let order = self.next;
        self.next += 1;
        let key: Arc<str> = match self.by_client.get_key_value(client) {
            Some((key, (_, old))) => {
                let key = key.clone();
                self.by_age.remove(old);
                key
            }
            None => Arc::from(client),
        };
        self.by_age.insert(order, key.clone());
        self.by_client.insert(key, (ack, order));
        let mut forgotten = Vec::new();
        while self.by_client.len() > max.max(1) {
            let Some((_, oldest)) = self.by_age.pop_first() else {
                break;
            };
            self.by_client.remove(&oldest);
            forgotten.push(oldest);
        }
        forgotten
    }

    pub fn get(&self, client: &str) -> Option<&Ack> {
        self.by_client.get(client).map(|(ack, _)| ack)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.by_client.len()
    }
}

impl State {
    /// Records a client's position, and what the next commit must write.
    fn acknowledge(&mut self, client: &str, ack: Ack, max: usize) {
        let forgotten = self.acks.set(client, ack.clone(), max);
        if let Some(pending) = &mut self.pending {
            for gone in forgotten {
                pending.acks.remove(&*gone);
                pending.forgotten_acks.insert(gone.to_string());
            }
            pending.forgotten_acks.remove(client);
            pending.acks.insert(client.to_owned(), ack);
        }
    }
}

impl Hub {
    /// Records that the client `client_id` has shown everything up to the
    /// event `last_event_id`. (Who may is the caller's check: the owner of
    /// the client channel.)
    pub fn acknowledge(&self, client_id: &str, last_event_id: &str) {
        let at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let ack = Ack {
            last_event_id: last_event_id.to_owned(),
            at_ms,
        };
        if let Some(cluster) = &self.cluster {
            cluster.tell(crate::store::Control::Ack {
                client: client_id.to_owned(),
                ack: ack.clone(),
            });
        }
        self.state()
            .acknowledge(client_id, ack, self.config.max_acks);
    }

    /// The position `client_id` last acknowledged.
    pub fn acknowledged(&self, client_id: &str) -> Option<Ack> {
        self.state().acks.get(client_id).cloned()
    }

    /// At startup: the positions the store holds.
    pub(super) fn restore_acks(&self, st: &mut State, mut acks: Vec<(String, Ack)>) {
        // Oldest first, so the newest are the ones kept within the bound.
        acks.sort_by_key(|(_, ack)| ack.at_ms);
        for (client, ack) in acks {
            for gone in st.acks.set(&client, ack, self.config.max_acks) {
                if let Some(pending) = &mut st.pending {
                    pending.forgotten_acks.insert(gone.to_string());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(id: &str) -> Ack {
        Ack {
            last_event_id: id.into(),
            at_ms: 1,
        }
    }

    #[test]
    fn the_longest_unacknowledged_client_is_forgotten_first() {
        let mut acks = Acks::default();
        assert!(acks.set("a", ack("1"), 2).is_empty());
        assert!(acks.set("b", ack("2"), 2).is_empty());
        // `a` moves: it is now the newest.
        assert!(acks.set("a", ack("3"), 2).is_empty());
        let forgotten = acks.set("c", ack("4"), 2);
        assert_eq!(forgotten, vec![Arc::from("b")]);
        assert_eq!(acks.get("a").unwrap().last_event_id, "3");
        assert!(acks.get("b").is_none());
        assert_eq!(acks.len(), 2);
        assert_eq!(acks.by_age.len(), 2);
    }
}
