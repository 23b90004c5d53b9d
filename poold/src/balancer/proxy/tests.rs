//! Real sockets on loopback: backends are tokio listeners on 127.0.0.x.

use super::*;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// A backend that greets with its name, then echoes lines.
async fn echo_backend(ip: &str, name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind(format!("{ip}:0")).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                write
                    .write_all(format!("{name}\n").as_bytes())
                    .await
                    .unwrap();
                let mut lines = BufReader::new(read).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if write
                        .write_all(format!("{line}\n").as_bytes())
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            });
        }
    });
    addr
}

struct Client {
    name: String,
    lines: tokio::io::Lines<BufReader<OwnedReadHalf>>,
    write: OwnedWriteHalf,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Self {
        let (read, write) = TcpStream::connect(addr).await.unwrap().into_split();
        let mut lines = BufReader::new(read).lines();
        let name = lines.next_line().await.unwrap().expect("backend greeting");
        Self { name, lines, write }
    }
    async fn echo(&mut self, text: &str) -> String {
        self.write
            .write_all(format!("{text}\n").as_bytes())
            .await
            .unwrap();
        self.lines.next_line().await.unwrap().expect("echo")
    }
}

async fn proxy_on(ip: &str) -> (ProxyBalancer, VirtualService) {
    // Find a free port, then let the proxy bind it.
    let probe = TcpListener::bind(format!("{ip}:0")).await.unwrap();
    let listen = probe.local_addr().unwrap();
    drop(probe);
    let service = VirtualService {
        name: "web".into(),
        listen,
        scheduler: "wlc".into(),
    };
    let proxy = ProxyBalancer::new();
    proxy.ensure_service(&service).await.unwrap();
    (proxy, service)
}

