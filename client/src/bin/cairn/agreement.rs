//! `cairn agreement` and `cairn verify-agreement`: the three-party agreement of
//! institution, patient and family (sandbox condition ⑧, docs/consent.md).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use cairn_client::consent::{AgreementSpec, DocumentFile, agreement_json};
use cairn_proto::consent::{Agreement, DocumentKind};
use clap::Subcommand;

use super::consent::{Signer, SubjectArgs, give, hash_file, id, period, public_key, revoke, write_file};
use super::{Usage, read_genesis, read_json, report};

#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant, reason = "command-line arguments, parsed once per process")]
pub enum AgreementCommand {
    /// Write an unsigned three-party agreement to FILE (institution, patient, family).
    Propose {
        #[command(flatten)]
        subject: SubjectArgs,
        /// The full human-readable contract text: only its hash goes in the agreement.
        #[arg(long)]
        text: PathBuf,
        /// The institution's organisation (genesis name).
        #[arg(long)]
        organisation: String,
        /// The key that signs for the institution (an admin or accessor key of it).
        #[arg(long)]
        institution_key: String,
        /// The patient's public key or key file.
        #[arg(long)]
        patient: String,
        /// A family member: KEY=RELATIONSHIP (v3 RoleCode); repeat.
        #[arg(long = "family", required = true)]
        family: Vec<String>,
        /// Purposes; repeat.
        #[arg(long = "purpose", required = true)]
        purposes: Vec<String>,
        /// Categories (system|code), or none for all.
        #[arg(long = "category")]
        categories: Vec<String>,
        /// Days the institution keeps what it released.
        #[arg(long)]
        retention_days: u32,
        /// The institution's liability for leaks or breach of contract.
        #[arg(long)]
        liability: String,
        /// Hours within which a breach is notified.
        #[arg(long, default_value_t = 72)]
        breach_notice_hours: u32,
        /// Breach-notice duties.
        #[arg(long)]
        breach_duties: String,
        /// Start, RFC 3339 (default: now).
        #[arg(long)]
        from: Option<String>,
        /// End, RFC 3339.
        #[arg(long)]
        until: String,
        /// The agreement this one amends (its id).
        #[arg(long)]
        replaces: Option<String>,
        /// The file to write.
        #[arg(long)]
        out: PathBuf,
    },
    /// Add your signature to an agreement file; once every party has signed, give it to
    /// the node (it is executed there) and print its id.
    Sign {
        #[command(flatten)]
        signer: Signer,
        /// Only sign; do not give it even if every party has signed.
        #[arg(long)]
        no_submit: bool,
        /// The agreement file.
        file: PathBuf,
    },
    /// Show who has signed an agreement file and who has not.
    Status {
        /// The agreement file.
        file: PathBuf,
    },
    /// Fetch an executed agreement's certificate (from the node that took it); with
    /// --genesis, verify it.
    Certificate {
        #[command(flatten)]
        signer: Signer,
        /// Write it here.
        #[arg(long)]
        out: PathBuf,
        /// Wait this long for the commitment, milliseconds.
        #[arg(long, default_value_t = 30_000)]
        wait_ms: u64,
        /// The agreement's id.
        id: String,
    },
    /// End an agreement (any party); the grants under it end with it.
    Terminate {
        #[command(flatten)]
        signer: Signer,
        #[command(flatten)]
        subject: SubjectArgs,
        /// The agreement's id.
        id: String,
    },
    /// Verify an agreement certificate offline (same as `cairn verify-agreement`).
    Verify {
        /// The chain's genesis file.
        #[arg(long)]
        genesis: PathBuf,
        /// The certificate (JSON).
        certificate: PathBuf,
    },
}

