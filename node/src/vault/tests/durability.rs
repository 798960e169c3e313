//! What "acknowledged" rests on, checked at the system-call level: sled's own flush ends
//! in `sync_file_range`, which is not a durability guarantee, so the vault must
//! `fdatasync` the database file after sled's last write and before a put is
//! acknowledged, and must sync the root slot before an erasure is acknowledged.

use std::process::Command;

use super::crash::CHILD_TEST;

/// One strace line: the system call name, the file its first descriptor names, and text.
struct Call {
    name: String,
    file: String,
    line: String,
}

fn parse(line: &str) -> Option<Call> {
    let rest = line.split_once(' ').map_or(line, |(_, r)| r).trim_start();
    let (name, args) = rest.split_once('(')?;
    let file = args.split_once('<').and_then(|(_, f)| f.split_once('>')).map_or("", |(f, _)| f);
    Some(Call { name: name.to_string(), file: file.to_string(), line: line.to_string() })
}

fn is_write(c: &Call) -> bool {
    matches!(c.name.as_str(), "write" | "pwrite64" | "pwritev" | "pwritev2" | "writev")
}

fn is_sync(c: &Call) -> bool {
    matches!(c.name.as_str(), "fsync" | "fdatasync")
}

/// Checks that between the last write to a file ending in `suffix` before `ack` and
/// `ack` there is an fsync or fdatasync of that file.
fn synced_before(calls: &[Call], ack: usize, suffix: &str) -> bool {
    let Some(last_write) = calls[..ack].iter().rposition(|c| is_write(c) && c.file.ends_with(suffix)) else {
        return false;
    };
    calls[last_write..ack].iter().any(|c| is_sync(c) && c.file.ends_with(suffix))
}

#[test]
fn acknowledgements_follow_fdatasync_of_what_was_written() {
    let strace = ["/usr/bin/strace", "/bin/strace"].into_iter().find(|p| std::path::Path::new(p).exists());
    let strace = strace.expect("strace is required for this test (.ci/run installs it)");
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("strace.log");
    let data = dir.path().join("vault");
    let status = Command::new(strace)
        .args([
            "-f",
            "-y",
            "-s",
            "64",
            "-e",
            "trace=write,pwrite64,pwritev,pwritev2,writev,fsync,fdatasync,sync_file_range",
        ])
        .arg("-o")
        .arg(&log)
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", CHILD_TEST, "--ignored", "--nocapture", "--test-threads", "1"])
        .env("CAIRN_CRASH_DIR", &data)
        // The child erases in a round with probability ≥ 1/2: with 6 rounds, 1 run in 64
        // had no erasure to check (and failed); with 24, 1 in 16 million.
        .env("CAIRN_CRASH_ROUNDS", "24")
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let text = std::fs::read_to_string(&log).unwrap();
    let calls: Vec<Call> = text.lines().filter_map(parse).collect();
    let acks = |word: &str| -> Vec<usize> {
        calls.iter().enumerate().filter(|(_, c)| c.name == "write" && c.line.contains(word)).map(|(i, _)| i).collect()
    };
    let (puts, erasures) = (acks("\"put "), acks("\"erased "));
    assert!(!puts.is_empty() && !erasures.is_empty(), "the child acknowledged puts and erasures");
    for ack in &puts {
        assert!(synced_before(&calls, *ack, "/db"), "a put was acknowledged before the sled file was synced");
    }
    for ack in &erasures {
        assert!(
            synced_before(&calls, *ack, "/root.slot"),
            "an erasure was acknowledged before the root slot was synced"
        );
    }
    let sfr = calls.iter().filter(|c| c.name == "sync_file_range").count();
    let fds = calls.iter().filter(|c| c.name == "fdatasync" && c.file.ends_with("/db")).count();
    println!(
        "{} puts and {} erasures acknowledged, each after fdatasync; sled issued {sfr} sync_file_range, the vault {fds} fdatasync on the db file",
        puts.len(),
        erasures.len()
    );
}
