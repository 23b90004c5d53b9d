//! One worker's full life for the spawn benchmark (tests/bench/spawn.sh): create, start,
//! wait for exit, delete. `--loop N` repeats it N times in this process and prints the
//! median, which is what a long-running poold pays per worker. `--serve` does one worker
//! life per line read from stdin and answers `ok` on stdout (the benchmark script times
//! that round trip, interleaved with crun and runc).
//!
//! Usage: sandbox_spawn --rootfs DIR [--network host|isolated|bridged] [--loop N | --serve]
//!        [--bridge NAME --subnet CIDR] [--seccomp default|unconfined] [--userns BASE]
//!        [-- COMMAND ARGS...]   (default command /bin/true)

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use poold::sandbox::{
    BridgeConfig, ContainerSpec, IdMap, NetworkMode, Output, RootFs, Sandbox, SandboxConfig,
    SeccompMode,
};

fn main() -> anyhow::Result<()> {
    poold::sandbox::maybe_run_helper();
    let mut args = std::env::args().skip(1);
    let (mut rootfs, mut network, mut loops) = (None, NetworkMode::Isolated, None);
    let mut serve = false;
    let (mut seccomp, mut userns) = (SeccompMode::Default, None);
    let (mut bridge, mut subnet) = ("pdbrbench".to_string(), "10.213.250.0/24".to_string());
    let mut command = vec!["/bin/true".to_string()];
    while let Some(a) = args.next() {
        let mut val = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--rootfs" => rootfs = Some(val()?),
            "--network" => {
                network = match val()?.as_str() {
                    "host" => NetworkMode::Host,
                    "isolated" => NetworkMode::Isolated,
                    "bridged" => NetworkMode::Bridged,
                    other => bail!("--network: unknown mode {other:?}"),
                }
            }
            "--loop" => loops = Some(val()?.parse::<usize>().context("--loop")?),
            "--serve" => serve = true,
            "--bridge" => bridge = val()?,
            "--subnet" => subnet = val()?,
            "--seccomp" => {
                seccomp = match val()?.as_str() {
                    "default" => SeccompMode::Default,
                    "unconfined" => SeccompMode::Unconfined,
                    other => bail!("--seccomp: expected default or unconfined, not {other:?}"),
                }
            }
            "--userns" => {
                userns = Some(IdMap {
                    host_first: val()?.parse().context("--userns")?,
                    count: 65536,
                })
            }
            "--" => {
                command = args.by_ref().collect();
                break;
            }
            other => bail!("unknown argument {other:?}"),
        }
    }
    let rootfs = rootfs.context("--rootfs DIR is required")?;
    let config = SandboxConfig {
        state_dir: "/run/poold-bench".into(),
        image_cache: "/run/poold-bench/images".into(),
        cgroup_parent: "poold-bench".into(),
        link_prefix: "pdbn".into(),
        bridge: Some(BridgeConfig {
            name: bridge,
            subnet: subnet.parse().context("--subnet")?,
            slice_prefix: poold::sandbox::DEFAULT_SLICE_PREFIX,
            quarantine: Duration::ZERO,
            allow_host_ports: Vec::new(),
        }),
        ..SandboxConfig::default()
    };
    let sandbox = Sandbox::new(config)?;
    let rt = tokio::runtime::Runtime::new()?;
    let result = rt.block_on(async {
        let life = || async {
            let mut spec =
                ContainerSpec::new("bench", RootFs::Dir(rootfs.clone().into()), &command[0]);
            spec.args = command[1..].to_vec();
            spec.network = network;
            spec.output = Output::Null;
            spec.seccomp = seccomp;
            spec.user_namespace = userns;
            let t = Instant::now();
            let mut w = sandbox.spawn(spec).await?;
            let exit = w.wait().await?;
            w.destroy().await?;
            if exit.as_code() != 0 {
                bail!("worker exited with {:?}", exit);
            }
            Ok(t.elapsed())
        };
        if serve {
            let mut line = String::new();
            while std::io::stdin().read_line(&mut line)? > 0 {
                life().await?;
                let mut out = std::io::stdout().lock();
                writeln!(out, "ok")?;
                out.flush()?;
                line.clear();
            }
            return Ok(());
        }
        let mut times = Vec::new();
        for _ in 0..loops.unwrap_or(1).max(1) {
            times.push(life().await?);
        }
        if loops.is_some() {
            times.sort();
            println!(
                "median_ms {:.3}",
                times[times.len() / 2].as_secs_f64() * 1000.0
            );
        }
        Ok(())
    });
    // Leave nothing behind, also after a failed run: the bridge (only if poold made it),
    // the cgroup parent and the state directories.
    rt.block_on(async {
        if network == NetworkMode::Bridged {
            sandbox.remove_bridge().await?;
        }
        sandbox.remove_cgroup_parent().await
    })?;
    sandbox.remove_empty_state_dirs();
    result
}
