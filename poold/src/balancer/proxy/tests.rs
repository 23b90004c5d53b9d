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
        clients: ClientPolicy::default(),
    };
    let proxy = ProxyBalancer::new();
    proxy.ensure_service(&service).await.unwrap();
    (proxy, service)
}

/// Waits (bounded) until the stats satisfy `condition`.
async fn stats_until(
    proxy: &ProxyBalancer,
    service: &VirtualService,
    condition: impl Fn(&BackendStatsTable) -> bool,
) -> BackendStatsTable {
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
        clients: ClientPolicy::default(),
    };
    let service = VirtualService {
        clients: ClientPolicy {
            max: 2,
            ..ClientPolicy::default()
        },
        ..service
    };
    let proxy = ProxyBalancer::new();
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

    // A reload raises the limit: the next client gets in with nobody cut.
    let raised = VirtualService {
        clients: ClientPolicy {
            max: 3,
            ..service.clients
        },
        ..service.clone()
    };
    proxy.ensure_service(&raised).await.unwrap();
    let mut third = Client::connect(listen).await;
    assert_eq!(third.echo("room").await, "room");
    assert_eq!(busy.echo("busy").await, "busy");
    assert_eq!(new.echo("kept").await, "kept");
}

/// `backend_connect = "on-client-data"`: a client that connects and says nothing never
/// reaches a backend; its first bytes, sent before any backend was chosen, arrive intact.
/// Switched back by a reload, the next client is connected at once.
#[tokio::test]
async fn on_client_data_an_idle_client_never_reaches_a_backend() {
    let (proxy, service) = proxy_on("127.0.0.77").await;
    let service = VirtualService {
        clients: ClientPolicy {
            connect: BackendConnect::OnClientData,
            ..service.clients
        },
        ..service
    };
    proxy.ensure_service(&service).await.unwrap();
    let backend = echo_backend("127.0.0.78", "one").await;
    proxy.add_backend(&service, backend, 1).await.unwrap();

    let mut idle = Vec::new();
    for _ in 0..20 {
        idle.push(TcpStream::connect(service.listen).await.unwrap());
    }
    let (read, mut write) = TcpStream::connect(service.listen)
        .await
        .unwrap()
        .into_split();
    // Long enough for a connect-on-accept proxy to have reached the backend.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stats = proxy.backend_stats(&service).await.unwrap();
    assert_eq!(
        (stats[&backend].active, stats[&backend].total),
        (0, 0),
        "silent clients reached the backend"
    );
    write.write_all(b"first words\n").await.unwrap();
    let mut lines = BufReader::new(read).lines();
    assert_eq!(lines.next_line().await.unwrap().as_deref(), Some("one"));
    assert_eq!(
        lines.next_line().await.unwrap().as_deref(),
        Some("first words")
    );
    let stats = proxy.backend_stats(&service).await.unwrap();
    assert_eq!((stats[&backend].active, stats[&backend].total), (1, 1));
    // A silent client that gives up leaves nothing behind.
    drop(idle);

    let on_accept = VirtualService {
        clients: ClientPolicy {
            connect: BackendConnect::OnAccept,
            ..service.clients
        },
        ..service.clone()
    };
    proxy.ensure_service(&on_accept).await.unwrap();
    let greeted = Client::connect(service.listen).await;
    assert_eq!(greeted.name, "one");
    stats_until(&proxy, &service, |s| s[&backend].total == 2).await;
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
async fn a_client_that_comes_before_the_first_backend_waits_for_it() {
    // After a restart or an upgrade the listener accepts before the pool has added the
    // workers it adopted: such a client must be served, not closed.
    let (proxy, service) = proxy_on("127.0.0.51").await;
    let listen = service.listen;
    let client = tokio::spawn(async move {
        let mut client = Client::connect(listen).await;
        let echoed = client.echo("early").await;
        (client.name, echoed)
    });
    // The proxy accepts the client at once; the backend comes ~200 ms later.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let late = echo_backend("127.0.0.52", "late").await;
    proxy.add_backend(&service, late, 1).await.unwrap();
    let (name, echoed) = tokio::time::timeout(Duration::from_secs(10), client)
        .await
        .expect("the waiting client was not served")
        .expect("the client was closed instead of waiting for the backend");
    assert_eq!((name.as_str(), echoed.as_str()), ("late", "early"));
}

#[tokio::test]
async fn no_backend_closes_the_client_after_the_wait_and_missing_service_is_an_error() {
    let (proxy, service) = proxy_on("127.0.0.50").await;
    let started = std::time::Instant::now();
    let mut stream = TcpStream::connect(service.listen).await.unwrap();
    let mut buf = [0u8; 1];
    // The proxy closes a client no backend came for (a FIN: end of stream), once the wait
    // for a first backend is over, not before.
    let read = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::io::AsyncReadExt::read(&mut stream, &mut buf),
    )
    .await
    .expect("the proxy left the client open");
    assert_eq!(read.unwrap(), 0, "end of stream");
    assert!(
        started.elapsed() >= FIRST_BACKEND_WAIT,
        "closed after {:?}, before the wait for a first backend ({FIRST_BACKEND_WAIT:?})",
        started.elapsed()
    );
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
        clients: ClientPolicy::default(),
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

/// Connections run on the proxy's own threads: they are relayed while the runtime that
/// made the balancer (the daemon's) is not running at all.
#[test]
fn connections_are_served_on_the_proxy_threads() {
    use std::io::{BufRead, Write};
    let backend = std::net::TcpListener::bind("127.0.0.80:0").unwrap();
    let backend_addr = backend.local_addr().unwrap();
    std::thread::spawn(move || {
        let (stream, _) = backend.accept().unwrap();
        let mut write = stream.try_clone().unwrap();
        write.write_all(b"one\n").unwrap();
        for line in std::io::BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if write.write_all(format!("{line}\n").as_bytes()).is_err() {
                break;
            }
        }
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (proxy, service) = runtime.block_on(async {
        let (proxy, service) = proxy_on("127.0.0.81").await;
        proxy.add_backend(&service, backend_addr, 1).await.unwrap();
        (proxy, service)
    });
    // From here on nothing drives `runtime`.
    let client = std::net::TcpStream::connect(service.listen).unwrap();
    // Bounds the wait for a failure; the proxy answers at once when it works.
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut write = client.try_clone().unwrap();
    let mut lines = std::io::BufReader::new(client).lines();
    let greeting = lines.next().expect("greeting").map_err(|e| e.kind());
    assert_eq!(
        greeting,
        Ok("one".to_owned()),
        "not relayed while the caller's runtime is idle"
    );
    write.write_all(b"ping\n").unwrap();
    assert_eq!(lines.next().unwrap().unwrap(), "ping");
    drop((write, lines));
    runtime.block_on(async {
        stats_until(&proxy, &service, |s| s[&backend_addr].active == 0).await;
    });
}

/// A worker that closes first gets a reset, not a FIN to acknowledge: its socket is gone at
/// once instead of waiting in TIME_WAIT (the client's side still ends with a FIN after all
/// the data).
#[tokio::test]
async fn backend_closing_first_is_answered_with_a_reset() {
    let (proxy, service) = proxy_on("127.0.0.85").await;
    let listener = TcpListener::bind("127.0.0.86:0").await.unwrap();
    let backend = listener.local_addr().unwrap();
    proxy.add_backend(&service, backend, 1).await.unwrap();
    let mut client = TcpStream::connect(service.listen).await.unwrap();
    let (mut upstream, _) = listener.accept().await.unwrap();
    upstream.write_all(b"bye\n").await.unwrap();
    // Half-close: the proxy sees the end of the answer; this socket can still see the reply.
    upstream.shutdown().await.unwrap();
    let mut answer = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut client, &mut answer)
        .await
        .unwrap();
    assert_eq!(answer, b"bye\n", "the client gets all the data, then a FIN");
    let mut buf = [0u8; 1];
    let read = tokio::io::AsyncReadExt::read(&mut upstream, &mut buf).await;
    assert_eq!(
        read.map_err(|e| e.kind()),
        Err(std::io::ErrorKind::ConnectionReset),
        "the proxy answered the worker's FIN with a FIN, not a reset"
    );
    stats_until(&proxy, &service, |s| s[&backend].active == 0).await;
}

/// The proxy's listening sockets share their address among its threads (SO_REUSEPORT), yet
/// a second proxy (another poold) on that address is refused rather than silently given
/// part of the clients.
#[tokio::test]
async fn a_second_proxy_on_the_same_address_is_refused() {
    let (_first, service) = proxy_on("127.0.0.90").await;
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
    let (proxy, service) = proxy_on("127.0.0.92").await;
    let backend = echo_backend("127.0.0.93", "one").await;
    proxy.add_backend(&service, backend, 1).await.unwrap();
    let mut client = Client::connect(service.listen).await;
    // "one\n"
    stats_until(&proxy, &service, |s| s[&backend].out_bytes == 4).await;
    assert_eq!(client.echo("hello").await, "hello");
    stats_until(&proxy, &service, |s| s[&backend].out_bytes == 10).await;
}

/// `len` bytes of a pattern that a shifted or dropped page would break.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i % 251) as u8 ^ seed ^ (i / 4096) as u8)
        .collect()
}

