use super::*;

fn stats(weight: u32) -> BackendStats {
    BackendStats {
        weight,
        ..BackendStats::default()
    }
}

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

#[test]
fn a_stats_table_finds_every_backend_whatever_the_dump_order() {
    // Ports, addresses and the order a kernel dump may list them in, mixed.
    let dump = [
        ("10.0.3.1:80", 1),
        ("10.0.0.9:80", 2),
        ("10.0.1.2:8080", 3),
        ("10.0.1.2:80", 4),
        ("10.0.0.10:80", 5),
    ];
    let table: BackendStatsTable = dump.iter().map(|(a, w)| (addr(a), stats(*w))).collect();
    assert_eq!(table.len(), dump.len());
    for (a, w) in dump {
        assert_eq!(table.get(&addr(a)), Some(&stats(w)), "{a}");
        assert_eq!(table[&addr(a)].weight, w);
    }
    assert_eq!(table.get(&addr("10.0.1.2:81")), None);
    assert!(!table.contains_key(&addr("10.0.0.1:80")));
    let listed: Vec<SocketAddr> = table.iter().map(|(a, _)| *a).collect();
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(listed, sorted, "listed in address order");
}

#[test]
fn a_stats_table_keeps_the_first_of_an_address_listed_twice() {
    let table: BackendStatsTable = [
        (addr("10.0.0.2:80"), stats(7)),
        (addr("10.0.0.1:80"), stats(1)),
        (addr("10.0.0.2:80"), stats(8)),
    ]
    .into_iter()
    .collect();
    assert_eq!(table.len(), 2);
    assert_eq!(table[&addr("10.0.0.2:80")].weight, 7);
    assert!(BackendStatsTable::default().is_empty());
}
