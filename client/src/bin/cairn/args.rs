//! What `cairn` accepts: its subcommands and their arguments (clap).

use std::path::PathBuf;

use cairn_client::gateway::Gateway;
use clap::{Parser, Subcommand};

use crate::{access, agreement, consent};

#[derive(Debug, Parser)]
#[command(name = "cairn", version, about = "Use and verify a cairn consortium ledger")]
pub(crate) struct Cli {
    /// CA certificate(s) (PEM) to trust for https:// nodes; by default the `ca.pem`
    /// beside a `--genesis` file is trusted.
    #[arg(long, global = true, env = "CAIRN_CA")]
    pub(crate) ca: Option<PathBuf>,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum InputFormat {
    /// From the file name: .csv, .json (a Bundle), otherwise JSON lines.
    Auto,
    /// One FHIR Observation per line.
    Jsonl,
    /// A FHIR Bundle of Observations.
    Bundle,
    /// Smart-shoe CSV (see `cairn_client::csv`).
    Csv,
}

/// The node a gateway talks to and the key it signs with.
#[derive(Debug, clap::Args)]
pub(crate) struct GatewayArgs {
    /// The node's API address (`https://HOST:PORT`, or `http://` where the node
    /// serves plain HTTP).
    #[arg(long)]
    pub(crate) node: String,
    /// The gateway's key file.
    #[arg(long)]
    pub(crate) key: PathBuf,
}

impl GatewayArgs {
    pub(crate) fn connect(&self) -> anyhow::Result<Gateway> {
        Ok(Gateway::new(&self.node, cairn_client::keys::load(&self.key)?))
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Submit readings (JSON lines, a FHIR Bundle or smart-shoe CSV) as a gateway; print
    /// one JSON line per stored record ({"index","rid","leaf"}) and a summary.
    Submit {
        #[command(flatten)]
        gateway: GatewayArgs,
        /// Purpose-of-use code declared for every reading (e.g. TREAT).
        #[arg(long)]
        purpose: String,
        /// Days until the records must be erased.
        #[arg(long)]
        retention_days: u32,
        /// Input layout.
        #[arg(long, value_enum, default_value = "auto")]
        format: InputFormat,
        /// Readings per request.
        #[arg(long, default_value_t = 100)]
        batch: usize,
        /// Requests in flight at once.
        #[arg(long, default_value_t = 4)]
        parallel: usize,
        /// Write the stored records here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Input file; `-` or nothing reads standard input.
        input: Option<PathBuf>,
    },
    /// Read a record back as the gateway that wrote it.
    Get {
        #[command(flatten)]
        gateway: GatewayArgs,
        /// Purpose the read is for (must match the record's).
        #[arg(long)]
        purpose: String,
        /// Also verify the record's receipt offline against this genesis file (the
        /// result goes to standard error).
        #[arg(long)]
        genesis: Option<PathBuf>,
        /// Write only the FHIR resource, byte for byte as it was sent (no line end
        /// added), instead of the node's whole answer.
        #[arg(long)]
        resource: bool,
        /// Record id.
        rid: String,
    },
    /// Fetch anchor receipts (one JSON line each) for record ids or for the output of
    /// `cairn submit`.
    Receipt {
        #[command(flatten)]
        gateway: GatewayArgs,
        /// A file written by `cairn submit` (JSON lines with "rid").
        #[arg(long)]
        from: Option<PathBuf>,
        /// How long to wait for receipts that are not yet anchored, milliseconds.
        #[arg(long, default_value_t = 10_000)]
        wait_ms: u64,
        /// Write the receipts here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Record ids.
        rids: Vec<String>,
    },
    /// As an organisation admin, register a gateway, accessor or regulator key and wait
    /// until the change is committed.
    Register {
        /// The node's HTTP address.
        #[arg(long)]
        node: String,
        /// The chain's genesis file.
        #[arg(long)]
        genesis: PathBuf,
        /// The admin's key file.
        #[arg(long)]
        admin_key: PathBuf,
        /// gateway, accessor or regulator.
        #[arg(long)]
        role: String,
        /// The key to register, as a key file (only its public key is used).
        #[arg(long, conflicts_with = "public_key")]
        key_file: Option<PathBuf>,
        /// The key to register, as 64 hex digits.
        #[arg(long)]
        public_key: Option<String>,
    },
    /// Verify anchor receipts (a JSON file, or JSON lines) offline against the genesis file.
    VerifyReceipt {
        /// The chain's genesis file.
        #[arg(long)]
        genesis: PathBuf,
        /// The receipt file.
        receipts: PathBuf,
    },
    /// Ask for the erasure of records, or of every record of a subject, at every custodian;
    /// wait for the certificates (one per record), write them to a directory and, with
    /// `--genesis`, verify each offline.
    Erase {
        #[command(flatten)]
        gateway: GatewayArgs,
        /// Erase every record this gateway wrote for this subject reference.
        #[arg(long, conflicts_with = "rids")]
        subject: Option<String>,
        /// Why: subject_request, purpose_achieved, consent_withdrawn (with --subject) or
        /// rectified (one record, with --replaced-by).
        #[arg(long, default_value = "subject_request")]
        trigger: String,
        /// With --trigger rectified: the record holding the corrected reading (submit it
        /// first, under the same subject); the certificate names it.
        #[arg(long)]
        replaced_by: Option<String>,
        /// Write the certificates here as <rid>.json (waits for them).
        #[arg(long)]
        out: Option<PathBuf>,
        /// How long to wait for the certificates, seconds.
        #[arg(long, default_value_t = 120)]
        wait_s: u64,
        /// Verify each certificate offline against this genesis file.
        #[arg(long, requires = "out")]
        genesis: Option<PathBuf>,
        /// Record ids.
        rids: Vec<String>,
    },
    /// Place a legal hold (or lift it with --release) on records, or on every record of a
    /// subject, at every custodian: a held record is not erased when its retention ends.
    Hold {
        #[command(flatten)]
        gateway: GatewayArgs,
        /// Every record this gateway wrote for this subject reference.
        #[arg(long, conflicts_with = "rids")]
        subject: Option<String>,
        /// Lift the hold instead.
        #[arg(long)]
        release: bool,
        /// Record ids.
        rids: Vec<String>,
    },
    /// Verify an erasure certificate offline against the genesis file: prints every check
    /// made and what a certificate cannot prove. The file holds the certificate as JSON (as
    /// a node serves it) or as hex of its bcs bytes (docs/formats/erasure-certificate.md).
    VerifyErasure {
        /// The chain's genesis file.
        #[arg(long)]
        genesis: PathBuf,
        /// Also challenge the custodians online: the HTTP address of every custodian
        /// (repeat); each must sign, for a fresh nonce, that it no longer holds the record.
        #[arg(long)]
        live: Vec<String>,
        /// The certificate file.
        certificate: PathBuf,
    },
    /// Generate an ed25519 key file; print its public key and key id.
    Keygen {
        /// Key file to create (must not exist).
        #[arg(long)]
        out: PathBuf,
    },
    /// Print a key file's public key and key id (e.g. the gateway's key id that
    /// `cairn bind` and `cairn consent` name).
    KeyInfo {
        /// The key file.
        key: PathBuf,
    },
    /// Fetch a node's latest certified checkpoint and verify it against the genesis file;
    /// with --since, also verify that its log extends an older checkpoint's.
    Checkpoint {
        /// The node's HTTP address, e.g. http://127.0.0.1:26200.
        #[arg(long)]
        node: String,
        /// The chain's genesis file.
        #[arg(long)]
        genesis: PathBuf,
        /// An older checkpoint (JSON) the new one must extend.
        #[arg(long)]
        since: Option<PathBuf>,
        /// Write the verified checkpoint here (JSON).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// As a gateway, bind a person's key (the patient's, or a legal representative's) to
    /// a subject you file readings under: that key may then consent for the subject.
    Bind(consent::BindArgs),
    /// Consents (FHIR Consent): grant, revoke, list, show, receipt.
    #[command(subcommand)]
    Consent(consent::ConsentCommand),
    /// Family grants (one patient, one family member): grant, sign, revoke.
    #[command(subcommand)]
    Family(consent::FamilyCommand),
    /// Three-party agreements: propose, sign, status, certificate, terminate, verify.
    #[command(subcommand)]
    Agreement(agreement::AgreementCommand),
    /// Read a patient's records as an accessor (through a consent) or a family member
    /// (through a grant), for a purpose; prints the node's answer (JSON).
    Access {
        #[command(flatten)]
        signer: consent::Signer,
        /// The purpose of this read (v3 PurposeOfUse code, e.g. TREAT).
        #[arg(long)]
        purpose: String,
        /// The consent or grant the read relies on (its id).
        #[arg(long)]
        basis: String,
        /// Write only the FHIR resource of the record, byte for byte.
        #[arg(long, requires = "rid")]
        resource: bool,
        /// One record (default: every record the basis covers).
        rid: Option<String>,
    },
    /// As the patient (or a bound representative): who read your records, when, why and
    /// under what, and who was refused, at every node (JSON); with --genesis every entry's
    /// proof is verified offline.
    Disclosures {
        #[command(flatten)]
        signer: consent::Signer,
        #[command(flatten)]
        subject: consent::SubjectArgs,
        /// Verify each entry against this genesis file.
        #[arg(long)]
        genesis: Option<PathBuf>,
    },
    /// As the patient (or a bound representative): everything held about you — readings
    /// byte for byte, consents, grants, agreements, the access log — as a FHIR Bundle with
    /// proofs, signed by the node, written to --out.
    Export {
        #[command(flatten)]
        signer: consent::Signer,
        #[command(flatten)]
        subject: consent::SubjectArgs,
        /// Where to write the Bundle (JSON).
        #[arg(long)]
        out: PathBuf,
    },
    /// Verify an export offline against the genesis file: the node's signature over every
    /// entry's bytes and each item's proof; a tampered entry is named.
    VerifyExport {
        /// The chain's genesis file.
        #[arg(long)]
        genesis: PathBuf,
        /// The export (a FHIR Bundle, JSON).
        export: PathBuf,
    },
    /// As the patient: restrict the processing of your records (place), or lift it.
    #[command(subcommand)]
    Restriction(access::RestrictionCommand),
    /// As an accessor: declare an emergency to read one subject's records without
    /// consent for a time box; always logged, flagged, shown to the patient and reviewed.
    BreakGlass {
        #[command(flatten)]
        signer: consent::Signer,
        #[command(flatten)]
        subject: consent::SubjectArgs,
        /// Your organisation (its genesis name).
        #[arg(long)]
        organisation: String,
        /// ETREAT (emergency treatment) or BTG (break the glass); the policy must permit it.
        #[arg(long, default_value = "ETREAT")]
        purpose: String,
        /// Why: who is in danger and why consent cannot be asked (required).
        #[arg(long)]
        justification: String,
        /// Length of the time box, minutes (at most the node's, 240 by default).
        #[arg(long, default_value_t = 240)]
        minutes: u64,
    },
    /// Break-glass reviews (a regulator key): list, close.
    #[command(subcommand)]
    Review(access::ReviewCommand),
    /// A node's access log without content: counts by outcome and each entry's proof (a
    /// regulator key; JSON).
    AccessLog {
        #[command(flatten)]
        signer: consent::Signer,
        /// First day (days since 1970-01-01).
        #[arg(long)]
        from_day: Option<u32>,
        /// Last day, inclusive.
        #[arg(long)]
        to_day: Option<u32>,
    },
    /// The consortium's purpose policy: show, change.
    #[command(subcommand)]
    Policy(consent::PolicyCommand),
    /// Verify an agreement certificate offline against the genesis file: prints every
    /// check made and what the certificate cannot prove (docs/formats/agreement-certificate.md).
    VerifyAgreement {
        /// The chain's genesis file.
        #[arg(long)]
        genesis: PathBuf,
        /// The certificate (JSON).
        certificate: PathBuf,
    },
    /// Verify a certified block (JSON) offline against a genesis file.
    VerifyBlock {
        /// The chain's genesis file.
        #[arg(long)]
        genesis: PathBuf,
        /// The certified block, as a node serves it (JSON).
        block: PathBuf,
    },
    /// Verify offline that a newer checkpoint's log extends an older one's.
    VerifyConsistency {
        /// The chain's genesis file.
        #[arg(long)]
        genesis: PathBuf,
        /// The older certified header (JSON).
        #[arg(long)]
        old: PathBuf,
        /// The newer certified header (JSON).
        #[arg(long)]
        new: PathBuf,
        /// The consistency proof: a JSON list of hex hashes.
        #[arg(long)]
        proof: PathBuf,
    },
}
