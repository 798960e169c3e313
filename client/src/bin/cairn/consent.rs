//! `cairn bind`, `cairn consent`, `cairn family`, `cairn access` and `cairn policy`
//! (docs/consent.md); the agreement commands are in `agreement.rs`.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use cairn_client::consent::{
    ConsentSpec, DocumentFile, GrantSpec, binding_json, consent_json, grant_json, instant_ms, revocation_json,
};
use cairn_client::gateway::Gateway;
use cairn_proto::consent::{DocumentKind, Period, PersonRole, Subject};
use cairn_proto::record::RecordId;
use cairn_proto::{Hash32, KeyId, PublicKey};
use clap::Subcommand;

use super::{Usage, read_genesis};

/// The node and the key that signs.
#[derive(Debug, clap::Args)]
pub struct Signer {
    /// The node's API address (`https://HOST:PORT`).
    #[arg(long)]
    node: String,
    /// Your key file (`cairn keygen`).
    #[arg(long)]
    key: PathBuf,
}

impl Signer {
    pub fn connect(&self) -> anyhow::Result<Gateway> {
        Ok(self.connect_with_key()?.0)
    }
    pub(crate) fn connect_with_key(&self) -> anyhow::Result<(Gateway, cairn_proto::Keypair)> {
        let key = cairn_client::keys::load(&self.key)?;
        Ok((Gateway::new(&self.node, key.clone()), key))
    }
}

/// The subject a gateway files readings under.
#[derive(Debug, clap::Args)]
pub struct SubjectArgs {
    /// The gateway's key id (32 hex digits).
    #[arg(long)]
    gateway: String,
    /// The subject key (e.g. Patient/123).
    #[arg(long)]
    subject: String,
}

impl SubjectArgs {
    pub fn subject(&self) -> anyhow::Result<Subject> {
        let gateway: KeyId = self.gateway.parse().map_err(|_| Usage("--gateway is a key id: 32 hex digits".into()))?;
        Ok(Subject { gateway, reference: self.subject.clone() })
    }
}

pub fn id(text: &str) -> anyhow::Result<RecordId> {
    Ok(text.parse().map_err(|_| Usage(format!("{text:?} is not a document id (32 hex digits)")))?)
}

pub(crate) fn public_key(text: &str) -> anyhow::Result<PublicKey> {
    if let Ok(k) = text.parse() {
        return Ok(k);
    }
    Ok(cairn_client::keys::load(Path::new(text))
        .map(|k| k.public())
        .map_err(|_| Usage(format!("{text:?} is neither a public key (64 hex digits) nor a key file")))?)
}

pub(crate) fn period(from: &str, until: &str) -> anyhow::Result<Period> {
    let p = Period { start_ms: instant_ms(from)?, end_ms: instant_ms(until)? };
    if p.start_ms >= p.end_ms {
        return Err(Usage("--from must be before --until".into()).into());
    }
    Ok(p)
}

pub fn print_json(v: &impl serde::Serialize) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, v)?;
    writeln!(out)?;
    Ok(())
}