/// Waits (bounded) until the stats satisfy `condition`.
async fn stats_until(
    proxy: &ProxyBalancer,
    service: &VirtualService,
    condition: impl Fn(&HashMap<SocketAddr, BackendStats>) -> bool,
) -> HashMap<SocketAddr, BackendStats> {
    for _ in 0..500 {
        let stats = proxy.backend_stats(service).await.unwrap();
        if condition(&stats) {
            return stats;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "stats never matched: {:?}",
        proxy.backend_stats(service).await.unwrap()
    );
}

#[tokio::test]
async fn weighted_least_connection_with_exact_counts() {
    let (proxy, service) = proxy_on("127.0.0.20").await;
    let one = echo_backend("127.0.0.21", "one").await;
    let two = echo_backend("127.0.0.22", "two").await;
    proxy.add_backend(&service, one, 1).await.unwrap();
    proxy.add_backend(&service, two, 2).await.unwrap();
    let mut clients = Vec::new();
    for _ in 0..6 {
        clients.push(Client::connect(service.listen).await);
    }
    let on_two = clients.iter().filter(|c| c.name == "two").count();
    assert_eq!(on_two, 4, "weight 2 gets twice the connections");
    let stats = proxy.backend_stats(&service).await.unwrap();
    assert_eq!((stats[&one].active, stats[&one].total), (2, 2));
    assert_eq!(
        (stats[&two].active, stats[&two].total, stats[&two].weight),
        (4, 4, 2)
    );
    for client in &mut clients {
        let name = client.name.clone();
        assert_eq!(
            client.echo(&format!("hello {name}")).await,
            format!("hello {name}")
        );
    }
    clients.truncate(1);
    let stats = stats_until(&proxy, &service, |s| s[&one].active + s[&two].active == 1).await;
    assert_eq!(stats[&one].total + stats[&two].total, 6);
}

#[tokio::test]
async fn weight_zero_drains_while_open_connections_continue() {
    let (proxy, service) = proxy_on("127.0.0.30").await;
    let old = echo_backend("127.0.0.31", "old").await;
    proxy.add_backend(&service, old, 1).await.unwrap();
    let mut open = Client::connect(service.listen).await;
    assert_eq!(open.name, "old");

    let new = echo_backend("127.0.0.32", "new").await;
    proxy.add_backend(&service, new, 1).await.unwrap();
    proxy.set_weight(&service, old, 0).await.unwrap();
    for _ in 0..3 {
        assert_eq!(Client::connect(service.listen).await.name, "new");
    }
    // The drained backend's connection still works and is still counted.
    assert_eq!(open.echo("still here").await, "still here");
    let stats = proxy.backend_stats(&service).await.unwrap();
    assert_eq!((stats[&old].active, stats[&old].weight), (1, 0));

    // Removing it (its worker is stopped or gone) closes what is left on purpose.
    proxy.remove_backend(&service, old).await.unwrap();
    assert_eq!(
        open.lines.next_line().await.unwrap(),
        None,
        "client sees EOF"
    );
    assert!(!proxy
        .backend_stats(&service)
        .await
        .unwrap()
        .contains_key(&old));
    let stats = stats_until(&proxy, &service, |s| s[&new].active == 0).await;
    assert_eq!(stats[&new].total, 3);
}

/// A backend that closes its side closes the client's connection too (no half-open client,
/// no proxy socket left in CLOSE-WAIT).
#[tokio::test]
async fn backend_closing_closes_the_client() {
    let (proxy, service) = proxy_on("127.0.0.70").await;
    let listener = TcpListener::bind("127.0.0.71:0").await.unwrap();
    let backend = listener.local_addr().unwrap();
    proxy.add_backend(&service, backend, 1).await.unwrap();
    let mut client = TcpStream::connect(service.listen).await.unwrap();
    let (upstream, _) = listener.accept().await.unwrap();
    drop(upstream);
    let mut buf = [0u8; 1];
    let read = tokio::io::AsyncReadExt::read(&mut client, &mut buf).await;
    assert!(matches!(read, Ok(0)), "client sees EOF: {read:?}");
    stats_until(&proxy, &service, |s| s[&backend].active == 0).await;
}

/// At `max_client_connections`, a new client takes the place of the one idle the longest.
#[tokio::test]
async fn at_the_client_limit_the_longest_idle_client_makes_room() {
    let probe = TcpListener::bind("127.0.0.75:0").await.unwrap();
    let listen = probe.local_addr().unwrap();
    drop(probe);
    let service = VirtualService {
        name: "web".into(),
        listen,
        scheduler: "wlc".into(),
    };
    let proxy = ProxyBalancer::with_client_limits([("web".to_owned(), 2)]);
    proxy.ensure_service(&service).await.unwrap();
    let backend = echo_backend("127.0.0.76", "one").await;
    proxy.add_backend(&service, backend, 1).await.unwrap();
    let mut idle = Client::connect(listen).await;
    let mut busy = Client::connect(listen).await;
    tokio::time::sleep(CLIENT_MIN_IDLE + Duration::from_millis(100)).await;
    assert_eq!(busy.echo("busy").await, "busy");
    let mut new = Client::connect(listen).await;
    assert_eq!(new.echo("let in").await, "let in");
    assert_eq!(
        idle.lines.next_line().await.unwrap(),
        None,
        "idle client closed"
    );
    assert_eq!(busy.echo("still here").await, "still here");
    // Nothing idle long enough now: a fourth client is refused rather than anyone cut.
    let mut refused = TcpStream::connect(listen).await.unwrap();
    let mut buf = [0u8; 1];
    let read = tokio::io::AsyncReadExt::read(&mut refused, &mut buf).await;
    assert!(matches!(read, Ok(0) | Err(_)), "refused: {read:?}");
    assert_eq!(new.echo("kept").await, "kept");
}

/// Shutdown: the listening socket closes, open connections continue and stay counted until
/// they end.
#[tokio::test]
async fn stop_accepting_closes_the_listener_and_open_connections_finish() {
    let (proxy, service) = proxy_on("127.0.0.35").await;
    let backend = echo_backend("127.0.0.36", "one").await;
    proxy.add_backend(&service, backend, 1).await.unwrap();
    let mut open = Client::connect(service.listen).await;
    proxy.stop_accepting(&service).await.unwrap();
    let mut refused = false;
    for _ in 0..500 {
        if TcpStream::connect(service.listen).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "{} still accepts", service.listen);
    assert_eq!(open.echo("still here").await, "still here");
    assert_eq!(
        proxy.backend_stats(&service).await.unwrap()[&backend].active,
        1
    );
    drop(open);
    stats_until(&proxy, &service, |s| s[&backend].active == 0).await;
    proxy.remove_service(&service).await.unwrap();
}

#[tokio::test]
async fn refused_backend_is_skipped() {
    let (proxy, service) = proxy_on("127.0.0.40").await;
    let dead = {
        let listener = TcpListener::bind("127.0.0.41:0").await.unwrap();
        listener.local_addr().unwrap()
    };
    let live = echo_backend("127.0.0.42", "live").await;
    proxy.add_backend(&service, dead, 100).await.unwrap();
    proxy.add_backend(&service, live, 1).await.unwrap();
    let mut client = Client::connect(service.listen).await;
    assert_eq!(client.name, "live");
    assert_eq!(client.echo("x").await, "x");
    let stats = proxy.backend_stats(&service).await.unwrap();
    assert_eq!((stats[&dead].active, stats[&dead].total), (0, 0));
}

#[tokio::test]
async fn no_backend_closes_the_client_and_missing_service_is_an_error() {
    let (proxy, service) = proxy_on("127.0.0.50").await;
    let mut stream = TcpStream::connect(service.listen).await.unwrap();
    let mut buf = [0u8; 1];
    // The proxy closes a client it has no backend for (a FIN: end of stream), at once.
    let read = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::io::AsyncReadExt::read(&mut stream, &mut buf),
    )
    .await
    .expect("the proxy left the client open");
    assert_eq!(read.unwrap(), 0, "end of stream");
    assert!(proxy.backend_stats(&service).await.unwrap().is_empty());

    proxy.remove_service(&service).await.unwrap();
    let missing = proxy.backend_stats(&service).await.unwrap_err();
    assert!(
        matches!(missing, BalancerError::NoSuchService { .. }),
        "{missing}"
    );
    // The listener is gone too.
    let mut refused = false;
    for _ in 0..100 {
        if TcpStream::connect(service.listen).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "proxy still listening after remove_service");
}

#[tokio::test]
async fn listen_conflict_names_the_service_and_address() {
    let taken = TcpListener::bind("127.0.0.60:0").await.unwrap();
    let service = VirtualService {
        name: "web".into(),
        listen: taken.local_addr().unwrap(),
        scheduler: "wlc".into(),
    };
    let error = ProxyBalancer::new()
        .ensure_service(&service)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with(&format!("service web: cannot listen on {}", service.listen)),
        "{error}"
    );
}

/// What a backend sends is counted as it is copied, while its connection is still open: the
/// supervisor reads a growing count as "this worker is answering its clients".
#[tokio::test]
async fn bytes_from_a_backend_are_counted_as_they_flow() {
    let (proxy, service) = proxy_on("127.0.0.90").await;
    let backend = echo_backend("127.0.0.91", "one").await;
    proxy.add_backend(&service, backend, 1).await.unwrap();
    let mut client = Client::connect(service.listen).await;
    // "one\n"
    stats_until(&proxy, &service, |s| s[&backend].out_bytes == 4).await;
    assert_eq!(client.echo("hello").await, "hello");
    stats_until(&proxy, &service, |s| s[&backend].out_bytes == 10).await;
}
