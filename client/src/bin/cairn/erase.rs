//! Following an erasure request from the `cairn` command.

use cairn_client::gateway::Gateway;

use super::with_retries;

/// Polls an erasure request until its certificates exist, showing progress.
pub fn wait_for_certificates(
    gateway: &Gateway,
    id: &str,
    wait_s: u64,
) -> anyhow::Result<Vec<cairn_proto::erasure::ErasureCertificate>> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(wait_s);
    let bar = crate::progress::bar(0, "custodian receipts committed");
    loop {
        if let Some(certificates) = with_retries(|| gateway.certificates(id))? {
            bar.finish_and_clear();
            return Ok(certificates);
        }
        let status = with_retries(|| gateway.erasure(id))?;
        // Every custodian entry of every record: {"custodian","state","last_error"}.
        let custodians: Vec<&serde_json::Value> = status
            .get("records")
            .and_then(|r| r.as_array())
            .into_iter()
            .flatten()
            .flat_map(|r| r.get("custodians").and_then(|c| c.as_array()).into_iter().flatten())
            .collect();
        let text = |c: &serde_json::Value, k: &str| c.get(k).and_then(|v| v.as_str()).map(str::to_string);
        let committed = custodians.iter().filter(|c| text(c, "state").as_deref() == Some("committed")).count();
        bar.set_length(custodians.len() as u64);
        bar.set_position(committed as u64);
        if std::time::Instant::now() >= deadline {
            bar.abandon();
            let errors: Vec<String> = custodians.iter().filter_map(|c| text(c, "last_error")).collect();
            anyhow::bail!(
                "no certificate after {wait_s} s; the node keeps trying (last news: {})",
                errors.first().map_or("custodians are still erasing", String::as_str)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}
