use super::*;

#[tokio::test]
async fn keeps_the_last_lines_of_both_streams_and_cuts_long_ones() {
    let (out_w, out_r) = tokio::io::duplex(64);
    let (err_w, err_r) = tokio::io::duplex(64);
    let labels = Labels {
        service: "web".into(),
        slot: Some(0),
        worker: "w1".into(),
    };
    let capture = Capture::start(labels, out_r, err_r);
    let tail = capture.tail.clone();
    let mut out_w = out_w;
    let mut err_w = err_w;
    use tokio::io::AsyncWriteExt;
    for i in 0..20 {
        out_w
            .write_all(format!("line {i}\n").as_bytes())
            .await
            .unwrap();
    }
    drop(out_w);
    // The streams are read by separate tasks: let stdout's lines land first.
    let deadline = Instant::now() + Duration::from_secs(30);
    while tail.last().as_deref() != Some("line 19") {
        assert!(
            Instant::now() < deadline,
            "stdout never read: {:?}",
            tail.lines()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    err_w.write_all(&[b'x'; 5000]).await.unwrap();
    err_w.write_all(b"\n\n[emerg] last words").await.unwrap();
    drop(err_w);
    capture.finish(Duration::from_secs(60)).await;
    let lines = tail.lines();
    assert_eq!(lines.len(), TAIL_LINES);
    assert_eq!(tail.last().as_deref(), Some("[emerg] last words"));
    assert!(lines.iter().all(|l| l.len() <= MAX_LINE_BYTES), "{lines:?}");
    assert!(lines.contains(&"line 19".to_owned()), "{lines:?}");
}

#[test]
fn the_rate_limit_admits_a_burst_then_counts_what_it_leaves_out() {
    let mut limit = RateLimit::new();
    let start = limit.refilled;
    let admitted = (0..150).filter(|_| limit.admit(start).is_some()).count();
    assert_eq!(admitted, BURST_LINES as usize);
    assert_eq!(
        limit.admit(start + Duration::from_secs(1)),
        Some(50),
        "one second later a line passes and reports the 50 left out"
    );
}