/// A connected pair of loopback sockets: (the end that writes, the end that reads).
async fn socket_pair(ip: &str) -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind(format!("{ip}:0")).await.unwrap();
    let writer = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (reader, _) = listener.accept().await.unwrap();
    (writer, reader)
}

/// Relays `sent` from one socket pair into another and returns what `relay` reports and what
/// arrived. With `queued_first` the relay starts only once a whole buffer is waiting.
async fn relay_between(ip: &str, sent: Vec<u8>, queued_first: bool) -> (Relayed, Vec<u8>, u64) {
    let (mut source, mut from) = socket_pair(ip).await;
    let (mut to, mut sink) = socket_pair(ip).await;
    let len = sent.len();
    let writer = tokio::spawn(async move {
        source.write_all(&sent).await.unwrap();
        // EOF: the relay ends.
        drop(source);
    });
    if queued_first {
        let mut peeked = vec![0u8; RELAY_BUFFER];
        while from.peek(&mut peeked).await.unwrap() < RELAY_BUFFER {
            tokio::task::yield_now().await;
        }
    }
    let reader = tokio::spawn(async move {
        let mut received = Vec::with_capacity(len);
        tokio::io::AsyncReadExt::read_to_end(&mut sink, &mut received)
            .await
            .unwrap();
        received
    });
    let mut counted = 0u64;
    let relayed = {
        let (mut from_read, _) = from.split();
        let (_, mut to_write) = to.split();
        relay(&mut from_read, &mut to_write, |bytes| {
            counted += bytes as u64
        })
        .await
        .unwrap()
    };
    drop(to);
    writer.await.unwrap();
    (relayed, reader.await.unwrap(), counted)
}

