//! Self-managed webhook certificates (`serve --self-managed-tls`): what the Secret that holds
//! countersign's CA and serving certificate needs done, from what was found in it.
//!
//! The Secret holds a signer (a CA, 10 years), the serving certificate it issued (1 year)
//! and the CA bundle the webhook configurations carry. Each is renewed at two thirds of its
//! life, or at once when it is missing, unusable, expired or for other names. The API server
//! must trust a new serving certificate before it is served, so a CA rotation goes in two
//! steps: the new signer joins the bundle next to the old one (still valid, and still what
//! the serving certificate chains to); once the webhook configurations carry the new bundle
//! (the signer is "published"), the serving certificate is issued again under the new
//! signer. The old CA leaves the bundle when it expires.

use std::collections::BTreeSet;

use jiff::{SignedDuration, Timestamp};

/// How long the signer (the CA) is valid.
pub const SIGNER_LIFETIME: SignedDuration = SignedDuration::from_hours(10 * 8766);
/// How long a serving certificate is valid.
pub const SERVING_LIFETIME: SignedDuration = SignedDuration::from_hours(8766);
/// How far back a new certificate's validity starts, for API servers whose clock runs behind.
pub const BACKDATE: SignedDuration = SignedDuration::from_hours(1);

/// What was found of one certificate in the Secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Validity {
    pub not_before: Timestamp,
    pub not_after: Timestamp,
}

impl Validity {
    /// Two thirds of the way from `not_before` to `not_after`: when it is renewed.
    pub fn renewal_time(&self) -> Timestamp {
        let life = self.not_after.duration_since(self.not_before);
        if life.is_negative() {
            return self.not_before;
        }
        let two_thirds = SignedDuration::from_secs(life.as_secs() / 3 * 2);
        self.not_before
            .checked_add(two_thirds)
            .unwrap_or(self.not_after)
    }

    fn expired(&self, now: Timestamp) -> bool {
        now >= self.not_after
    }

    fn due(&self, now: Timestamp) -> bool {
        now >= self.renewal_time()
    }
}

/// Who issued the serving certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IssuedBy {
    /// The current signer.
    Signer,
    /// Another CA of the bundle: the one before a rotation (its position in the bundle).
    Bundled(usize),
    /// No CA the bundle holds.
    Unknown,
}

/// The serving certificate as found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServingFound {
    pub validity: Validity,
    /// Its DNS names and IP addresses, as text.
    pub names: BTreeSet<String>,
    /// The Secret's `tls.key` is its key.
    pub key_matches: bool,
    pub issued_by: IssuedBy,
}

/// One CA of the bundle (`ca.crt`) as found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BundledCa {
    pub not_after: Timestamp,
    /// It is the signer's certificate.
    pub is_signer: bool,
}

/// Everything found in the Secret (`None` for what is missing or unusable).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// The signer, when its certificate is a CA and its key matches.
    pub signer: Option<Validity>,
    /// The bundle's CAs, in order; certificates that are not CAs are left out.
    pub bundle: Vec<BundledCa>,
    pub serving: Option<ServingFound>,
    /// Both webhook configurations carry the signer in every webhook's caBundle.
    pub signer_published: bool,
}

/// What to write. The bundle written is the signer (new or kept) followed by the previous
/// CAs in `keep` (positions in `Found::bundle`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub new_signer: bool,
    pub new_serving: bool,
    pub keep: Vec<usize>,
    /// Why, for the log; empty when nothing changes.
    pub reasons: Vec<String>,
    /// A due serving renewal waits for the new signer to reach the webhook configurations.
    pub waiting_for_publication: bool,
}

impl Plan {
    /// Whether the Secret is written.
    pub fn writes(&self) -> bool {
        !self.reasons.is_empty()
    }
}

