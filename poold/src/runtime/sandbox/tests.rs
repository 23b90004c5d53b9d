//! The adapter's pure parts (the sandbox config it derives); the real runtime runs in
//! tests/sandbox_*.rs and the e2e tests.

use super::*;

fn config_with_state_dir(dir: &str) -> Config {
    let text = format!(
        "[daemon]\nstate_dir = \"{dir}\"\n\n[[service]]\nname = \"web\"\n\
         listen = \"127.0.0.1:8080\"\nworkers = 1\nport = 8080\nrootfs = \"host\"\n\
         command = [\"/bin/true\"]\n"
    );
    Config::parse(&text, std::path::Path::new("test.toml")).expect("valid config")
}

#[test]
fn instances_with_other_state_dirs_never_share_a_link_prefix() {
    let a = sandbox_config(&config_with_state_dir("/run/poold-a"));
    let b = sandbox_config(&config_with_state_dir("/run/poold-b"));
    assert_ne!(a.link_prefix, b.link_prefix);
    // Stable across restarts of the same instance.
    let a_again = sandbox_config(&config_with_state_dir("/run/poold-a"));
    assert_eq!(a.link_prefix, a_again.link_prefix);
    // pd + tag + 8 hex worker id fits IFNAMSIZ - 1.
    assert!(a.link_prefix.len() + 8 <= 15, "{}", a.link_prefix);
}

#[test]
fn workers_on_one_config_share_one_recorded_value() {
    let config = config_with_state_dir("/run/poold-a");
    let value = || serde_json::to_value(&config.services[0]).unwrap();
    let mut configs = ConfigValues::default();
    let first = configs.intern(value());
    let second = configs.intern(value());
    assert!(Arc::ptr_eq(&first, &second), "one copy per config");
    let mut changed = value();
    changed["workers"] = serde_json::json!(2);
    let other = configs.intern(changed);
    assert!(!Arc::ptr_eq(&first, &other));
    // A config no worker holds any more is forgotten.
    drop(other);
    let _ = configs.intern(value());
    assert_eq!(configs.0.len(), 1);
}

#[test]
fn the_state_record_reads_back_what_was_written() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_with_state_dir("/run/poold-a");
    let mut configs = ConfigValues::default();
    let mut record = |worker: u64| WorkerRecord {
        worker: WorkerId(worker),
        service: "web".into(),
        slot: if worker == 2 {
            crate::runtime::SPARE_SLOT
        } else {
            0
        },
        spare: worker == 2,
        generation: 1,
        container: serde_json::from_value(serde_json::json!({
            "id": format!("{worker:08x}"), "name": format!("web-{worker}"), "pid": 42,
            "start_time": 7, "cgroup": null, "netns": null, "veth": null,
            "address": "10.0.0.2", "piped": false
        }))
        .unwrap(),
        config: configs.intern(serde_json::to_value(&config.services[0]).unwrap()),
    };
    let runtime_records = BTreeMap::from([(WorkerId(1), record(1)), (WorkerId(2), record(2))]);
    let operator = BTreeMap::from([(
        "web".to_owned(),
        OperatorState {
            drained: true,
            scaled_to: Some(4),
            drained_workers: [WorkerId(1)].into(),
        },
    )]);
    let ipvs: IpvsRecord = serde_json::from_value(serde_json::json!({
        "services": [{"listen": "10.212.9.1:80", "protocol": "tcp"}],
        "vips": [{"address": "10.212.9.1", "device": "pdvip0"}]
    }))
    .unwrap();
    write_record_file(
        dir.path(),
        &Mutex::new(runtime_records.clone()),
        Vec::new(),
        &operator,
        &ipvs,
    )
    .unwrap();
    let back = read_record(dir.path());
    assert_eq!(back.version, RECORD_VERSION);
    assert_eq!(back.workers.len(), 2);
    assert_eq!(back.workers[1].worker, WorkerId(2));
    assert!(back.workers[1].spare && !back.workers[0].spare);
    assert_eq!(back.workers[1].config, runtime_records[&WorkerId(2)].config);
    assert_eq!(back.operator, operator);
    assert_eq!(back.ipvs, ipvs);
}

/// The balancer's entries are recorded with no worker at all (a service whose slots are all
/// in backoff), and a record without them (an older one) reads as none.
#[test]
fn the_ipvs_entries_are_recorded_without_any_worker() {
    let dir = tempfile::tempdir().unwrap();
    let ipvs: IpvsRecord = serde_json::from_value(serde_json::json!({
        "services": [{"listen": "10.212.9.2:80", "protocol": "tcp"}],
        "vips": [{"address": "10.212.9.2", "device": "pdvip0"}]
    }))
    .unwrap();
    write_record_file(
        dir.path(),
        &Mutex::new(BTreeMap::new()),
        Vec::new(),
        &BTreeMap::new(),
        &ipvs,
    )
    .unwrap();
    assert_eq!(read_record(dir.path()).ipvs, ipvs);
    write_record_file(
        dir.path(),
        &Mutex::new(BTreeMap::new()),
        Vec::new(),
        &BTreeMap::new(),
        &IpvsRecord::default(),
    )
    .unwrap();
    let text = std::fs::read_to_string(dir.path().join(RECORD_FILE)).unwrap();
    assert!(
        !text.contains("ipvs"),
        "an empty IPVS record is left out: {text}"
    );
    assert!(read_record(dir.path()).ipvs.is_empty());
}