pub(crate) fn write_file(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// Revokes document `text` (a consent, grant or agreement) of `subject`.
pub(crate) fn revoke(signer: &Signer, subject: &SubjectArgs, text: &str) -> anyhow::Result<()> {
    let json = revocation_json(id(text)?)?;
    sign_and_give(signer, DocumentFile::new(DocumentKind::Revocation, subject.subject()?, json)?)
}

/// Gives a document and prints `{"id","kind","taken_by"}`.
pub(crate) fn give(g: &Gateway, file: &DocumentFile) -> anyhow::Result<()> {
    let created = g.give(file)?;
    eprintln!("{:?} {} taken by node {}", created.kind, created.id, created.taken_by);
    print_json(&created)
}

/// Signs `file` with the signer's key for the node's chain and gives it.
pub fn sign_and_give(signer: &Signer, mut file: DocumentFile) -> anyhow::Result<()> {
    let (g, key) = signer.connect_with_key()?;
    file.sign(&g.identity()?.chain, &key)?;
    give(&g, &file)
}

#[derive(Debug, Subcommand)]
pub enum ConsentCommand {
    /// As the patient (or a bound representative), consent to an organisation reading
    /// your records for the purposes named; prints the consent's id.
    Grant {
        #[command(flatten)]
        signer: Signer,
        #[command(flatten)]
        subject: SubjectArgs,
        /// The organisation that may read (its genesis name, e.g. hospital).
        #[arg(long)]
        to: String,
        /// A purpose of use (v3 PurposeOfUse code, e.g. TREAT); repeat for more.
        #[arg(long = "purpose", required = true)]
        purposes: Vec<String>,
        /// A record category, system|code of Observation.code (e.g.
        /// http://loinc.org|41950-7); repeat; none: every category.
        #[arg(long = "category")]
        categories: Vec<String>,
        /// Start of the consent, RFC 3339 with a time and offset, e.g.
        /// 2026-12-01T00:00:00Z (default: now).
        #[arg(long)]
        from: Option<String>,
        /// End of the consent, RFC 3339 with a time and offset, e.g. 2027-12-31T00:00:00Z.
        #[arg(long)]
        until: String,
        /// Only records from this time, RFC 3339.
        #[arg(long)]
        data_from: Option<String>,
        /// Only records before this time, RFC 3339.
        #[arg(long)]
        data_until: Option<String>,
        /// A purpose denied as an exception; repeat.
        #[arg(long = "deny-purpose")]
        deny_purposes: Vec<String>,
        /// Give this FHIR Consent (JSON file, kept byte for byte) instead of building one.
        #[arg(long, conflicts_with_all = ["categories", "data_from", "data_until", "deny_purposes"])]
        fhir: Option<PathBuf>,
    },
    /// Revoke a consent (it ends at every node at once).
    Revoke {
        #[command(flatten)]
        signer: Signer,
        #[command(flatten)]
        subject: SubjectArgs,
        /// The consent's id.
        id: String,
    },
    /// List the documents of a subject (bindings, consents, grants, agreements,
    /// revocations) as JSON.
    List {
        #[command(flatten)]
        signer: Signer,
        #[command(flatten)]
        subject: SubjectArgs,
    },
    /// Show one document; with --resource, only its JSON byte for byte.
    Show {
        #[command(flatten)]
        signer: Signer,
        /// Write only the document's JSON (a FHIR Consent), as it was given.
        #[arg(long)]
        resource: bool,
        /// The document's id.
        id: String,
    },
    /// The receipt of a document's event (ask the node that took it); with --genesis,
    /// verified offline.
    Receipt {
        #[command(flatten)]
        signer: Signer,
        /// Wait this long for the commitment, milliseconds.
        #[arg(long, default_value_t = 30_000)]
        wait_ms: u64,
        /// Verify the receipt against this genesis file.
        #[arg(long)]
        genesis: Option<PathBuf>,
        /// The document's id.
        id: String,
    },
}

pub fn consent(command: ConsentCommand) -> anyhow::Result<()> {
    match command {
        ConsentCommand::Grant {
            signer,
            subject,
            to,
            purposes,
            categories,
            from,
            until,
            data_from,
            data_until,
            deny_purposes,
            fhir,
        } => {
            let subject = subject.subject()?;
            // Times are checked here, so a mistake is named before anything is signed.
            let end = instant_ms(&until).map_err(|e| Usage(format!("--until: {e}")))?;
            if let Some(f) = &from {
                let start = instant_ms(f).map_err(|e| Usage(format!("--from: {e}")))?;
                if start >= end {
                    return Err(Usage(format!("--from {f} is not before --until {until}")).into());
                }
            }
            if end <= cairn_proto::time::now_ms() {
                return Err(Usage(format!("--until {until} is in the past: the consent would grant nothing")).into());
            }
            let json = match fhir {
                Some(path) => std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?,
                None => {
                    let start = from.unwrap_or_else(|| jiff::Timestamp::now().to_string());
                    consent_json(&ConsentSpec {
                        subject: subject.reference.clone(),
                        organisation: to,
                        purposes,
                        categories,
                        start,
                        end: until,
                        data_start: data_from,
                        data_end: data_until,
                        deny_purposes,
                    })?
                }
            };
            sign_and_give(&signer, DocumentFile::new(DocumentKind::Consent, subject, json)?)
        }
        ConsentCommand::Revoke { signer, subject, id: text } => revoke(&signer, &subject, &text),
        ConsentCommand::List { signer, subject } => print_json(&signer.connect()?.documents(&subject.subject()?)?),
        ConsentCommand::Show { signer, resource, id: text } => {
            let bytes = signer.connect()?.document_bytes(&id(&text)?)?;
            let mut out = std::io::stdout().lock();
            if resource {
                #[derive(serde::Deserialize)]
                struct Answer<'a> {
                    #[serde(borrow)]
                    resource: &'a serde_json::value::RawValue,
                }
                let a: Answer = serde_json::from_slice(&bytes).context("the node's answer")?;
                out.write_all(a.resource.get().as_bytes())?;
            } else {
                out.write_all(&bytes)?;
                writeln!(out)?;
            }
            Ok(())
        }
        ConsentCommand::Receipt { signer, wait_ms, genesis, id: text } => {
            let Some(receipt) = signer.connect()?.document_receipt(&id(&text)?, wait_ms)? else {
                anyhow::bail!("the document is not committed yet (or ask the node that took it)");
            };
            if let Some(g) = genesis {
                let r: cairn_proto::consent::DocumentReceipt = serde_json::from_value(receipt.clone())?;
                let checks = r.verify(&read_genesis(&g)?)?;
                for c in checks {
                    eprintln!("ok: {c}");
                }
            }
            print_json(&receipt)
        }
    }
}

