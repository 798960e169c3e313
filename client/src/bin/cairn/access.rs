//! `cairn disclosures`, `cairn restriction`, `cairn break-glass`, `cairn review` and
//! `cairn access-log` (docs/access.md).

use std::path::PathBuf;

use anyhow::Context as _;
use cairn_client::access::{break_glass_json, restriction_json};
use cairn_client::consent::{DocumentFile, revocation_json};
use cairn_proto::consent::DocumentKind;
use clap::Subcommand;

use super::consent::{Signer, SubjectArgs, id, print_json, sign_and_give};
use super::{Usage, read_genesis};

/// `cairn disclosures`: the subject's access log; with `--genesis`, every entry's proof is
/// verified offline and a count of what verified goes to standard error.
pub fn disclosures(signer: Signer, subject: SubjectArgs, genesis: Option<PathBuf>) -> anyhow::Result<()> {
    let g = signer.connect()?;
    let list = g.disclosures(&subject.subject()?)?;
    if !list.missing.is_empty() {
        eprintln!(
            "warning: {} validator(s) did not answer; their entries are missing: {:?}",
            list.missing.len(),
            list.missing
        );
    }
    if let Some(path) = genesis {
        let genesis = read_genesis(&path)?;
        let (mut verified, mut pending, mut expired) = (0, 0, 0);
        for e in &list.entries {
            match e.disclosure() {
                None => expired += 1,
                Some(d) if d.receipt.is_none() => pending += 1,
                Some(d) => {
                    d.verify(&genesis).with_context(|| format!("entry {} does not verify", e.handle))?;
                    verified += 1;
                }
            }
        }
        eprintln!(
            "{} entries: {verified} verified against the chain, {pending} not committed yet, {expired} past the log's retention",
            list.entries.len()
        );
    }
    print_json(&list)
}

#[derive(Debug, Subcommand)]
pub enum RestrictionCommand {
    /// As the patient (or a bound representative), stop every read of your records but
    /// your own and break-glass, at every node; prints the restriction's id.
    Place {
        #[command(flatten)]
        signer: Signer,
        #[command(flatten)]
        subject: SubjectArgs,
    },
    /// Lift a restriction (only a key bound to the subject may).
    Lift {
        #[command(flatten)]
        signer: Signer,
        #[command(flatten)]
        subject: SubjectArgs,
        /// The restriction's id.
        id: String,
    },
}

/// `cairn restriction place|lift`.
pub fn restriction(command: RestrictionCommand) -> anyhow::Result<()> {
    match command {
        RestrictionCommand::Place { signer, subject } => {
            let file = DocumentFile::new(DocumentKind::Restriction, subject.subject()?, restriction_json()?)?;
            sign_and_give(&signer, file)
        }
        RestrictionCommand::Lift { signer, subject, id: text } => {
            let json = revocation_json(id(&text)?)?;
            sign_and_give(&signer, DocumentFile::new(DocumentKind::Revocation, subject.subject()?, json)?)
        }
    }
}

/// `cairn break-glass`: declare an emergency for one subject as an accessor; prints the
/// declaration's id, the basis of the reads that follow (`cairn access --basis ID`).
pub fn break_glass(
    signer: Signer,
    subject: SubjectArgs,
    organisation: String,
    purpose: String,
    justification: String,
    minutes: u64,
) -> anyhow::Result<()> {
    let json = break_glass_json(&organisation, &purpose, &justification, minutes).map_err(|e| Usage(format!("{e}")))?;
    eprintln!("break-glass: every read is logged, flagged, shown to the patient and reviewed");
    sign_and_give(&signer, DocumentFile::new(DocumentKind::BreakGlass, subject.subject()?, json)?)
}

#[derive(Debug, Subcommand)]
pub enum ReviewCommand {
    /// The break-glass declarations a node took, open ones first (JSON).
    List {
        #[command(flatten)]
        signer: Signer,
    },
    /// Close a review: `reviewed` (justified) or `unjustified`, with a note.
    Close {
        #[command(flatten)]
        signer: Signer,
        /// `reviewed` or `unjustified`.
        #[arg(long, value_parser = ["reviewed", "unjustified"])]
        verdict: String,
        /// Why, in words.
        #[arg(long)]
        note: String,
        /// The declaration's id.
        id: String,
    },
}

/// `cairn review list|close` (a regulator key).
pub fn review(command: ReviewCommand) -> anyhow::Result<()> {
    match command {
        ReviewCommand::List { signer } => print_json(&signer.connect()?.reviews()?),
        ReviewCommand::Close { signer, verdict, note, id: text } => {
            print_json(&signer.connect()?.close_review(&id(&text)?, &verdict, &note)?)
        }
    }
}

/// `cairn access-log`: a node's access log without content (a regulator key).
pub fn access_log(signer: Signer, from_day: Option<u32>, to_day: Option<u32>) -> anyhow::Result<()> {
    print_json(&signer.connect()?.access_log(from_day, to_day)?)
}

/// `cairn export`: everything held about the subject, as a FHIR Bundle with proofs,
/// written to `out` (the caller must be bound to the subject).
pub fn export(signer: Signer, subject: SubjectArgs, out: PathBuf) -> anyhow::Result<()> {
    let g = signer.connect()?;
    // One request: the node gathers everything from every validator before it answers,
    // so the spinner shows the time spent, not a fraction.
    let spinner =
        crate::progress::spinner("exporting: the node gathers the readings, documents, access log and certificates…");
    let bytes = g.export(&subject.subject()?);
    spinner.finish_and_clear();
    let bytes = bytes?;
    std::fs::write(&out, &bytes).with_context(|| format!("writing {}", out.display()))?;
    eprintln!(
        "wrote {} bytes to {}; check it with `cairn verify-export --genesis GENESIS {}`",
        bytes.len(),
        out.display(),
        out.display()
    );
    Ok(())
}

/// `cairn verify-export`: checks an export offline; prints what it established.
pub fn verify_export(genesis: &std::path::Path, file: &std::path::Path) -> anyhow::Result<()> {
    let genesis = read_genesis(genesis)?;
    let text = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let bar = crate::progress::bar(0, "items verified");
    let verified = cairn_client::export::verify_export(&genesis, &text, |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    });
    bar.finish_and_clear();
    let v = verified.context("the export does not verify")?;
    println!("ok: signed by validator {} over the exact bytes of every entry", v.node);
    println!("ok: {} readings, each with an anchor receipt that verifies against the chain", v.readings);
    println!("ok: {} consent-layer documents, each signed by its parties for this chain", v.documents);
    println!("ok: {} access-log entries, each committed on chain", v.disclosures);
    println!("ok: {} erasure certificates of erased records, each verified as `cairn verify-erasure` does", v.erasures);
    if v.erasures_pending > 0 {
        println!(
            "not yet certified when exported: {} erased record(s) the log names (custodians still erasing; export again later)",
            v.erasures_pending
        );
    }
    if v.pending > 0 {
        println!(
            "not yet committed when exported: {} item(s) (covered by the signature only; export again later for their proofs)",
            v.pending
        );
    }
    println!(
        "not established: that the export is complete (a validator that did not answer, records erased since), \
         and that a reading's bytes are those its leaf commits to (the leaf commits to the ciphertext; the \
         validator's signature binds the bytes)"
    );
    Ok(())
}
