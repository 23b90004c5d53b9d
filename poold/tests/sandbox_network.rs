//! The worker network against a hostile or careless host (root needed): foreign links named
//! as the bridge, a bridge deleted under running workers, workers reaching the host's own
//! services. Every link a test makes has a unique name and is removed by a Drop guard; the
//! host's real interfaces are never touched. Tags 70-82 (subnet 10.213.<tag>.0/24).

mod sandbox_support;

use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use poold::sandbox::{ContainerSpec, NetworkMode, Output, RootFs, SandboxError};
use sandbox_support::{eventually, TestSandbox};

/// Wrapped in `worker_network` so `--filter worker_network` selects every test here.
mod worker_network {
    use super::*;

    /// Runs `ip ARGS`, panicking with its stderr on failure.
    fn ip(args: &[&str]) -> String {
        let out = Command::new("ip").args(args).output().expect("run ip");
        assert!(
            out.status.success(),
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn link_exists(name: &str) -> bool {
        Path::new("/sys/class/net").join(name).exists()
    }

    /// Links a test made itself; deleted when dropped, even when the test fails.
    struct TestLinks(Vec<String>);

    impl Drop for TestLinks {
        fn drop(&mut self) {
            for name in &self.0 {
                let _ = Command::new("ip").args(["link", "del", name]).status();
            }
        }
    }

    fn bridge_name(t: &TestSandbox) -> String {
        t.config().bridge.as_ref().unwrap().name.clone()
    }

    /// A unique link name of this test process (not the sandbox's worker prefix).
    fn test_link(tag: u8, what: &str) -> String {
        format!("pdf{what}{}x{tag}", std::process::id() % 100_000)
    }

    /// A veth pair (not a bridge) under the name a test then gives as `network.bridge`;
    /// removed when the guard drops.
    fn foreign_veth(tag: u8) -> (String, TestLinks) {
        let name = test_link(tag, "v");
        let peer = test_link(tag, "w");
        let links = TestLinks(vec![name.clone()]);
        ip(&["link", "add", &name, "type", "veth", "peer", "name", &peer]);
        (name, links)
    }

    fn sleeper(t: &TestSandbox) -> ContainerSpec {
        let mut spec = ContainerSpec::new("net", RootFs::Dir(t.rootfs.clone()), "sleep");
        spec.args = vec!["600".into()];
        spec.network = NetworkMode::Bridged;
        spec.output = Output::Null;
        spec
    }

    fn httpd(t: &TestSandbox) -> ContainerSpec {
        let mut spec = ContainerSpec::new("web", RootFs::Dir(t.rootfs.clone()), "httpd");
        spec.args = ["-f", "-p", "8080", "-h", "/www"]
            .map(String::from)
            .to_vec();
        spec.network = NetworkMode::Bridged;
        spec.output = Output::Null;
        spec
    }

    fn answers(addr: std::net::Ipv4Addr) -> bool {
        answers_at((addr, 8080).into())
    }

    /// Whether an HTTP GET to `at` gets the worker's page.
    fn answers_at(at: std::net::SocketAddr) -> bool {
        let Ok(mut s) = std::net::TcpStream::connect_timeout(&at, Duration::from_secs(1)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let mut r = String::new();
        s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n").is_ok()
            && s.read_to_string(&mut r).is_ok()
            && r.contains("hello from the worker")
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_link_that_is_not_a_bridge_is_refused_and_never_deleted() {
        let t = TestSandbox::new(70);
        let name = bridge_name(&t);
        let peer = test_link(70, "p");
        let _links = TestLinks(vec![name.clone()]);
        ip(&["link", "add", &name, "type", "veth", "peer", "name", &peer]);
        let e = t.sandbox.spawn(sleeper(&t)).await.unwrap_err();
        assert!(
            matches!(e, SandboxError::ForeignBridge { .. }),
            "want ForeignBridge, got: {e}"
        );
        assert!(e.to_string().contains("veth, not a bridge"), "{e}");
        // A failed start still runs the shutdown path: it must leave the veth alone.
        t.sandbox.remove_bridge().await.unwrap();
        assert!(link_exists(&name), "the foreign veth was deleted");
        let addrs = ip(&["-4", "addr", "show", "dev", &name]);
        assert!(!addrs.contains("10.213.70.1"), "poold touched it: {addrs}");
        t.assert_nothing_left();
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_foreign_bridge_with_addresses_or_ports_is_refused_and_kept() {
        let t = TestSandbox::new(71);
        let name = bridge_name(&t);
        let (port, peer) = (test_link(71, "a"), test_link(71, "b"));
        let _links = TestLinks(vec![name.clone(), port.clone()]);
        ip(&["link", "add", &name, "type", "bridge"]);
        ip(&["addr", "add", "198.18.71.1/24", "dev", &name]);
        let e = t.sandbox.spawn(sleeper(&t)).await.unwrap_err();
        assert!(
            matches!(e, SandboxError::ForeignBridge { .. }),
            "want ForeignBridge, got: {e}"
        );
        assert!(e.to_string().contains("198.18.71.1/24"), "{e}");
        t.sandbox.remove_bridge().await.unwrap();
        assert!(link_exists(&name), "the foreign bridge was deleted");
        assert!(ip(&["-4", "addr", "show", "dev", &name]).contains("198.18.71.1/24"));

        ip(&["addr", "flush", "dev", &name]);
        ip(&["link", "add", &port, "type", "veth", "peer", "name", &peer]);
        ip(&["link", "set", &port, "master", &name]);
        let e = t.sandbox.spawn(sleeper(&t)).await.unwrap_err();
        assert!(e.to_string().contains(&port), "names the port: {e}");
        t.sandbox.remove_bridge().await.unwrap();
        assert!(link_exists(&name) && link_exists(&port));
        t.assert_nothing_left();
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn an_empty_foreign_bridge_is_borrowed_and_only_poolds_address_removed() {
        let t = TestSandbox::new(72);
        let name = bridge_name(&t);
        let _links = TestLinks(vec![name.clone()]);
        ip(&["link", "add", &name, "type", "bridge"]);
        let w = t.sandbox.spawn(httpd(&t)).await.unwrap();
        let addr = w.address().unwrap();
        eventually("httpd answers", || answers(addr).then_some(())).await;
        w.destroy().await.unwrap();
        t.sandbox.remove_bridge().await.unwrap();
        assert!(link_exists(&name), "a borrowed bridge stays");
        let addrs = ip(&["-4", "addr", "show", "dev", &name]);
        assert!(
            !addrs.contains("10.213.72.1"),
            "poold's address stays: {addrs}"
        );
        t.assert_nothing_left();
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_bridge_poold_made_is_marked_adopted_after_a_restart_and_removed() {
        let t = TestSandbox::new(73);
        let name = bridge_name(&t);
        let w = t.sandbox.spawn(sleeper(&t)).await.unwrap();
        let alias = std::fs::read_to_string(format!("/sys/class/net/{name}/ifalias")).unwrap();
        assert!(alias.starts_with("poold:"), "marked: {alias:?}");
        w.destroy().await.unwrap();
        // A restart of the same instance (same state dir) takes its own bridge back.
        let again = poold::sandbox::Sandbox::new(t.config().clone()).unwrap();
        let w = again.spawn(sleeper(&t)).await.unwrap();
        w.destroy().await.unwrap();
        again.remove_bridge().await.unwrap();
        assert!(!link_exists(&name), "poold's own bridge is removed");
        t.assert_nothing_left();
    }

    /// Runs `poold check` on a one-service config in `dir` with `bridge` and `subnet`, which
    /// must fail; returns the config's path and poold's stderr.
    fn failed_check(
        dir: &std::path::Path,
        bridge: &str,
        subnet: &str,
    ) -> (std::path::PathBuf, String) {
        let path = dir.join("poold.toml");
        std::fs::write(
            &path,
            format!(
                "[daemon]\nstate_dir = \"{}\"\n\n[network]\nbridge = \"{bridge}\"\nsubnet = \"{subnet}\"\n\n\
                 [[service]]\nname = \"web\"\nlisten = \"10.212.74.1:80\"\nworkers = 1\nport = 8080\n\
                 rootfs = \"host\"\ncommand = [\"/bin/true\"]\n",
                dir.join("state").display()
            ),
        )
        .unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_poold"))
            .arg("check")
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "check passed: {stderr}");
        (path, stderr)
    }

    #[test]
    fn poold_check_names_a_link_that_is_not_a_bridge() {
        let dir = tempfile::tempdir().unwrap();
        let (name, _links) = foreign_veth(74);
        let (path, stderr) = failed_check(dir.path(), &name, "10.213.74.0/24");
        assert!(
            stderr.contains(&format!(
                "{}:5:1: network.bridge: {name:?} is a veth, not a bridge",
                path.display()
            )),
            "{stderr}"
        );
    }

    /// A link already under the name of a later slice's bridge (`<bridge>-1`) that poold
    /// could not use is named by `poold check` too, not only when a worker first needs it.
    #[test]
    fn poold_check_names_a_foreign_link_under_a_slice_bridge_name() {
        let dir = tempfile::tempdir().unwrap();
        let base = test_link(74, "s");
        let (peer, peer2) = (format!("{base}-1"), test_link(74, "t"));
        let _links = TestLinks(vec![peer.clone()]);
        ip(&["link", "add", &peer, "type", "veth", "peer", "name", &peer2]);
        let (path, stderr) = failed_check(dir.path(), &base, "10.213.72.0/21");
        assert!(
            stderr.contains(&format!(
                "{}:5:1: network.bridge: {peer:?} is a veth, not a bridge",
                path.display()
            )),
            "{stderr}"
        );
    }

    /// `ip route get ADDR`, stdout and stderr.
    fn route_get(addr: std::net::Ipv4Addr) -> String {
        let out = Command::new("ip")
            .args(["route", "get", &addr.to_string()])
            .output()
            .expect("run ip");
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// The route to a worker goes over the bridge or nowhere (unreachable), never via
    /// another device (the default route, off the host).
    fn stays_on_host(route: &str, bridge: &str) -> bool {
        match route.split_whitespace().skip_while(|w| *w != "dev").nth(1) {
            Some(dev) => dev == bridge,
            None => true,
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_deleted_bridge_never_routes_worker_traffic_off_the_host_and_is_repaired() {
        let t = TestSandbox::new(75);
        let name = bridge_name(&t);
        let w = t.sandbox.spawn(httpd(&t)).await.unwrap();
        let addr = w.address().unwrap();
        eventually("httpd answers", || answers(addr).then_some(())).await;

        // Nobody repairs it yet: the worker subnet must not fall through to another route.
        ip(&["link", "del", &name]);
        let route = route_get(addr);
        assert!(
            stays_on_host(&route, &name),
            "with the bridge gone: {route}"
        );
        assert!(route.contains("No route to host"), "{route}");

        // The watcher repairs what it finds at start...
        t.sandbox.watch_bridge().unwrap();
        eventually("repaired at start", || answers(addr).then_some(())).await;
        // ...and on link events, while the worker runs.
        let breakages: [&[&str]; 2] = [&["link", "del", &name], &["link", "set", &name, "down"]];
        for breakage in breakages {
            let started = std::time::Instant::now();
            ip(breakage);
            eventually("repaired", || {
                let route = route_get(addr);
                assert!(stays_on_host(&route, &name), "after {breakage:?}: {route}");
                answers(addr).then_some(())
            })
            .await;
            eprintln!(
                "{breakage:?}: answering again after {:?}",
                started.elapsed()
            );
        }
        w.destroy().await.unwrap();
        t.sandbox.remove_bridge().await.unwrap();
        assert!(!link_exists(&name));
        let routes = ip(&["route", "show", "10.213.75.0/24"]);
        assert!(routes.trim().is_empty(), "left: {routes}");
        t.assert_nothing_left();
    }

    /// A worker's host veth taken off the bridge (`ip link set VETH nomaster`) is put back
    /// by the watcher's periodic check, which asks the kernel only for links on no bridge
    /// (a filtered dump: the unfiltered one cost a tenth of poold's idle CPU at 1,000
    /// workers; a kernel without that filter gets the full dump).
    #[tokio::test(flavor = "multi_thread")]
    async fn a_detached_worker_veth_is_put_back_on_the_bridge() {
        let t = TestSandbox::new(77);
        let name = bridge_name(&t);
        let w = t.sandbox.spawn(httpd(&t)).await.unwrap();
        let addr = w.address().unwrap();
        let veth = w.record().veth.expect("a bridged worker has a veth");
        eventually("httpd answers", || answers(addr).then_some(())).await;
        t.sandbox.watch_bridge().unwrap();
        ip(&["link", "set", &veth, "nomaster"]);
        eventually("the veth is back on the bridge", || {
            ip(&["-o", "link", "show", &veth])
                .contains(&format!(" master {name} "))
                .then_some(())
        })
        .await;
        eventually("httpd answers again", || answers(addr).then_some(())).await;
        w.destroy().await.unwrap();
        t.sandbox.remove_bridge().await.unwrap();
        t.assert_nothing_left();
    }

    /// A host service on all addresses that greets whoever connects and counts them.
    struct HostService {
        port: u16,
        accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    }

    fn host_service() -> HostService {
        // [::] takes IPv4 too (bindv6only is 0 by default): the usual "all addresses".
        let listener = std::net::TcpListener::bind("[::]:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        std::thread::spawn(move || {
            for mut conn in listener.incoming().flatten() {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let _ = conn.write_all(b"host-secret\n");
            }
        });
        HostService { port, accepted }
    }

    /// Runs a worker that tries `port` at each address and reports what it read. It first
    /// waits until its own IPv6 link-local address is usable (no longer tentative).
    async fn try_host_ports(
        sandbox: &poold::sandbox::Sandbox,
        t: &TestSandbox,
        targets: &[String],
        port: u16,
    ) -> String {
        let mut script = String::from(
            "i=0; while [ $i -lt 100 ] && ! grep -q ' 20 80 *eth0$' /proc/net/if_inet6; \
             do sleep 0.1; i=$((i+1)); done; ",
        );
        for a in targets {
            script.push_str(&format!("echo \"{a}=$(nc -w 2 {a} {port} </dev/null)\"; "));
        }
        let out = t.dir.path().join("probe.txt");
        let _ = std::fs::remove_file(&out);
        let mut spec = ContainerSpec::new("probe", RootFs::Dir(t.rootfs.clone()), "sh");
        spec.args = vec!["-c".into(), script];
        spec.network = NetworkMode::Bridged;
        spec.output = Output::File(out.clone());
        let mut w = sandbox.spawn(spec).await.unwrap();
        w.wait().await.unwrap();
        w.destroy().await.unwrap();
        std::fs::read_to_string(&out).unwrap()
    }

    /// The bridge's usable IPv6 link-local address, as a worker names it (`%eth0`), once a
    /// worker (`carrier`) is attached and duplicate address detection is over.
    async fn bridge_link_local(bridge: &str) -> String {
        eventually("the bridge's link-local address", || {
            let out = ip(&["-6", "addr", "show", "dev", bridge, "scope", "link"]);
            let line = out.lines().find(|l| l.contains("inet6 fe80"))?;
            if line.contains("tentative") {
                return None;
            }
            let addr = line.split_whitespace().nth(1)?.split('/').next()?;
            Some(format!("{addr}%eth0"))
        })
        .await
    }

    fn nft_table_exists(table: &str) -> bool {
        let nft = ["/usr/sbin/nft", "/sbin/nft"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap_or("nft");
        Command::new(nft)
            .args(["list", "table", "inet", table])
            .output()
            .expect("run nft")
            .status
            .success()
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn workers_reach_no_host_service_except_listed_ports() {
        let t = TestSandbox::new(76);
        let service = host_service();
        // Another address of the host, on a link of the test's own.
        let (other_link, other_peer) = (test_link(76, "h"), test_link(76, "i"));
        let _links = TestLinks(vec![other_link.clone()]);
        ip(&[
            "link",
            "add",
            &other_link,
            "type",
            "veth",
            "peer",
            "name",
            &other_peer,
        ]);
        ip(&["addr", "add", "198.18.76.1/32", "dev", &other_link]);
        ip(&["link", "set", &other_link, "up"]);
        let gateway = "10.213.76.1".to_string();
        let other = "198.18.76.1".to_string();
        let table = poold::sandbox::firewall_table(&t.config().link_prefix);
        let bridge = bridge_name(&t);

        // Closed by default, through the gateway, another host address and the bridge's IPv6
        // link-local address (the listener takes both families)...
        let carrier = t.sandbox.spawn(sleeper(&t)).await.unwrap();
        let targets = [gateway, other, bridge_link_local(&bridge).await];
        let seen = try_host_ports(&t.sandbox, &t, &targets, service.port).await;
        assert!(
            !seen.contains("host-secret"),
            "a worker reached the host: {seen}"
        );
        assert_eq!(
            service.accepted.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "{seen}"
        );
        assert!(nft_table_exists(&table));
        carrier.destroy().await.unwrap();
        // ...while the host still reaches workers (health checks, proxy: replies pass).
        let w = t.sandbox.spawn(httpd(&t)).await.unwrap();
        let addr = w.address().unwrap();
        eventually("httpd answers the host", || answers(addr).then_some(())).await;
        w.destroy().await.unwrap();
        t.sandbox.remove_bridge().await.unwrap();
        assert!(!nft_table_exists(&table), "the table goes with the bridge");

        // Open when listed.
        let mut config = t.config().clone();
        config.bridge.as_mut().unwrap().allow_host_ports = vec![service.port];
        let open = poold::sandbox::Sandbox::new(config).unwrap();
        let carrier = open.spawn(sleeper(&t)).await.unwrap();
        let targets = [
            targets[0].clone(),
            targets[1].clone(),
            bridge_link_local(&bridge).await,
        ];
        let seen = try_host_ports(&open, &t, &targets, service.port).await;
        assert_eq!(
            seen.matches("host-secret").count(),
            3,
            "listed port closed: {seen}"
        );
        carrier.destroy().await.unwrap();
        open.remove_bridge().await.unwrap();
        assert!(!nft_table_exists(&table), "the table goes with the bridge");
        t.assert_nothing_left();
    }

    /// The daemon's start path: a foreign link fails the start, clearly, and survives it
    /// (the shutdown after a failed start removes only what poold made).
    #[test]
    fn poold_refuses_to_start_on_a_foreign_link_and_leaves_it() {
        let dir = tempfile::tempdir().unwrap();
        let (name, _links) = foreign_veth(77);
        let path = dir.path().join("poold.toml");
        std::fs::write(
            &path,
            format!(
                "[daemon]\nstate_dir = \"{state}\"\ncontrol_socket = \"{state}/ctl.sock\"\n\
                 metrics_listen = \"127.0.0.1:0\"\nbalancer = \"proxy\"\n\
                 cgroup_parent = \"poold-nettest-{pid}\"\n\n\
                 [network]\nbridge = \"{name}\"\nsubnet = \"10.213.77.0/24\"\n\n\
                 [[service]]\nname = \"web\"\nlisten = \"127.0.0.1:1\"\nworkers = 1\nport = 8080\n\
                 rootfs = \"host\"\ncommand = [\"/bin/true\"]\n",
                state = dir.path().join("state").display(),
                pid = std::process::id(),
            ),
        )
        .unwrap();
        let log = dir.path().join("poold.log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_poold"))
            .arg("--config")
            .arg(&path)
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        // A refused start ends at once; a poold still running after this bound took the link.
        let status = (0..300).find_map(|_| {
            let done = child.try_wait().unwrap();
            if done.is_none() {
                std::thread::sleep(Duration::from_millis(100));
            }
            done
        });
        if status.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let stderr = std::fs::read_to_string(&log).unwrap();
        assert!(
            status.is_some_and(|s| !s.success()),
            "poold started ({status:?}): {stderr}"
        );
        assert!(stderr.contains("is a veth, not a bridge"), "{stderr}");
        assert!(link_exists(&name), "the foreign veth was deleted");
        let addrs = ip(&["-4", "addr", "show", "dev", &name]);
        assert!(
            addrs.trim().is_empty() || !addrs.contains("inet "),
            "{addrs}"
        );
        let routes = ip(&["route", "show", "10.213.77.0/24"]);
        assert!(routes.trim().is_empty(), "{routes}");
    }

    /// A host firewall reload (`nft flush ruleset` style) or a route cleanup must not leave
    /// the workers' host open or their traffic free to leave: the watcher restores both.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_removed_firewall_table_or_unreachable_route_is_restored() {
        let t = TestSandbox::new(78);
        let w = t.sandbox.spawn(sleeper(&t)).await.unwrap();
        let table = poold::sandbox::firewall_table(&t.config().link_prefix);
        let subnet = "10.213.78.0/24";
        let has_route =
            || ip(&["route", "show", "type", "unreachable", subnet]).contains("metric 1000000");
        assert!(has_route() && nft_table_exists(&table));
        t.sandbox.watch_bridge().unwrap();
        let nft = ["/usr/sbin/nft", "/sbin/nft"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap_or("nft");
        let deleted = Command::new(nft)
            .args(["delete", "table", "inet", &table])
            .status()
            .unwrap();
        assert!(deleted.success());
        eventually("firewall table restored", || {
            nft_table_exists(&table).then_some(())
        })
        .await;
        ip(&["route", "del", "unreachable", subnet, "metric", "1000000"]);
        eventually("unreachable route restored", || has_route().then_some(())).await;
        w.destroy().await.unwrap();
        t.sandbox.remove_bridge().await.unwrap();
        assert!(!has_route() && !nft_table_exists(&table));
        t.assert_nothing_left();
    }

    /// The daemon's runtime sets the bridge up at start, watches it, and takes the bridge,
    /// route and firewall table away at shutdown.
    #[tokio::test(flavor = "multi_thread")]
    async fn the_daemons_runtime_repairs_its_bridge_and_removes_it_at_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let pid = std::process::id() % 100_000;
        let bridge = format!("pdbr{pid}x79");
        let text = format!(
            "[daemon]\nstate_dir = \"{}\"\ncgroup_parent = \"poold-nettest-{pid}-79\"\n\n\
             [network]\nbridge = \"{bridge}\"\nsubnet = \"10.213.79.0/24\"\n\n\
             [[service]]\nname = \"web\"\nlisten = \"127.0.0.1:1\"\nworkers = 1\nport = 8080\n\
             rootfs = \"host\"\ncommand = [\"/bin/true\"]\n",
            dir.path().join("state").display()
        );
        let config = poold::config::Config::parse(&text, Path::new("test.toml")).unwrap();
        let table = poold::sandbox::firewall_table(
            &poold::runtime::sandbox::sandbox_config(&config).link_prefix,
        );
        let _links = TestLinks(vec![bridge.clone()]);
        let runtime = poold::runtime::sandbox::SandboxRuntime::start(&config)
            .await
            .unwrap();
        assert!(link_exists(&bridge) && nft_table_exists(&table));
        ip(&["link", "del", &bridge]);
        eventually("the runtime's watcher makes the bridge again", || {
            // Once back it stays: the short circuit never asks ip about a missing link.
            (link_exists(&bridge)
                && ip(&["-4", "addr", "show", "dev", &bridge]).contains("10.213.79.1/24"))
            .then_some(())
        })
        .await;
        runtime.shutdown().await.unwrap();
        assert!(!link_exists(&bridge), "poold's bridge is removed");
        assert!(!nft_table_exists(&table));
        let routes = ip(&["route", "show", "10.213.79.0/24"]);
        assert!(routes.trim().is_empty(), "{routes}");
    }

    /// The links of the host whose names start with `prefix`.
    fn links_starting_with(prefix: &str) -> Vec<String> {
        std::fs::read_dir("/sys/class/net")
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(prefix))
            .collect()
    }

    /// The bridge a host veth hangs off (`master NAME` in `ip -o link show`).
    fn master_of(veth: &str) -> Option<String> {
        let line = ip(&["-o", "link", "show", veth]);
        let mut words = line.split_whitespace();
        words.find(|w| *w == "master")?;
        words.next().map(str::to_owned)
    }

    fn alias_of(link: &str) -> String {
        std::fs::read_to_string(format!("/sys/class/net/{link}/ifalias"))
            .unwrap_or_default()
            .trim()
            .to_owned()
    }

    /// Issue 12: a bridge takes at most 1,023 ports, so the subnet is cut into slices with a
    /// bridge each (a /22 in production; a /30 here, one worker per slice, so three workers
    /// span three bridges). Each worker sits on its slice's bridge with the slice's gateway,
    /// answers the host, and reaches no host service from any bridge, also one made after
    /// the firewall was first installed; everything goes at teardown.
    #[tokio::test(flavor = "multi_thread")]
    async fn workers_on_several_bridges_answer_the_host_and_reach_no_host_service() {
        let t = TestSandbox::with_slice_prefix(80, 30);
        let base = bridge_name(&t);
        let service = host_service();
        let table = poold::sandbox::firewall_table(&t.config().link_prefix);
        let mut workers = Vec::new();
        for slice in 0..3u32 {
            let w = t.sandbox.spawn(httpd(&t)).await.unwrap();
            let addr = w.address().unwrap();
            // One worker per /30 slice: .2, .6, .10 on bridges base, base-1, base-2.
            assert_eq!(
                addr,
                std::net::Ipv4Addr::new(10, 213, 80, 4 * slice as u8 + 2)
            );
            let bridge = poold::sandbox::bridge_name(&base, slice);
            assert_eq!(t.sandbox.bridge_of(addr).as_deref(), Some(bridge.as_str()));
            let veth = w.record().veth.unwrap();
            assert_eq!(master_of(&veth).as_deref(), Some(bridge.as_str()), "{veth}");
            // The slice's gateway is on its bridge, and the host routes the slice there.
            let gateway = format!("10.213.80.{}/30", 4 * slice + 1);
            assert!(ip(&["-4", "addr", "show", "dev", &bridge]).contains(&gateway));
            let route = route_get(addr);
            assert!(route.contains(&format!("dev {bridge} ")), "{route}");
            // Every bridge poold made carries its marker: orphan cleanup finds it by that.
            assert_eq!(Some(alias_of(&bridge).as_str()), t.sandbox.bridge_marker());
            workers.push((w, addr));
        }
        for (_, addr) in &workers {
            eventually("each worker answers the host", || {
                answers(*addr).then_some(())
            })
            .await;
        }
        // A probe on a fourth bridge, made after the firewall was first installed, tries its
        // own gateway and those of two other slices.
        let targets = ["10.213.80.13", "10.213.80.1", "10.213.80.5"].map(String::from);
        let seen = try_host_ports(&t.sandbox, &t, &targets, service.port).await;
        assert!(
            !seen.contains("host-secret"),
            "a worker reached the host: {seen}"
        );
        assert_eq!(seen.matches("=").count(), 3, "the probe ran: {seen}");
        assert_eq!(
            service.accepted.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "{seen}"
        );
        for (w, _) in workers {
            w.destroy().await.unwrap();
        }
        t.sandbox.remove_bridge().await.unwrap();
        let left = links_starting_with(&base);
        assert!(left.is_empty(), "bridges left: {left:?}");
        let routes = ip(&["route", "show", "root", "10.213.80.0/24"]);
        assert!(routes.trim().is_empty(), "routes left: {routes}");
        assert!(!nft_table_exists(&table), "the table goes with the bridges");
        t.assert_nothing_left();
    }

    /// After a restart, a worker adopted on slice 1 gets its bridge back: made again if
    /// deleted (with the marker), its veth put back on it (not on slice 0's) when detached.
    #[tokio::test(flavor = "multi_thread")]
    async fn an_adopted_worker_on_a_second_bridge_is_watched_and_put_back_there() {
        let t = TestSandbox::with_slice_prefix(81, 30);
        let base = bridge_name(&t);
        let second = poold::sandbox::bridge_name(&base, 1);
        let first = t.sandbox.spawn(httpd(&t)).await.unwrap();
        let w = t.sandbox.spawn(httpd(&t)).await.unwrap();
        let record = w.record();
        let addr = w.address().unwrap();
        assert_eq!(t.sandbox.bridge_of(addr).as_deref(), Some(second.as_str()));
        // "poold dies" with the worker of slice 1 alive.
        std::mem::forget(w);
        first.destroy().await.unwrap();

        let restarted = poold::sandbox::Sandbox::new(t.config().clone()).unwrap();
        let adopted = restarted.adopt(&record).unwrap();
        restarted.ensure_bridge().await.unwrap();
        restarted.watch_bridge().unwrap();
        eventually("the adopted worker answers", || answers(addr).then_some(())).await;
        let veth = record.veth.clone().unwrap();
        ip(&["link", "set", &veth, "nomaster"]);
        eventually("the veth is back on its own slice's bridge", || {
            (master_of(&veth).as_deref() == Some(second.as_str())).then_some(())
        })
        .await;
        eventually("answers again", || answers(addr).then_some(())).await;
        ip(&["link", "del", &second]);
        eventually("the second bridge is made again", || {
            (link_exists(&second)
                && master_of(&veth).as_deref() == Some(second.as_str())
                && answers(addr))
            .then_some(())
        })
        .await;
        assert_eq!(Some(alias_of(&second).as_str()), restarted.bridge_marker());
        adopted.destroy().await.unwrap();
        restarted.remove_bridge().await.unwrap();
        let left = links_starting_with(&base);
        assert!(left.is_empty(), "bridges left: {left:?}");
        let routes = ip(&["route", "show", "root", "10.213.81.0/24"]);
        assert!(routes.trim().is_empty(), "routes left: {routes}");
        t.assert_nothing_left();
    }

    /// IPVS MASQ (VM only) reaches workers on every bridge: one worker on slice 0's bridge,
    /// one on slice 1's, both real servers of one virtual service, a host-local client.
    #[tokio::test(flavor = "multi_thread")]
    #[ignore = "vm: needs IPVS"]
    async fn ipvs_masq_reaches_workers_on_every_bridge() {
        use poold::balancer::{Balancer, ClientPolicy, VirtualService};
        let t = TestSandbox::with_slice_prefix(82, 30);
        let base = bridge_name(&t);
        let mut workers = Vec::new();
        for slice in 0..2u32 {
            let w = t.sandbox.spawn(httpd(&t)).await.unwrap();
            let addr = w.address().unwrap();
            let bridge = poold::sandbox::bridge_name(&base, slice);
            assert_eq!(t.sandbox.bridge_of(addr).as_deref(), Some(bridge.as_str()));
            eventually("the worker answers the host", || {
                answers(addr).then_some(())
            })
            .await;
            workers.push((w, std::net::SocketAddr::from((addr, 8080))));
        }
        let balancer = poold::balancer::ipvs::IpvsBalancer::new().await.unwrap();
        let service = VirtualService {
            name: "slices".into(),
            listen: "10.212.82.1:80".parse().unwrap(),
            scheduler: "rr".into(),
            clients: ClientPolicy::default(),
        };
        balancer.ensure_service(&service).await.unwrap();
        for (_, backend) in &workers {
            balancer.add_backend(&service, *backend, 1).await.unwrap();
        }
        // Round robin: four connections, two to each worker.
        for _ in 0..4 {
            assert!(answers_at(service.listen), "through IPVS to {:?}", workers);
        }
        // IPVS's cumulative counters are refreshed by its estimator every 2 s, not at each
        // connection: read them until both show their connections (up to 10 s).
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let stats = balancer.backend_stats(&service).await.unwrap();
            let idle: Vec<_> = workers
                .iter()
                .map(|(_, backend)| backend)
                .filter(|backend| stats[backend].total == 0)
                .collect();
            if idle.is_empty() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{idle:?} served none: {stats:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        balancer.remove_service(&service).await.unwrap();
        for (w, _) in workers {
            w.destroy().await.unwrap();
        }
        t.sandbox.remove_bridge().await.unwrap();
        let left = links_starting_with(&base);
        assert!(left.is_empty(), "bridges left: {left:?}");
        t.assert_nothing_left();
    }
}
