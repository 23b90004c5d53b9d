use super::*;
use std::path::Path;

fn config(services: &str, daemon: &str) -> Config {
    Config::parse(&format!("{daemon}\n{services}"), Path::new("poold.toml")).unwrap()
}

fn service(name: &str, ip: &str, extra: &str) -> String {
    format!(
        "[[service]]\nname = \"{name}\"\nlisten = \"{ip}:80\"\nworkers = 2\nport = 8080\n\
         rootfs = \"host\"\ncommand = [\"/bin/app\"]\n{extra}\n"
    )
}

#[test]
fn the_same_config_changes_nothing() {
    let running = config(&service("web", "10.212.0.1", ""), "");
    assert!(ConfigDiff::between(&running, &running.clone()).is_empty());
}

#[test]
fn services_added_removed_and_changed_are_sorted_by_how_they_apply() {
    let running = config(
        &format!(
            "{}{}{}",
            service("web", "10.212.0.1", ""),
            service("old", "10.212.0.2", ""),
            service("api", "10.212.0.3", "")
        ),
        "",
    );
    let new = config(
        &format!(
            "{}{}{}",
            service("web", "10.212.0.1", "weight = 5\nuser = \"nobody\""),
            service("api", "10.212.0.3", "workers = 4")
                .replace("workers = 2\n", "")
                .replace(
                    "command = [\"/bin/app\"]",
                    "command = [\"/bin/app\", \"-v\"]"
                ),
            service("new", "10.212.0.4", "")
        ),
        "",
    );
    let diff = ConfigDiff::between(&running, &new);
    assert_eq!(
        diff.added
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>(),
        ["new"]
    );
    assert_eq!(diff.removed, ["old"]);
    assert!(diff.refused.is_empty(), "{:?}", diff.refused);
    let web = diff.changed.iter().find(|c| c.name == "web").unwrap();
    assert_eq!(
        (web.in_place.clone(), web.rolling.clone()),
        (vec!["weight".to_owned()], vec!["user".to_owned()])
    );
    assert_eq!(web.config.weight, 5);
    let api = diff.changed.iter().find(|c| c.name == "api").unwrap();
    assert_eq!(api.in_place, ["workers"]);
    assert_eq!(api.rolling, ["command"]);
}

#[test]
fn nested_tables_are_one_key_each() {
    let running = config(
        &service("web", "10.212.0.1", "[service.limits]\nmemory = \"64M\""),
        "",
    );
    let new = config(
        &service(
            "web",
            "10.212.0.1",
            "[service.limits]\nmemory = \"128M\"\n[service.health]\ninterval = \"5s\"",
        ),
        "",
    );
    let diff = ConfigDiff::between(&running, &new);
    assert_eq!(diff.changed.len(), 1);
    assert_eq!(diff.changed[0].in_place, ["health"]);
    assert_eq!(diff.changed[0].rolling, ["limits"]);
}

#[test]
fn daemon_network_and_address_changes_are_refused_with_the_key() {
    let running = config(&service("web", "10.212.0.1", ""), "");
    let new = config(
        &service("web", "10.212.0.9", ""),
        "[daemon]\nstate_dir = \"/var/lib/other\"\n[network]\nbridge = \"pdbr9\"",
    );
    let refused: Vec<String> = ConfigDiff::between(&running, &new)
        .refused
        .iter()
        .map(|r| r.to_string())
        .collect();
    assert_eq!(refused.len(), 3, "{refused:?}");
    assert!(
        refused[0].starts_with("daemon.state_dir: daemon settings apply at start only"),
        "{refused:?}"
    );
    assert!(
        refused[1].starts_with("network.bridge: the worker network"),
        "{refused:?}"
    );
    assert!(
        refused[2].starts_with("service[web].listen: a service's address cannot change"),
        "{refused:?}"
    );
}
