//! Validators in network namespaces, for faults a loopback cannot show: a bridge on this
//! machine and one namespace per validator, each with its own address, and partitions
//! made by dropping packets between chosen validators (`iptables` inside their
//! namespaces). Needs root (`ip netns`, `iptables`); the soak bench uses it.
//!
//! ```text
//!   this machine ── bridge BR 10.N.0.1/24 ─┬─ veth ── namespace PREFIX0: 10.N.0.10
//!                                          ├─ veth ── namespace PREFIX1: 10.N.0.11
//!                                          └─ …
//! ```
//!
//! Clients on this machine reach every validator through the bridge, partitioned or
//! not: a partition cuts validators off from each other, not from their callers.

use std::process::Command;

/// A bridge and `n` namespaces; removed when dropped.
#[derive(Debug)]
pub struct Network {
    prefix: String,
    octet: u8,
    n: usize,
}

/// Runs a command that must succeed.
fn sh(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed (the namespaces need root: ip netns, iptables): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs a command whose failure does not matter (removing what may not exist).
fn try_sh(args: &[&str]) {
    let _ = Command::new(args[0]).args(&args[1..]).output();
}

impl Network {
    /// Creates bridge `PREFIXbr` with 10.`octet`.0.1/24 and namespaces `PREFIX0..n`
    /// with 10.`octet`.0.10+i, removing leftovers of an earlier run with this prefix.
    /// `prefix` is at most 10 characters (interface names are at most 15).
    pub fn create(prefix: &str, octet: u8, n: usize) -> Network {
        assert!(prefix.len() <= 10 && n <= 50, "prefix {prefix:?} too long or too many namespaces");
        let net = Network { prefix: prefix.to_string(), octet, n };
        net.remove();
        let br = net.bridge();
        sh(&["ip", "link", "add", &br, "type", "bridge"]);
        sh(&["ip", "addr", "add", &format!("10.{octet}.0.1/24"), "dev", &br]);
        sh(&["ip", "link", "set", &br, "up"]);
        // Docker sets the FORWARD policy to DROP, which also drops bridged packets when
        // br_netfilter is loaded: let this bridge's own traffic through.
        sh(&["iptables", "-I", "FORWARD", "-i", &br, "-o", &br, "-j", "ACCEPT"]);
        for i in 0..n {
            let (ns, host_end, ns_end) = (net.namespace(i), format!("{prefix}h{i}"), format!("{prefix}n{i}"));
            sh(&["ip", "netns", "add", &ns]);
            sh(&["ip", "link", "add", &host_end, "type", "veth", "peer", "name", &ns_end]);
            sh(&["ip", "link", "set", &host_end, "master", &br, "up"]);
            sh(&["ip", "link", "set", &ns_end, "netns", &ns]);
            sh(&["ip", "-n", &ns, "addr", "add", &format!("{}/24", net.host(i)), "dev", &ns_end]);
            sh(&["ip", "-n", &ns, "link", "set", &ns_end, "up"]);
            sh(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
            sh(&["ip", "-n", &ns, "route", "add", "default", "via", &format!("10.{octet}.0.1")]);
        }
        net
    }

    fn bridge(&self) -> String {
        format!("{}br", self.prefix)
    }

    /// Namespace `i`'s name.
    pub fn namespace(&self, i: usize) -> String {
        format!("{}{i}", self.prefix)
    }

    /// Namespace `i`'s address.
    pub fn host(&self, i: usize) -> String {
        format!("10.{}.0.{}", self.octet, 10 + i)
    }

    /// Every namespace's address, in order.
    pub fn hosts(&self) -> Vec<String> {
        (0..self.n).map(|i| self.host(i)).collect()
    }

    /// Every namespace's name, in order.
    pub fn namespaces(&self) -> Vec<String> {
        (0..self.n).map(|i| self.namespace(i)).collect()
    }

    /// Drops every packet between validators `a` and `b`, both ways.
    pub fn cut(&self, a: usize, b: usize) {
        for (from, to) in [(a, b), (b, a)] {
            let (ns, peer) = (self.namespace(from), self.host(to));
            sh(&["ip", "netns", "exec", &ns, "iptables", "-A", "INPUT", "-s", &peer, "-j", "DROP"]);
            sh(&["ip", "netns", "exec", &ns, "iptables", "-A", "OUTPUT", "-d", &peer, "-j", "DROP"]);
        }
    }

    /// Cuts every validator of `side` off from every validator not in it.
    pub fn partition(&self, side: &[usize]) {
        for a in side {
            for b in (0..self.n).filter(|b| !side.contains(b)) {
                self.cut(*a, b);
            }
        }
    }

    /// Removes every cut.
    pub fn heal(&self) {
        for i in 0..self.n {
            sh(&["ip", "netns", "exec", &self.namespace(i), "iptables", "-F"]);
        }
    }

    fn remove(&self) {
        for i in 0..self.n {
            try_sh(&["ip", "netns", "del", &self.namespace(i)]);
        }
        let br = self.bridge();
        try_sh(&["iptables", "-D", "FORWARD", "-i", &br, "-o", &br, "-j", "ACCEPT"]);
        try_sh(&["ip", "link", "del", &br]);
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        self.remove();
    }
}
