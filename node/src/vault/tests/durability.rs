//! What "acknowledged" rests on, checked at the system-call level: sled's own flush ends
//! in `sync_file_range`, which is not a durability guarantee, so the vault must
//! `fdatasync` every file sled wrote (its log and its blob files) after sled's last
//! write to it and before a put is acknowledged, and must sync the root slot before an
//! erasure is acknowledged.

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::crash::CHILD_TEST;
use super::reading;
use crate::vault::kv::{Found, mark_synced, to_sync};
use crate::vault::{Vault, VaultConfig};

const BLOB_CHILD: &str = "vault::tests::durability::blob_child";

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

/// Checks that before `ack`, every file under `data` that was written was synced after
/// its last write; returns the files written.
fn every_file_synced_before(calls: &[Call], ack: usize, data: &Path) -> Vec<String> {
    let prefix = data.display().to_string();
    let mut written: Vec<String> =
        calls[..ack].iter().filter(|c| is_write(c) && c.file.starts_with(&prefix)).map(|c| c.file.clone()).collect();
    written.sort();
    written.dedup();
    for file in &written {
        assert!(synced_before(calls, ack, file), "{} was written and not synced before an acknowledgement", file);
    }
    written
}

/// Runs the child test `child` under strace with the vault in `data`; returns its calls.
fn trace_child(child: &str, data: &Path, log: &Path, rounds: &str) -> Vec<Call> {
    let strace = ["/usr/bin/strace", "/bin/strace"].into_iter().find(|p| std::path::Path::new(p).exists());
    let strace = strace.expect("strace is required for this test (.ci/run installs it)");
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
        .arg(log)
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", child, "--ignored", "--nocapture", "--test-threads", "1"])
        .env("CAIRN_CRASH_DIR", data)
        .env("CAIRN_CRASH_ROUNDS", rounds)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let text = std::fs::read_to_string(log).unwrap();
    text.lines().filter_map(parse).collect()
}

#[test]
fn acknowledgements_follow_fdatasync_of_what_was_written() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("vault");
    // The child erases in a round with probability ≥ 1/2: with 6 rounds, 1 run in 64
    // had no erasure to check (and failed); with 24, 1 in 16 million.
    let calls = trace_child(CHILD_TEST, &data, &dir.path().join("strace.log"), "24");
    let acks = |word: &str| -> Vec<usize> {
        calls.iter().enumerate().filter(|(_, c)| c.name == "write" && c.line.contains(word)).map(|(i, _)| i).collect()
    };
    let (puts, erasures) = (acks("\"put "), acks("\"erased "));
    assert!(!puts.is_empty() && !erasures.is_empty(), "the child acknowledged puts and erasures");
    for ack in &puts {
        assert!(synced_before(&calls, *ack, "/db"), "a put was acknowledged before the sled file was synced");
        every_file_synced_before(&calls, *ack, &data);
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

/// Child mode for [`blob_files_are_synced_before_acknowledgement`]: stores records of
/// 40 KiB, so that sled's pages outgrow its log and go to blob files; prints `put RID`.
#[test]
#[ignore = "run by the durability test in a child process"]
fn blob_child() {
    let Ok(dir) = std::env::var("CAIRN_CRASH_DIR") else { return };
    let rounds: usize = std::env::var("CAIRN_CRASH_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(1);
    let mut v = Vault::open_dir(Path::new(&dir), VaultConfig::default()).unwrap();
    for round in 0..rounds {
        let batch = (0..8)
            .map(|i| {
                let mut r = reading(&format!("{round}-{i}"), Some("Patient/a"));
                r.payload.resize(40 * 1024, b' ');
                r
            })
            .collect();
        for receipt in v.put_batch(batch).unwrap() {
            println!("put {}", receipt.rid);
        }
    }
}

/// sled writes large pages to files of their own under `blobs/`; the vault syncs each
/// of those once (issue 17) and must not acknowledge a put before it did.
#[test]
fn blob_files_are_synced_before_acknowledgement() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("vault");
    let calls = trace_child(BLOB_CHILD, &data, &dir.path().join("strace.log"), "12");
    let puts: Vec<usize> = calls
        .iter()
        .enumerate()
        .filter(|(_, c)| c.name == "write" && c.line.contains("\"put "))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(puts.len(), 96, "the child acknowledged every put");
    let mut blobs = std::collections::BTreeSet::new();
    for ack in &puts {
        blobs.extend(every_file_synced_before(&calls, *ack, &data).into_iter().filter(|f| f.contains("/blobs/")));
    }
    assert!(blobs.len() > 1, "the child's puts made sled write blob files (else this test checks nothing)");
    // Syncing every blob file at every put (before issue 17) made this grow with the
    // square of the files; once each, it is at most their number (twice for a file
    // caught half written).
    let blob_syncs = calls.iter().filter(|c| c.name == "fdatasync" && c.file.contains("/blobs/")).count();
    assert!(
        blob_syncs < 2 * blobs.len(),
        "{blob_syncs} fdatasync of {} blob files: each should be synced once",
        blobs.len()
    );
}

fn found(path: &str, write_once: bool) -> Found {
    Found { path: PathBuf::from(path), write_once }
}

/// sled writes a blob file whole before the call that made it returns (see `SledStore`),
/// so one sync of it is enough; the strace tests above check that against sled itself.
#[test]
fn a_blob_file_is_synced_once_when_first_listed_and_the_log_every_time() {
    fn sync(files: &[Found], synced: &mut HashSet<OsString>) -> Vec<PathBuf> {
        let picked = to_sync(files, synced);
        mark_synced(files.to_vec(), synced);
        picked
    }
    let mut synced = HashSet::new();
    let p = |s: &str| PathBuf::from(s);
    let first = [found("db", false), found("blobs/7", true)];
    assert_eq!(sync(&first, &mut synced), vec![p("db"), p("blobs/7")]);
    assert_eq!(sync(&first, &mut synced), vec![p("db")], "a blob file already synced is not synced again");
    let more = [found("db", false), found("blobs/7", true), found("blobs/9", true)];
    assert_eq!(sync(&more, &mut synced), vec![p("db"), p("blobs/9")], "a new blob file is synced");
    let removed = [found("db", false), found("blobs/9", true)];
    assert_eq!(sync(&removed, &mut synced), vec![p("db")]);
    assert_eq!(synced.len(), 1, "a removed blob file is forgotten");
    let back = [found("db", false), found("blobs/7", true), found("blobs/9", true)];
    assert_eq!(sync(&back, &mut synced), vec![p("db"), p("blobs/7")], "a file that reappears is synced again");
    let failed = to_sync(&[found("db", false), found("blobs/11", true)], &mut synced);
    assert_eq!(failed, vec![p("db"), p("blobs/11")]);
    assert_eq!(
        to_sync(&[found("db", false), found("blobs/11", true)], &mut synced),
        vec![p("db"), p("blobs/11")],
        "a blob file whose sync did not complete is still due"
    );
}