pub fn agreement(command: AgreementCommand) -> anyhow::Result<()> {
    match command {
        AgreementCommand::Propose {
            subject,
            text,
            organisation,
            institution_key,
            patient,
            family,
            purposes,
            categories,
            retention_days,
            liability,
            breach_notice_hours,
            breach_duties,
            from,
            until,
            replaces,
            out,
        } => {
            let family = family
                .iter()
                .map(|f| {
                    let (k, r) =
                        f.split_once('=').ok_or_else(|| Usage(format!("--family {f:?} is not KEY=RELATIONSHIP")))?;
                    Ok((public_key(k)?, r.to_string()))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let from = from.unwrap_or_else(|| jiff::Timestamp::now().to_string());
            let json = agreement_json(&AgreementSpec {
                text_hash: hash_file(&text)?,
                organisation,
                institution_key: public_key(&institution_key)?,
                patient: public_key(&patient)?,
                family,
                purposes,
                categories: if categories.is_empty() { vec!["*".into()] } else { categories },
                retention_days,
                liability,
                breach_hours: breach_notice_hours,
                breach_duties,
                period: period(&from, &until)?,
                replaces: replaces.as_deref().map(id).transpose()?,
            })?;
            let file = DocumentFile::new(DocumentKind::Agreement, subject.subject()?, json)?;
            write_file(&out, &file.render()?)?;
            eprintln!("wrote {}: each party signs it with `cairn agreement sign`", out.display());
            Ok(())
        }
        AgreementCommand::Sign { signer, no_submit, file: path } => {
            let mut file = DocumentFile::parse(
                &std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?,
            )?;
            let (g, key) = signer.connect_with_key()?;
            let terms = Agreement::parse(file.resource.get())?;
            if !terms.parties().iter().any(|(_, k)| *k == key.public()) {
                anyhow::bail!("your key is not a party to this agreement: signing it would not execute it");
            }
            file.sign(&g.identity()?.chain, &key)?;
            write_file(&path, &file.render()?)?;
            let missing: Vec<String> = terms
                .parties()
                .into_iter()
                .filter(|(_, k)| !file.signatures.iter().any(|s| s.key == *k))
                .map(|(n, _)| n)
                .collect();
            if !missing.is_empty() || no_submit {
                eprintln!(
                    "signed; still to sign: {}",
                    if missing.is_empty() { "nobody".into() } else { missing.join(", ") }
                );
                return Ok(());
            }
            give(&g, &file)
        }
        AgreementCommand::Status { file: path } => {
            let file = DocumentFile::parse(
                &std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?,
            )?;
            let terms = Agreement::parse(file.resource.get())?;
            let mut out = std::io::stdout().lock();
            for (name, key) in terms.parties() {
                let signed = file.signatures.iter().any(|s| s.key == key);
                writeln!(out, "{}: {name} ({})", if signed { "signed" } else { "unsigned" }, key.key_id())?;
            }
            Ok(())
        }
        AgreementCommand::Certificate { signer, out, wait_ms, id: text } => {
            let Some(cert) = signer.connect()?.agreement_certificate(&id(&text)?, wait_ms)? else {
                anyhow::bail!("the agreement is not committed yet (or ask the node that took it)");
            };
            write_file(&out, &serde_json::to_string_pretty(&cert)?)?;
            eprintln!("wrote {}", out.display());
            Ok(())
        }
        AgreementCommand::Terminate { signer, subject, id: text } => revoke(&signer, &subject, &text),
        AgreementCommand::Verify { genesis, certificate } => verify_agreement(&genesis, &certificate),
    }
}

/// `cairn verify-agreement`: every check made, then what the certificate cannot prove.
pub fn verify_agreement(genesis: &Path, certificate: &Path) -> anyhow::Result<()> {
    let genesis = read_genesis(genesis)?;
    let cert: cairn_proto::consent::AgreementCertificate = read_json(certificate)?;
    let checks = cert.verify(&genesis).context("the agreement certificate does not verify")?;
    report(&checks, cairn_proto::consent::AGREEMENT_CANNOT_PROVE)?;
    Ok(())
}
