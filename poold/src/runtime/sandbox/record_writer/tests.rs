use super::*;
use futures::FutureExt;
use std::sync::mpsc;
use std::time::Duration;

/// A fake record: `live` is what the runtime holds, `disk` what the last write saved. Each
/// write takes what is live, says it started, waits for a go, then saves it.
struct Fake {
    live: Arc<Mutex<Vec<u32>>>,
    disk: Arc<Mutex<Vec<u32>>>,
    writes: Arc<Mutex<u32>>,
    started: mpsc::Receiver<()>,
    go: mpsc::Sender<()>,
    writer: RecordWriter,
}

fn fake() -> Fake {
    let live = Arc::new(Mutex::new(Vec::new()));
    let disk = Arc::new(Mutex::new(Vec::new()));
    let writes = Arc::new(Mutex::new(0));
    let (started_tx, started) = mpsc::channel();
    let (go, go_rx) = mpsc::channel::<()>();
    let writer = RecordWriter::start({
        let (live, disk, writes) = (live.clone(), disk.clone(), writes.clone());
        move || {
            let content = live.lock().unwrap().clone();
            *writes.lock().unwrap() += 1;
            let _ = started_tx.send(());
            // Dropped sender (end of the test): finish at once.
            let _ = go_rx.recv();
            *disk.lock().unwrap() = content;
        }
    })
    .unwrap();
    Fake {
        live,
        disk,
        writes,
        started,
        go,
        writer,
    }
}

impl Fake {
    fn change(&self, value: u32) -> u64 {
        self.live.lock().unwrap().push(value);
        self.writer.request()
    }

    fn wait_started(&self) {
        self.started
            .recv_timeout(Duration::from_secs(10))
            .expect("a write started");
    }
}

#[tokio::test]
async fn a_change_counts_as_written_only_once_a_write_that_saw_it_ended() {
    let f = fake();
    let first = f.change(1);
    f.wait_started();
    // Made while the first write is under way: not in it.
    let second = f.change(2);
    assert!(
        f.writer.written(first).now_or_never().is_none(),
        "the first write has not ended yet"
    );
    f.go.send(()).unwrap();
    f.writer.written(first).await;
    assert_eq!(*f.disk.lock().unwrap(), [1]);
    // The second change gets a write of its own, and nobody waiting for it returns before.
    f.wait_started();
    assert!(f.writer.written(second).now_or_never().is_none());
    f.go.send(()).unwrap();
    f.writer.written(second).await;
    assert_eq!(*f.disk.lock().unwrap(), [1, 2]);
}

#[tokio::test]
async fn changes_made_during_a_write_share_the_next_one() {
    let f = fake();
    let first = f.change(0);
    f.wait_started();
    // A spawn storm: many changes while one write is under way.
    let tickets: Vec<u64> = (1..=20).map(|v| f.change(v)).collect();
    f.go.send(()).unwrap();
    f.wait_started();
    f.go.send(()).unwrap();
    for ticket in std::iter::once(first).chain(tickets) {
        f.writer.written(ticket).await;
    }
    assert_eq!(*f.writes.lock().unwrap(), 2, "one write for the 20 changes");
    assert_eq!(*f.disk.lock().unwrap(), (0..=20).collect::<Vec<_>>());
}

#[test]
fn dropping_the_writer_writes_what_is_pending_first() {
    let f = fake();
    // Never blocks: every write may end at once.
    drop(f.go);
    f.live.lock().unwrap().push(7);
    f.writer.request();
    drop(f.writer);
    assert_eq!(*f.disk.lock().unwrap(), [7]);
    assert!(*f.writes.lock().unwrap() >= 1);
}
