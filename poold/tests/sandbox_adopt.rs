//! Containers outlive the poold that started them and a new `Sandbox` adopts them (root
//! needed): the program's output written while nobody read it is still there, the exit
//! status reaches a poold that is not the helper's parent, and a record that does not
//! match the live process is refused without touching anything.

mod sandbox_support;

use std::time::Duration;

use nix::sys::signal::Signal;
use poold::sandbox::{
    AdoptRefusal, ContainerExit, ContainerSpec, NetworkMode, Output, RootFs, Sandbox, SandboxError,
};
use sandbox_support::TestSandbox;
use tokio::io::AsyncReadExt;

/// Wrapped in `sandbox` so `--filter sandbox` selects these with the other sandbox tests.
mod sandbox {
    use super::*;

    /// Counts lines (`line-1`, `line-2`, ...) every 20 ms; SIGTERM ends it with code 7.
    fn counter(t: &TestSandbox) -> ContainerSpec {
        let mut spec = ContainerSpec::new("adopt", RootFs::Dir(t.rootfs.clone()), "sh");
        spec.args = vec![
            "-c".into(),
            "trap 'exit 7' TERM; i=0; while :; do i=$((i+1)); echo line-$i; sleep 0.02; done"
                .into(),
        ];
        spec.network = NetworkMode::Bridged;
        spec.output = Output::Piped;
        spec
    }

    /// Reads `stream` until it holds `lines` whole lines.
    async fn read_lines(stream: &mut (impl AsyncReadExt + Unpin), lines: usize) -> Vec<String> {
        let mut text = String::new();
        let mut chunk = [0u8; 4096];
        while text.matches('\n').count() < lines {
            let n = tokio::time::timeout(Duration::from_secs(20), stream.read(&mut chunk))
                .await
                .expect("the adopted container's output stalled")
                .unwrap();
            assert!(n > 0, "output ended early: {text:?}");
            text.push_str(&String::from_utf8_lossy(&chunk[..n]));
        }
        text.lines().map(str::to_owned).collect()
    }

    #[tokio::test]
    async fn an_adopted_container_keeps_its_output_and_reports_its_exit() {
        let t = TestSandbox::new(95);
        let mut first = t.sandbox.spawn(counter(&t)).await.unwrap();
        let record = first.record();
        // "poold dies": its read ends close unread and nothing tears the container down.
        drop(first.take_output());
        std::mem::forget(first);
        // The program keeps writing while nobody reads: only the monitor's read ends keep
        // the pipe from breaking (EPIPE would lose these lines, SIGPIPE the worker).
        // poold is away for a while (the program writes about 15 lines meanwhile).
        tokio::time::sleep(Duration::from_millis(300)).await;

        let restarted = Sandbox::new(t.config().clone()).unwrap();
        let mut adopted = restarted.adopt(&record).unwrap();
        assert_eq!(adopted.pid(), record.pid);
        assert_eq!(adopted.address(), record.address);
        assert_eq!(adopted.record(), record);
        let (mut stdout, _stderr) = adopted.take_output().expect("output FIFOs");
        let lines = read_lines(&mut stdout, 20).await;
        // From the first line on, none lost: what was written while nobody read included.
        for (i, line) in lines.iter().enumerate() {
            assert_eq!(*line, format!("line-{}", i + 1), "{lines:?}");
        }

        adopted.signal(Signal::SIGTERM).unwrap();
        let exit = tokio::time::timeout(Duration::from_secs(20), adopted.wait())
            .await
            .expect("the adopted container's end was not seen")
            .unwrap();
        assert_eq!(exit, ContainerExit::Code(7), "read from the exit file");
        adopted.destroy().await.unwrap();
        t.sandbox.remove_bridge().await.unwrap();
        t.sandbox.remove_cgroup_parent().await.unwrap();
        t.assert_nothing_left();
    }

    #[tokio::test]
    async fn a_record_that_does_not_match_the_live_process_is_refused() {
        let t = TestSandbox::new(96);
        let mut first = t.sandbox.spawn(counter(&t)).await.unwrap();
        let record = first.record();
        drop(first.take_output());
        std::mem::forget(first);
        let restarted = Sandbox::new(t.config().clone()).unwrap();
        let refusal = |result: Result<poold::sandbox::Container, SandboxError>| match result {
            Err(SandboxError::NotAdoptable { reason, .. }) => reason,
            other => panic!("adopted: {other:?}"),
        };

        let mut reused = record.clone();
        reused.start_time += 1;
        assert!(matches!(
            refusal(restarted.adopt(&reused)),
            AdoptRefusal::PidReused { .. }
        ));
        let mut foreign = record.clone();
        foreign.cgroup = Some("system.slice/sshd.service".into());
        assert!(matches!(
            refusal(restarted.adopt(&foreign)),
            AdoptRefusal::Mismatch {
                field: "cgroup",
                ..
            }
        ));
        let mut other_process = record.clone();
        other_process.pid = std::process::id();
        other_process.start_time = 0;
        assert!(matches!(
            refusal(restarted.adopt(&other_process)),
            AdoptRefusal::PidReused { .. }
        ));

        // Refusals changed nothing: the container lives and can still be adopted.
        let adopted = restarted.adopt(&record).unwrap();
        adopted.destroy().await.unwrap();
        assert!(matches!(
            refusal(restarted.adopt(&record)),
            AdoptRefusal::Gone { .. }
        ));
        t.sandbox.remove_bridge().await.unwrap();
        t.sandbox.remove_cgroup_parent().await.unwrap();
        t.assert_nothing_left();
    }
}