/// `cairn bind`: as the gateway, bind a person's key to a subject.
pub fn bind(signer: Signer, subject: SubjectArgs, person: String, representative: bool) -> anyhow::Result<()> {
    let role = if representative { PersonRole::Representative } else { PersonRole::Patient };
    let json = binding_json(public_key(&person)?, role)?;
    sign_and_give(&signer, DocumentFile::new(DocumentKind::SubjectBinding, subject.subject()?, json)?)
}

/// Arguments of `cairn bind`.
#[derive(Debug, clap::Args)]
pub struct BindArgs {
    #[command(flatten)]
    pub signer: Signer,
    #[command(flatten)]
    pub subject: SubjectArgs,
    /// The person's public key (64 hex digits) or key file.
    #[arg(long)]
    pub person: String,
    /// The person acts as a legal representative, not as the patient.
    #[arg(long)]
    pub representative: bool,
}

#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant, reason = "command-line arguments, parsed once per process")]
pub enum FamilyCommand {
    /// As the patient, write a grant for one family member (signed by you) to FILE;
    /// the verifying institution then signs it with `cairn family sign` and gives it.
    Grant {
        /// The chain's genesis file (what the signature is bound to).
        #[arg(long)]
        genesis: PathBuf,
        /// Your key file (the patient, or a representative with --representative).
        #[arg(long)]
        key: PathBuf,
        #[command(flatten)]
        subject: SubjectArgs,
        /// The patient's public key (default: yours).
        #[arg(long)]
        patient: Option<String>,
        /// You sign as the patient's legal representative.
        #[arg(long)]
        representative: bool,
        /// The family member's public key or key file.
        #[arg(long)]
        family: String,
        /// v3 RoleCode of the relationship (e.g. MTH, SPS, CHILD).
        #[arg(long)]
        relationship: String,
        /// The evidence document of the relationship: only its hash goes in the grant.
        #[arg(long)]
        evidence: PathBuf,
        /// The verifying organisation.
        #[arg(long)]
        verified_by: String,
        /// The verifier's public key or key file.
        #[arg(long)]
        verifier: String,
        /// The executed agreement's id.
        #[arg(long)]
        agreement: String,
        /// Purposes (FAMRQT plus care purposes); repeat.
        #[arg(long = "purpose", required = true)]
        purposes: Vec<String>,
        /// Categories (system|code), or none for all.
        #[arg(long = "category")]
        categories: Vec<String>,
        /// Start, RFC 3339 (default: now).
        #[arg(long)]
        from: Option<String>,
        /// End, RFC 3339.
        #[arg(long)]
        until: String,
        /// The file to write.
        #[arg(long)]
        out: PathBuf,
    },
    /// Sign a grant file (as the verifier) and give it to a node once every signature is
    /// there.
    Sign {
        #[command(flatten)]
        signer: Signer,
        /// The grant file.
        file: PathBuf,
    },
    /// Revoke a family grant.
    Revoke {
        #[command(flatten)]
        signer: Signer,
        #[command(flatten)]
        subject: SubjectArgs,
        /// The grant's id.
        id: String,
    },
}

pub(crate) fn hash_file(path: &Path) -> anyhow::Result<Hash32> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(cairn_proto::hash::blake3(&bytes))
}

