//! `cargo xtask check-imports`: poold's modules depend one way (ARCHITECTURE.md, "Rooms and
//! their rules"). Every `crate::` path in poold/src outside comments is read; a module may
//! name its own room and the rooms of lower layers only, never one beside or above it.

use std::fmt;
use std::path::Path;

use anyhow::{bail, Context, Result};

/// poold's rooms, bottom layer first. The sandbox names nothing of the crate (it takes
/// its own `SandboxConfig` and specs); config borrows its vocabulary (`SeccompMode`, the
/// syscall table); leaf utilities sit at the bottom with it. `runtime` is where config
/// meets the sandbox; `daemon` is the only place that wires rooms together.
pub const LAYERS: &[&[&str]] = &[
    &[
        "sandbox",
        "conn_limit",
        "state_dir",
        "worker_output",
        "service_manager",
    ],
    &["config", "upgrade"],
    &["balancer", "health"],
    &["runtime"],
    &["supervisor"],
    &["metrics", "control"],
    &["daemon"],
    &["cli"],
];

/// One import against the direction.
#[derive(Debug, PartialEq, Eq)]
pub struct Violation {
    pub file: String,
    pub line: usize,
    pub from: String,
    pub to: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let why = match (layer(&self.from), layer(&self.to)) {
            (None, _) | (_, None) => "a module missing from xtask's LAYERS table".to_owned(),
            (Some(from), Some(to)) if from == to => "a room beside it".to_owned(),
            _ => "a room above it".to_owned(),
        };
        write!(
            f,
            "{}:{}: `{}` uses `crate::{}`, {why}",
            self.file, self.line, self.from, self.to
        )
    }
}

fn layer(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

fn allowed(from: &str, to: &str) -> bool {
    from == to || matches!((layer(from), layer(to)), (Some(from), Some(to)) if to < from)
}

/// The top-level modules one line names through `crate::` (outside `//` comments; `$crate`
/// and `pub(crate)` are not paths into the crate).
fn named_modules(line: &str) -> Vec<String> {
    let code = line.split("//").next().unwrap_or("");
    let mut found = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().next_back();
        let after = &rest[at + "crate::".len()..];
        rest = after;
        if before.is_some_and(|c| c == '$' || c == '_' || c.is_alphanumeric()) {
            continue;
        }
        if let Some(group) = after.strip_prefix('{') {
            // `crate::{a::X, b}`: every top-level name of the group (on this line).
            let group = group.split('}').next().unwrap_or("");
            found.extend(
                group
                    .split(',')
                    .filter_map(|item| item.trim().split("::").next())
                    .filter(|name| !name.is_empty())
                    .map(str::to_owned),
            );
            continue;
        }
        let name: String = after
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            found.push(name);
        }
    }
    found
}

/// The violations in one file of poold/src, `path` relative to it (`supervisor/pool.rs`).
/// lib.rs and the binaries (bin/) stand above every room.
pub fn check_file(path: &str, text: &str) -> Vec<Violation> {
    if path == "lib.rs" || path.starts_with("bin/") {
        return Vec::new();
    }
    let first = path.split('/').next().unwrap_or(path);
    let from = first.strip_suffix(".rs").unwrap_or(first).to_owned();
    let mut violations = Vec::new();
    for (index, line) in text.lines().enumerate() {
        for to in named_modules(line) {
            if !allowed(&from, &to) {
                violations.push(Violation {
                    file: format!("poold/src/{path}"),
                    line: index + 1,
                    from: from.clone(),
                    to,
                });
            }
        }
    }
    violations
}

/// Checks every .rs file under `root`/poold/src; fails listing each violation.
pub fn check(root: &Path) -> Result<()> {
    let src = root.join("poold/src");
    let mut files = Vec::new();
    collect_rs(&src, &mut files)?;
    files.sort();
    let mut violations = Vec::new();
    for file in &files {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        let relative = file
            .strip_prefix(&src)
            .expect("under src")
            .to_string_lossy()
            .into_owned();
        violations.extend(check_file(&relative, &text));
    }
    if violations.is_empty() {
        eprintln!(
            "xtask check-imports: {} files, dependencies run one way",
            files.len()
        );
        return Ok(());
    }
    for violation in &violations {
        eprintln!("{violation}");
    }
    bail!(
        "{} import(s) against the direction {}",
        violations.len(),
        direction()
    )
}

/// The rule as one line: `sandbox, conn_limit, ... ← config ← ...`.
fn direction() -> String {
    LAYERS
        .iter()
        .map(|layer| layer.join(", "))
        .collect::<Vec<_>>()
        .join(" ← ")
}

fn collect_rs(dir: &Path, files: &mut Vec<std::path::PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            collect_rs(&path, files)?;
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            files.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_import_up_the_layers_fails_with_file_and_line() {
        let text =
            "use super::status::RecycleReason;\nuse crate::metrics::{Metrics, PoolMetrics};\n";
        let found = check_file("supervisor/pool.rs", text);
        assert_eq!(
            found,
            vec![Violation {
                file: "poold/src/supervisor/pool.rs".into(),
                line: 2,
                from: "supervisor".into(),
                to: "metrics".into(),
            }]
        );
        assert_eq!(
            found[0].to_string(),
            "poold/src/supervisor/pool.rs:2: `supervisor` uses `crate::metrics`, a room above it"
        );
    }

    #[test]
    fn a_room_beside_fails_and_one_below_passes() {
        let beside = check_file("balancer/ipvs.rs", "    let x = crate::health::probe();");
        assert_eq!(beside.len(), 1, "{beside:?}");
        assert!(beside[0].to_string().ends_with("a room beside it"));
        assert!(check_file("daemon.rs", "use crate::{config::Config, supervisor};").is_empty());
        assert!(
            check_file("runtime/sandbox.rs", "use crate::sandbox::{self, Sandbox};").is_empty()
        );
    }

    #[test]
    fn grouped_paths_comments_and_macros_are_read_right() {
        let grouped = check_file("health/mod.rs", "use crate::{config::X, runtime::Y};");
        assert_eq!(grouped.len(), 1, "{grouped:?}");
        assert_eq!(grouped[0].to, "runtime");
        assert!(check_file("config/mod.rs", "// see crate::daemon").is_empty());
        assert!(check_file("config/mod.rs", "pub(crate) fn f() { $crate::x!() }").is_empty());
    }

    #[test]
    fn a_module_missing_from_the_table_fails() {
        let found = check_file("newroom/mod.rs", "use crate::config::Config;");
        assert_eq!(found.len(), 1);
        assert!(found[0].to_string().contains("missing from xtask's LAYERS"));
    }

    #[test]
    fn poold_as_it_stands_passes() {
        check(&crate::util::workspace_root()).unwrap();
    }
}