/// What the Secret needs, found as `found`, serving `wanted` names at `now`.
pub fn plan(found: &Found, wanted: &BTreeSet<String>, now: Timestamp) -> Plan {
    let mut reasons = Vec::new();
    let new_signer = match &found.signer {
        None => {
            reasons.push("no usable CA".to_string());
            true
        }
        Some(signer) if signer.due(now) => {
            reasons.push(format!(
                "the CA is due for renewal (expires {})",
                signer.not_after
            ));
            true
        }
        Some(_) => false,
    };
    // The previous CAs still valid stay trusted; with a new signer, the old one joins them.
    let keep: Vec<usize> = found
        .bundle
        .iter()
        .enumerate()
        .filter(|(_, ca)| !ca.expired(now) && (new_signer || !ca.is_signer))
        .map(|(i, _)| i)
        .collect();
    let (new_serving, waiting_for_publication) =
        serving_plan(found, wanted, now, new_signer, &keep, &mut reasons);
    if !new_signer && !bundle_as_planned(found, &keep) {
        reasons.push("the CA bundle is not the CA followed by the previous valid CAs".into());
    }
    Plan {
        new_signer,
        new_serving,
        keep,
        reasons,
        waiting_for_publication,
    }
}

impl BundledCa {
    fn expired(&self, now: Timestamp) -> bool {
        now >= self.not_after
    }
}

/// Whether the serving certificate is issued again now, and whether a due renewal waits.
fn serving_plan(
    found: &Found,
    wanted: &BTreeSet<String>,
    now: Timestamp,
    new_signer: bool,
    keep: &[usize],
    reasons: &mut Vec<String>,
) -> (bool, bool) {
    let Some(serving) = &found.serving else {
        reasons.push("no usable serving certificate".into());
        return (true, false);
    };
    let trusted = match serving.issued_by {
        // A new signer puts the old one among the kept CAs.
        IssuedBy::Signer => {
            !new_signer
                || found
                    .bundle
                    .iter()
                    .enumerate()
                    .any(|(i, ca)| ca.is_signer && keep.contains(&i))
        }
        IssuedBy::Bundled(i) => keep.contains(&i),
        IssuedBy::Unknown => false,
    };
    let broken = if !serving.key_matches {
        Some("the serving certificate's key does not match it".to_string())
    } else if serving.validity.expired(now) {
        Some("the serving certificate has expired".into())
    } else if &serving.names != wanted {
        Some(format!(
            "the serving certificate is for {}, not {}",
            names_text(&serving.names),
            names_text(wanted)
        ))
    } else if !trusted {
        Some("the serving certificate is not issued by a CA of the bundle".into())
    } else {
        None
    };
    if let Some(reason) = broken {
        reasons.push(reason);
        return (true, false);
    }
    // Renewals that move to the signer wait until the API server trusts it.
    let published = found.signer_published && !new_signer;
    let due = serving.validity.due(now);
    let from_old_ca = serving.issued_by != IssuedBy::Signer || new_signer;
    match (due || from_old_ca, published) {
        (false, _) => (false, false),
        (true, true) => {
            reasons.push(if due {
                format!(
                    "the serving certificate is due for renewal (expires {})",
                    serving.validity.not_after
                )
            } else {
                "the serving certificate moves to the new CA".into()
            });
            (true, false)
        }
        (true, false) => (false, true),
    }
}

/// The bundle is the signer followed by the kept CAs, in that order.
fn bundle_as_planned(found: &Found, keep: &[usize]) -> bool {
    let Some((first, rest)) = found.bundle.split_first() else {
        return false;
    };
    let rest_positions: Vec<usize> = (1..=rest.len()).collect();
    first.is_signer && rest_positions == keep
}

fn names_text(names: &BTreeSet<String>) -> String {
    names.iter().cloned().collect::<Vec<_>>().join(", ")
}

/// The names a serving certificate is for, reached through a Service (`NAME`,
/// `NAME.NAMESPACE`, `NAME.NAMESPACE.svc`, `NAME.NAMESPACE.svc.cluster.local`: the API
/// server asks for `NAME.NAMESPACE.svc`) or at a URL's host.
pub fn service_names(namespace: &str, name: &str) -> BTreeSet<String> {
    [
        name.to_string(),
        format!("{name}.{namespace}"),
        format!("{name}.{namespace}.svc"),
        format!("{name}.{namespace}.svc.cluster.local"),
    ]
    .into()
}