/// Small messages are copied (one read, one write: no pipe set up for them); what does not
/// fit one buffer goes through a pipe with splice(2), arrives intact and is counted.
#[tokio::test]
async fn relay_splices_what_does_not_fit_one_buffer_and_copies_small_messages() {
    let small = pattern(100, 1);
    let (relayed, received, counted) = relay_between("127.0.0.94", small.clone(), false).await;
    assert_eq!(
        relayed,
        Relayed {
            bytes: 100,
            spliced: 0
        }
    );
    assert_eq!((received, counted), (small, 100));

    let large = pattern(3 << 20, 2);
    let (relayed, received, counted) = relay_between("127.0.0.94", large.clone(), true).await;
    assert_eq!(relayed.bytes, 3 << 20);
    assert!(
        relayed.spliced >= (3 << 20) - RELAY_BUFFER as u64,
        "after one full buffer the rest goes through the pipe: {relayed:?}"
    );
    assert_eq!(counted, 3 << 20, "every byte is reported to on_read");
    assert!(
        received == large,
        "the spliced bytes arrive intact and in order"
    );
}

/// Through the proxy, a large upload (client to worker) and a large answer (worker to
/// client, after the client's half-close) both arrive intact, and the answer is counted in
/// the backend's out_bytes.
#[tokio::test]
async fn large_transfers_both_ways_arrive_intact_and_counted() {
    let (proxy, service) = proxy_on("127.0.0.95").await;
    let listener = TcpListener::bind("127.0.0.96:0").await.unwrap();
    let backend = listener.local_addr().unwrap();
    proxy.add_backend(&service, backend, 1).await.unwrap();
    let upload = pattern(4 << 20, 3);
    let answer = pattern(5 << 20, 4);
    let worker = {
        let (upload, answer) = (upload.clone(), answer.clone());
        tokio::spawn(async move {
            let (mut upstream, _) = listener.accept().await.unwrap();
            let mut received = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut upstream, &mut received)
                .await
                .unwrap();
            assert!(received == upload, "the upload arrived intact");
            upstream.write_all(&answer).await.unwrap();
        })
    };
    let client = TcpStream::connect(service.listen).await.unwrap();
    let (mut read, mut write) = client.into_split();
    write.write_all(&upload).await.unwrap();
    write.shutdown().await.unwrap();
    let mut received = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut read, &mut received)
        .await
        .unwrap();
    worker.await.unwrap();
    assert_eq!(received.len(), answer.len());
    assert!(received == answer, "the answer arrived intact");
    stats_until(&proxy, &service, |s| {
        s[&backend].active == 0 && s[&backend].out_bytes == 5 << 20
    })
    .await;
}