pub fn family(command: FamilyCommand) -> anyhow::Result<()> {
    match command {
        FamilyCommand::Grant {
            genesis,
            key,
            subject,
            patient,
            representative,
            family,
            relationship,
            evidence,
            verified_by,
            verifier,
            agreement,
            purposes,
            categories,
            from,
            until,
            out,
        } => {
            let genesis = read_genesis(&genesis)?;
            let me = cairn_client::keys::load(&key)?;
            let patient = match patient {
                Some(p) => public_key(&p)?,
                None if representative => return Err(Usage("--representative needs --patient".into()).into()),
                None => me.public(),
            };
            let from = from.unwrap_or_else(|| jiff::Timestamp::now().to_string());
            let json = grant_json(&GrantSpec {
                patient,
                representative: representative.then(|| me.public()),
                family: public_key(&family)?,
                relationship,
                evidence_hash: hash_file(&evidence)?,
                verified_by,
                verifier: public_key(&verifier)?,
                agreement: id(&agreement)?,
                purposes,
                categories: if categories.is_empty() { vec!["*".into()] } else { categories },
                period: period(&from, &until)?,
            })?;
            let mut file = DocumentFile::new(DocumentKind::FamilyGrant, subject.subject()?, json)?;
            file.sign(&genesis.hash()?, &me)?;
            write_file(&out, &file.render()?)?;
            eprintln!("wrote {}: the verifier signs it next (`cairn family sign`)", out.display());
            Ok(())
        }
        FamilyCommand::Sign { signer, file: path } => {
            let file = DocumentFile::parse(
                &std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?,
            )?;
            let (g, key) = signer.connect_with_key()?;
            let mut file = file;
            file.sign(&g.identity()?.chain, &key)?;
            write_file(&path, &file.render()?)?;
            give(&g, &file)
        }
        FamilyCommand::Revoke { signer, subject, id: text } => revoke(&signer, &subject, &text),
    }
}

/// `cairn access`: read a patient's records through a consent or grant.
pub fn access(
    signer: Signer,
    purpose: String,
    basis: String,
    rid: Option<String>,
    resource: bool,
) -> anyhow::Result<()> {
    let g = signer.connect()?;
    let rid = rid.as_deref().map(id).transpose()?;
    let bytes = g.access(&purpose, &id(&basis)?, rid.as_ref())?;
    let mut out = std::io::stdout().lock();
    if resource && rid.is_some() {
        #[derive(serde::Deserialize)]
        struct Answer<'a> {
            #[serde(borrow)]
            resource: &'a serde_json::value::RawValue,
        }
        let a: Answer = serde_json::from_slice(&bytes).context("the node's answer")?;
        out.write_all(a.resource.get().as_bytes())?;
        return Ok(());
    }
    out.write_all(&bytes)?;
    writeln!(out)?;
    Ok(())
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Print the purposes reads may name.
    Show {
        /// The node's API address.
        #[arg(long)]
        node: String,
    },
    /// Replace the purposes, signed by admins of a quorum of organisations; waits for the
    /// commit.
    Change {
        /// The node's API address.
        #[arg(long)]
        node: String,
        /// The chain's genesis file.
        #[arg(long)]
        genesis: PathBuf,
        /// An admin's key file; repeat for each signing admin.
        #[arg(long = "admin-key", required = true)]
        admin_keys: Vec<PathBuf>,
        /// The new purposes (v3 PurposeOfUse codes); repeat.
        #[arg(long = "purpose", required = true)]
        purposes: Vec<String>,
    },
}

pub fn policy(command: PolicyCommand) -> anyhow::Result<()> {
    match command {
        PolicyCommand::Show { node } => {
            let g = Gateway::new(&node, cairn_proto::Keypair::from_seed(&cairn_proto::SecretSeed::from_bytes([0; 32])));
            print_json(&g.policy()?)
        }
        PolicyCommand::Change { node, genesis, admin_keys, purposes } => {
            let genesis = read_genesis(&genesis)?;
            let admins = admin_keys.iter().map(|p| cairn_client::keys::load(p)).collect::<Result<Vec<_>, _>>()?;
            let version = cairn_client::admin::change_policy(
                &node,
                &genesis,
                &admins,
                purposes,
                std::time::Duration::from_secs(60),
            )?;
            eprintln!("policy version {version} committed");
            Ok(())
        }
    }
}
