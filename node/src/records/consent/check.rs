//! The rules a new consent-layer document must meet before it is stored
//! (docs/consent.md "What is accepted"; ADR 017): who may sign which kind, the terms
//! against the subject's documents already held, and the clock.

use cairn_proto::PublicKey;
use cairn_proto::consent::{Document, PersonRole};
use cairn_proto::membership::Role;
use cairn_proto::record::RecordId;

use super::decide::{Doc, DocSet, Terms};
use super::{ConsentError, REVOCATION_SKEW_MS, Records, fhir, invalid, refused};

impl Records {
    /// The rules a new document must meet (docs/consent.md "What is accepted").
    pub(super) fn check_new(
        &self,
        set: &DocSet,
        doc: &Document,
        terms: &Terms,
        now_ms: u64,
    ) -> Result<(), ConsentError> {
        let membership = self.ledger.membership();
        let (policy, _) = self.ledger.policy();
        let chain = self.ledger.chain();
        let only_signer = |what: &str| -> Result<PublicKey, ConsentError> {
            match doc.signatures.as_slice() {
                [one] => Ok(one.key),
                _ => Err(invalid("signatures", format!("{what} carries exactly one signature"))),
            }
        };
        // Every purpose a document grants must be one the consortium permits.
        let permitted = |purposes: &[String]| -> Result<(), ConsentError> {
            match purposes.iter().find(|p| !policy.permits(p)) {
                Some(p) => {
                    Err(refused("purpose_not_in_policy", format!("{p} is not a purpose the consortium permits")))
                }
                None => Ok(()),
            }
        };
        let future = |field: &str, end: u64| {
            if end <= now_ms {
                Err(refused("expired", format!("`{field}` ends before now: nothing would be granted")))
            } else {
                Ok(())
            }
        };
        match terms {
            Terms::Binding(b) => {
                let signer = only_signer("a binding")?;
                if signer.key_id() != doc.subject.gateway {
                    return Err(refused(
                        "not_the_gateway",
                        "a binding is signed by the gateway that files the subject",
                    ));
                }
                let gateway = membership.member(&signer.key_id());
                if gateway.is_none_or(|m| m.role != Role::Gateway) {
                    return Err(refused("not_the_gateway", "the signer is not a registered gateway key"));
                }
                if membership.members.iter().any(|m| m.public_key == b.key)
                    || membership.validators.iter().any(|v| v.public_key == b.key)
                {
                    return Err(invalid("key", "a person's key must not be a consortium key"));
                }
                if set.role_of(&b.key).is_some() {
                    return Err(refused("already_bound", "this key is already bound to the subject"));
                }
            }
            Terms::Consent(c) => {
                let signer = only_signer("a consent")?;
                if set.role_of(&signer).is_none() {
                    return Err(refused(
                        "not_bound",
                        "the consent is not signed by a key the gateway bound to this subject",
                    ));
                }
                let accessor =
                    membership.members.iter().any(|m| m.organisation == c.grantee && m.role == Role::Accessor);
                if !accessor {
                    return Err(refused(
                        "not_an_accessor",
                        format!("{} has no key registered with the accessor role", c.grantee),
                    ));
                }
                if c.kind == fhir::ProvisionType::Permit {
                    permitted(&c.scope.purposes)?;
                }
                future("provision.period.end", c.period.end_ms)?;
            }
            Terms::Grant(g) => {
                if set.role_of(&g.patient) != Some(PersonRole::Patient) {
                    return Err(refused(
                        "not_bound",
                        "the grant's patient key is not bound to this subject as the patient",
                    ));
                }
                let signer = g.patient_signer();
                if set.role_of(&signer) != Some(g.signed_as) {
                    return Err(refused(
                        "not_bound",
                        format!("the key signing for the patient is not bound as {:?}", g.signed_as),
                    ));
                }
                let v = &g.verification;
                let verifier_ok = membership
                    .organisations
                    .iter()
                    .any(|o| o.name == v.verified_by && o.admin_keys.contains(&v.verifier))
                    || membership.members.iter().any(|m| {
                        m.organisation == v.verified_by && m.public_key == v.verifier && m.role == Role::Accessor
                    });
                if !verifier_ok {
                    return Err(refused("not_a_verifier", format!("the verifier is not a key of {}", v.verified_by)));
                }
                let expected = [signer, v.verifier];
                if doc.signatures.len() != 2 || !expected.iter().all(|k| doc.signed_by(k)) {
                    return Err(invalid(
                        "signatures",
                        "a grant is signed by the patient (or representative) and the verifier, no one else",
                    ));
                }
                let a = set.live_agreement(&g.agreement, now_ms, &chain)?;
                if a.patient != g.patient || !a.family.iter().any(|f| f.key == g.family.key) {
                    return Err(refused(
                        "agreement_not_covering",
                        "the agreement does not cover this patient and family member",
                    ));
                }
                if let Some(p) = g.purposes.iter().find(|p| !a.purposes.contains(p)) {
                    return Err(refused("agreement_not_covering", format!("the agreement does not cover {p}")));
                }
                permitted(&g.purposes)?;
                future("period.end_ms", g.period.end_ms)?;
            }
            Terms::Agreement(a) => {
                a.check_institution(self.ledger.genesis())
                    .map_err(|e| refused("not_the_institution", e.to_string()))?;
                a.check_execution(doc, &chain).map_err(|e| refused("agreement_not_executed", e.to_string()))?;
                if set.role_of(&a.patient) != Some(PersonRole::Patient) {
                    return Err(refused(
                        "not_bound",
                        "the agreement's patient key is not bound to this subject as the patient",
                    ));
                }
                if let Some(old) = a.replaces {
                    match set.get(&old).map(|d| &d.terms) {
                        Some(Terms::Agreement(_)) if set.amendment_of(&old).is_none() => {}
                        Some(Terms::Agreement(_)) => {
                            return Err(refused("agreement_superseded", format!("{old} was already amended")));
                        }
                        _ => {
                            return Err(refused(
                                "no_agreement",
                                format!("no agreement {old} to amend for this patient"),
                            ));
                        }
                    }
                }
                permitted(&a.purposes)?;
                future("period.end_ms", a.period.end_ms)?;
            }
            Terms::Restriction(r) => {
                let signer = only_signer("a restriction")?;
                if set.role_of(&signer).is_none() {
                    return Err(refused(
                        "not_bound",
                        "a restriction is signed by the patient (or a representative) bound to the subject",
                    ));
                }
                if let Some(old) = set.restriction() {
                    return Err(refused("already_restricted", format!("restriction {} is in force", old.id)));
                }
                if r.issued_ms > now_ms.saturating_add(REVOCATION_SKEW_MS) {
                    return Err(invalid("issued_ms", "in the future"));
                }
            }
            Terms::BreakGlass(b) => {
                let signer = only_signer("a break-glass declaration")?;
                let accessor = membership
                    .members
                    .iter()
                    .any(|m| m.public_key == signer && m.role == Role::Accessor && m.organisation == b.organisation);
                if !accessor {
                    return Err(refused(
                        "not_an_accessor",
                        format!("the signer is not an accessor key of {}", b.organisation),
                    ));
                }
                permitted(std::slice::from_ref(&b.purpose))?;
                if b.period.start_ms > now_ms.saturating_add(REVOCATION_SKEW_MS) {
                    return Err(invalid("period.start_ms", "in the future"));
                }
                let most = self.settings.break_glass_ms;
                if b.period.end_ms.saturating_sub(b.period.start_ms.max(now_ms.saturating_sub(REVOCATION_SKEW_MS)))
                    > most
                {
                    return Err(invalid(
                        "period",
                        format!("longer than this node's break-glass time box ({} minutes)", most / 60_000),
                    ));
                }
                future("period.end_ms", b.period.end_ms)?;
            }
            Terms::Revocation(r) => {
                let signer = only_signer("a revocation")?;
                let Some(target) = set.get(&r.revokes) else {
                    return Err(refused("no_document", format!("no document {} for this subject", r.revokes)));
                };
                if matches!(target.terms, Terms::Revocation(_) | Terms::BreakGlass(_)) {
                    return Err(invalid("revokes", "a revocation or a break-glass declaration cannot be revoked"));
                }
                if set.revocation(&r.revokes).is_some() {
                    return Err(refused("already_revoked", format!("{} is already revoked", r.revokes)));
                }
                let mut probe = set.clone();
                probe.docs.push(Doc { id: RecordId([0; 16]), document: doc.clone(), terms: terms.clone() });
                if probe.revocation(&r.revokes).is_none() {
                    return Err(refused("not_a_party", format!("{} may not revoke {}", signer.key_id(), r.revokes)));
                }
                if r.at_ms > now_ms.saturating_add(REVOCATION_SKEW_MS) {
                    return Err(invalid("at_ms", "in the future"));
                }
            }
        }
        Ok(())
    }
}