/// Blocks the proxy thread behind `shard` (nothing runs on it) until the returned sender
/// is dropped.
fn pause(shard: &tokio::runtime::Handle) -> std::sync::mpsc::Sender<()> {
    let (resume, paused) = std::sync::mpsc::channel::<()>();
    let (blocked_tx, blocked) = std::sync::mpsc::channel();
    shard.spawn(async move {
        blocked_tx.send(()).unwrap();
        let _ = paused.recv();
    });
    blocked.recv().unwrap();
    resume
}

/// At the limit, a burst of new clients evicts idle ones faster than the evicted
/// connections' tasks get to run (they share the accepting thread, or their thread waits
/// for a CPU on a loaded host): a client in that burst is served once an evicted connection
/// has closed, never refused while idle clients can make room. All but the first proxy
/// thread stay paused (its clients are all on the first), and the first is paused while
/// the burst queues up, so it accepts the burst in one go, as a starved thread does.
#[test]
fn a_burst_at_the_limit_waits_for_evicted_clients_instead_of_refusing() {
    use std::io::{BufRead, Write};
    // The backend runs on the runtime's own thread while this one makes blocking calls.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let idle_clients = 64;
    let burst = 40;
    assert!(burst > crate::conn_limit::MAX_PENDING_EVICTIONS && burst < idle_clients);
    let (proxy, service) = runtime.block_on(async {
        let (proxy, service) = proxy_on("127.0.0.90").await;
        let service = VirtualService {
            clients: ClientPolicy {
                max: idle_clients,
                ..service.clients
            },
            ..service
        };
        proxy.ensure_service(&service).await.unwrap();
        let backend = echo_backend("127.0.0.91", "one").await;
        proxy.add_backend(&service, backend, 1).await.unwrap();
        (proxy, service)
    });
    let shards = &proxy.shards.get().expect("proxy threads").handles;
    let _others_paused: Vec<_> = shards[1..].iter().map(pause).collect();
    let mut idle = Vec::new();
    for _ in 0..idle_clients {
        let client = std::net::TcpStream::connect(service.listen).unwrap();
        let mut greeting = String::new();
        std::io::BufReader::new(&client)
            .read_line(&mut greeting)
            .unwrap();
        assert_eq!(greeting, "one\n");
        idle.push(client);
    }
    std::thread::sleep(CLIENT_MIN_IDLE + Duration::from_millis(100));

    let first_paused = pause(&shards[0]);
    // Queued in the listening socket's backlog (the kernel completes the handshakes).
    let silent: Vec<_> = (0..burst)
        .map(|_| std::net::TcpStream::connect(service.listen).unwrap())
        .collect();
    let client = std::net::TcpStream::connect(service.listen).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    drop(first_paused);
    let mut write = client.try_clone().unwrap();
    let mut lines = std::io::BufReader::new(client).lines();
    let greeting = lines.next().map(|l| l.map_err(|e| e.kind()));
    assert_eq!(
        greeting,
        Some(Ok("one".to_owned())),
        "a client refused while idle clients could make room"
    );
    write.write_all(b"ping\n").unwrap();
    assert_eq!(lines.next().unwrap().unwrap(), "ping");
    drop((silent, idle));
}
