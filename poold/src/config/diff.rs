//! What a reload changes: the difference between the running config and a new one, sorted
//! by how each change can be applied (services added or removed, fields changed in place,
//! fields that need new workers, and daemon-level changes that need a restart).
//!
//! Fields are compared by their serialized TOML keys, so a new config field is classified
//! by the tables below (or, unlisted, treated as changing what a worker is: the safe side).

use super::{Config, ServiceConfig};
use serde::Serialize;
use std::collections::BTreeMap;

/// Service keys the running pool applies without replacing workers: the balancer's weight
/// and scheduler, the pool's size, and the supervisor's own rules.
const IN_PLACE_KEYS: &[&str] = &[
    "weight",
    "scheduler",
    "max_client_connections",
    "backend_connect",
    "workers",
    "min_ready",
    "health",
    "recycle",
    "backoff",
];

/// Service keys that name the service itself: changing them is a different service.
const IDENTITY_KEYS: &[&str] = &["name", "listen", "protocol"];

/// How one changed service is brought to its new config.
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceChange {
    pub name: String,
    /// The new config of the service.
    pub config: ServiceConfig,
    /// Changed keys applied in place (no worker replaced).
    pub in_place: Vec<String>,
    /// Changed keys that change what a worker is: every worker is replaced by a rolling
    /// surge recycle.
    pub rolling: Vec<String>,
}

/// A change a running poold cannot apply; the reload is refused as a whole.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The key as in poold.toml (`daemon.state_dir`, `service[web].listen`).
    pub key: String,
    pub reason: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.reason)
    }
}

/// The difference between the running config and a new one.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConfigDiff {
    pub added: Vec<ServiceConfig>,
    pub removed: Vec<String>,
    pub changed: Vec<ServiceChange>,
    pub refused: Vec<Refusal>,
}

impl ConfigDiff {
    pub fn between(running: &Config, new: &Config) -> Self {
        let mut diff = ConfigDiff::default();
        for key in changed_keys(&running.daemon, &new.daemon) {
            diff.refused.push(Refusal {
                key: format!("daemon.{key}"),
                reason: "daemon settings apply at start only: restart poold".into(),
            });
        }
        for key in changed_keys(&running.network, &new.network) {
            diff.refused.push(Refusal {
                key: format!("network.{key}"),
                reason: "the worker network is set up at start only: restart poold".into(),
            });
        }
        for service in &new.services {
            match running.services.iter().find(|s| s.name == service.name) {
                None => diff.added.push(service.clone()),
                Some(old) => diff.compare_service(old, service),
            }
        }
        diff.removed = running
            .services
            .iter()
            .filter(|old| !new.services.iter().any(|s| s.name == old.name))
            .map(|old| old.name.clone())
            .collect();
        diff
    }

    fn compare_service(&mut self, old: &ServiceConfig, new: &ServiceConfig) {
        let mut change = ServiceChange {
            name: new.name.clone(),
            config: new.clone(),
            in_place: Vec::new(),
            rolling: Vec::new(),
        };
        for key in changed_keys(old, new) {
            if IDENTITY_KEYS.contains(&key.as_str()) {
                self.refused.push(Refusal {
                    key: format!("service[{}].{key}", new.name),
                    reason: "a service's address cannot change while it runs: give it a new \
                             name (the old one drains, the new one starts) or restart poold"
                        .into(),
                });
            } else if IN_PLACE_KEYS.contains(&key.as_str()) {
                change.in_place.push(key);
            } else {
                change.rolling.push(key);
            }
        }
        if !change.in_place.is_empty() || !change.rolling.is_empty() {
            self.changed.push(change);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.changed.is_empty()
            && self.refused.is_empty()
    }
}

/// The keys that change what a worker is (those a reload rolls) whose values differ
/// between `old` (a service config as serialized when a worker was started, e.g. in the
/// state record) and `new`: a worker started on `old` no longer matches `new` when any is.
pub fn rolling_keys(old: &serde_json::Value, new: &ServiceConfig) -> Vec<String> {
    let old: BTreeMap<String, serde_json::Value> = match old {
        serde_json::Value::Object(map) => map.clone().into_iter().collect(),
        _ => BTreeMap::new(),
    };
    let new = as_map(new);
    let mut keys: Vec<String> = old
        .keys()
        .chain(new.keys())
        .filter(|key| old.get(*key) != new.get(*key))
        .filter(|key| {
            !IN_PLACE_KEYS.contains(&key.as_str()) && !IDENTITY_KEYS.contains(&key.as_str())
        })
        .cloned()
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// The top-level keys whose values differ between `old` and `new` (both serialized as
/// poold.toml would name them), in key order.
fn changed_keys<T: Serialize>(old: &T, new: &T) -> Vec<String> {
    let (old, new) = (as_map(old), as_map(new));
    let mut keys: Vec<String> = old
        .keys()
        .chain(new.keys())
        .filter(|key| old.get(*key) != new.get(*key))
        .cloned()
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

fn as_map<T: Serialize>(value: &T) -> BTreeMap<String, serde_json::Value> {
    match serde_json::to_value(value).expect("configs serialize") {
        serde_json::Value::Object(map) => map.into_iter().collect(),
        other => unreachable!("config sections serialize to maps, not {other}"),
    }
}

#[cfg(test)]
mod tests;