/// The host of `https://HOST[:PORT]` (an IPv6 address without its brackets), or `None`.
pub fn url_host(url: &str) -> Option<String> {
    let rest = url.strip_prefix("https://")?.trim_end_matches('/');
    let host = if let Some(bracketed) = rest.strip_prefix('[') {
        bracketed.split_once(']')?.0
    } else {
        rest.rsplit_once(':').map_or(rest, |(host, _)| host)
    };
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(days: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + days * 86_400).expect("in range")
    }

    fn validity(from_day: i64, days: i64) -> Validity {
        Validity {
            not_before: t(from_day),
            not_after: t(from_day + days),
        }
    }

    fn wanted() -> BTreeSet<String> {
        service_names("cs", "countersign")
    }

    /// A healthy Secret: a CA from day 0, a serving certificate from day 0 by it, published.
    fn healthy() -> Found {
        Found {
            signer: Some(validity(0, 3650)),
            bundle: vec![BundledCa {
                not_after: t(3650),
                is_signer: true,
            }],
            serving: Some(ServingFound {
                validity: validity(0, 365),
                names: wanted(),
                key_matches: true,
                issued_by: IssuedBy::Signer,
            }),
            signer_published: true,
        }
    }

    /// The result in short: (new signer, new serving, kept CAs, waiting).
    type Short = (bool, bool, Vec<usize>, bool);

    fn short(found: &Found, now: Timestamp) -> Short {
        let plan = plan(found, &wanted(), now);
        assert_eq!(
            plan.writes(),
            plan.new_signer || plan.new_serving || !plan.reasons.is_empty(),
        );
        (
            plan.new_signer,
            plan.new_serving,
            plan.keep,
            plan.waiting_for_publication,
        )
    }

    #[test]
    fn each_state_of_the_secret_gets_what_it_needs() {
        let mut cases: Vec<(&str, Found, Timestamp, Short)> = vec![
            (
                "an empty Secret: everything",
                Found {
                    signer: None,
                    bundle: vec![],
                    serving: None,
                    signer_published: false,
                },
                t(0),
                (true, true, vec![], false),
            ),
            (
                "healthy: nothing",
                healthy(),
                t(100),
                (false, false, vec![], false),
            ),
            (
                "the serving certificate at two thirds: renewed",
                healthy(),
                t(244),
                (false, true, vec![], false),
            ),
        ];
        let mut unpublished = healthy();
        unpublished.signer_published = false;
        cases.push((
            "a due renewal under an unpublished CA waits (the certificate still serves)",
            unpublished.clone(),
            t(244),
            (false, false, vec![], true),
        ));
        cases.push((
            "unpublished and not due: nothing",
            unpublished,
            t(10),
            (false, false, vec![], false),
        ));
        let mut other_names = healthy();
        if let Some(serving) = other_names.serving.as_mut() {
            serving.names = ["countersign.elsewhere.svc".to_string()].into();
        }
        cases.push((
            "other names: at once",
            other_names,
            t(10),
            (false, true, vec![], false),
        ));
        let mut wrong_key = healthy();
        if let Some(serving) = wrong_key.serving.as_mut() {
            serving.key_matches = false;
        }
        cases.push((
            "a key that is not the certificate's: at once",
            wrong_key,
            t(10),
            (false, true, vec![], false),
        ));
        let mut stranger = healthy();
        if let Some(serving) = stranger.serving.as_mut() {
            serving.issued_by = IssuedBy::Unknown;
        }
        stranger.signer_published = false;
        cases.push((
            "issued by a CA outside the bundle: at once, published or not",
            stranger,
            t(10),
            (false, true, vec![], false),
        ));
        let mut expired = healthy();
        expired.signer_published = false;
        cases.push((
            "expired (countersign was down for a year): at once",
            expired,
            t(400),
            (false, true, vec![], false),
        ));
        let mut ca_due = healthy();
        if let Some(serving) = ca_due.serving.as_mut() {
            serving.validity = validity(2300, 365);
        }
        cases.push((
            "the CA at two thirds: a new CA next to the old; the serving certificate waits",
            ca_due,
            t(2434),
            (true, false, vec![0], true),
        ));
        cases.push((
            "no usable CA but a serving certificate by a bundled CA: a new CA, the old kept",
            Found {
                signer: None,
                ..healthy()
            },
            t(10),
            (true, false, vec![0], true),
        ));
        for (what, found, now, expected) in cases {
            assert_eq!(short(&found, now), expected, "{what}");
        }
    }

    /// The two steps of a CA rotation, then the old CA's departure.
    #[test]
    fn a_ca_rotation_publishes_the_new_ca_before_serving_under_it() {
        // Step 1 happened: new CA (day 2434) first, the old one (expires day 3650) second;
        // the serving certificate is still the old CA's, renewed on day 2200.
        let rotated = Found {
            signer: Some(validity(2434, 3650)),
            bundle: vec![
                BundledCa {
                    not_after: t(6084),
                    is_signer: true,
                },
                BundledCa {
                    not_after: t(3650),
                    is_signer: false,
                },
            ],
            serving: Some(ServingFound {
                validity: validity(2200, 365),
                names: wanted(),
                key_matches: true,
                issued_by: IssuedBy::Bundled(1),
            }),
            signer_published: false,
        };
        assert_eq!(
            short(&rotated, t(2435)),
            (false, false, vec![1], true),
            "not published yet: the old CA's certificate keeps serving"
        );
        let published = Found {
            signer_published: true,
            ..rotated.clone()
        };
        assert_eq!(
            short(&published, t(2435)),
            (false, true, vec![1], false),
            "published: the serving certificate moves to the new CA"
        );
        let after = Found {
            serving: Some(ServingFound {
                validity: validity(2435, 365),
                names: wanted(),
                key_matches: true,
                issued_by: IssuedBy::Signer,
            }),
            ..published.clone()
        };
        assert_eq!(short(&after, t(2500)), (false, false, vec![1], false));
        let later = Found {
            serving: Some(ServingFound {
                validity: validity(3500, 365),
                names: wanted(),
                key_matches: true,
                issued_by: IssuedBy::Signer,
            }),
            ..after.clone()
        };
        assert_eq!(
            short(&later, t(3650)),
            (false, false, vec![], false),
            "the old CA leaves the bundle when it expires"
        );
        let plan = plan(&later, &wanted(), t(3650));
        assert!(plan.writes(), "dropping the expired CA is a write");
    }

    #[test]
    fn a_bundle_edited_by_hand_is_put_back() {
        let mut missing_signer = healthy();
        missing_signer.bundle[0].is_signer = false;
        let plan = plan(&missing_signer, &wanted(), t(10));
        assert!(plan.writes() && !plan.new_signer && !plan.new_serving);
        assert_eq!(
            plan.keep,
            vec![0],
            "a stranger's valid CA is kept behind the signer"
        );
        let mut empty = healthy();
        empty.bundle.clear();
        let plan = super::plan(&empty, &wanted(), t(10));
        assert!(plan.writes() && plan.keep.is_empty());
    }

    #[test]
    fn renewal_is_at_two_thirds_of_the_life() {
        assert_eq!(validity(0, 300).renewal_time(), t(200));
        assert_eq!(
            Validity {
                not_before: t(5),
                not_after: t(0)
            }
            .renewal_time(),
            t(5),
            "a certificate that ends before it starts is due at once"
        );
    }

    #[test]
    fn names_come_from_the_service_or_the_url() {
        assert!(service_names("cs", "countersign").contains("countersign.cs.svc"));
        let cases = [
            ("https://127.0.0.1:8443", Some("127.0.0.1")),
            ("https://Webhook.Example", Some("webhook.example")),
            ("https://webhook.example:443/", Some("webhook.example")),
            ("https://[::1]:8443", Some("::1")),
            ("https://[::1", None),
            ("http://webhook.example", None),
            ("https://", None),
        ];
        for (url, host) in cases {
            assert_eq!(url_host(url).as_deref(), host, "{url}");
        }
    }
}
