//! How the approval index holds each approval: its compact JSON, LZ4-compressed against a
//! dictionary made of the first approvals the index holds.
//!
//! Approvals of one cluster are much alike (the same keys, policy chains, requesters,
//! images and names), so one alone compresses poorly and against a few others well: at the
//! scale benchmark's 10,000 approvals, 1.9 KB of JSON becomes 1.3 KB alone and about 0.4 KB
//! against the dictionary. The dictionary is the JSON of the first [`DICTIONARY_SAMPLES`]
//! approvals offered and never changes after; until it is whole, approvals are compressed
//! alone, and the index encodes those few again once it is ([`Codec::learn`]), so every
//! approval is held one way at any time.

use crate::api::DeploymentApproval;

/// One held approval.
pub type Stored = Box<[u8]>;

/// How many approvals make the dictionary: more hardly compress better (measured on the
/// scale benchmark's approvals: 1 sample 394 bytes an approval, 4 369, 16 367) and each
/// adds to the cost of compressing one.
const DICTIONARY_SAMPLES: usize = 4;
/// A larger approval (a summary of a huge change, say) is not taken as a sample.
const LARGEST_SAMPLE: usize = 16 * 1024;

#[derive(Debug)]
enum Dictionary {
    /// The samples so far, and how many.
    Gathering(Vec<u8>, usize),
    Whole(Box<[u8]>),
}

/// Encodes approvals to [`Stored`] and back.
#[derive(Debug)]
pub struct Codec {
    dictionary: Dictionary,
}

impl Default for Codec {
    fn default() -> Self {
        Codec {
            dictionary: Dictionary::Gathering(Vec::new(), 0),
        }
    }
}

impl Codec {
    /// `approval` as compact JSON, what [`Codec::learn`] and [`Codec::encode`] take.
    pub fn json(approval: &DeploymentApproval) -> Option<Vec<u8>> {
        serde_json::to_vec(approval).ok()
    }

    /// Take `json` as a sample while the dictionary is not whole. True when this made it
    /// whole: everything encoded before must then be encoded again
    /// ([`Codec::reencoded`]) before the codec decodes it.
    pub fn learn(&mut self, json: &[u8]) -> bool {
        let Dictionary::Gathering(samples, count) = &mut self.dictionary else {
            return false;
        };
        if json.len() > LARGEST_SAMPLE {
            return false;
        }
        samples.extend_from_slice(json);
        *count += 1;
        if *count < DICTIONARY_SAMPLES {
            return false;
        }
        let whole = std::mem::take(samples).into_boxed_slice();
        self.dictionary = Dictionary::Whole(whole);
        true
    }

    pub fn encode(&self, json: &[u8]) -> Stored {
        match &self.dictionary {
            Dictionary::Gathering(..) => lz4_flex::compress_prepend_size(json),
            Dictionary::Whole(dictionary) => {
                lz4_flex::block::compress_prepend_size_with_dict(json, dictionary)
            }
        }
        .into_boxed_slice()
    }

    /// The approval `stored` holds.
    pub fn decode(&self, stored: &[u8]) -> Option<DeploymentApproval> {
        let json = match &self.dictionary {
            Dictionary::Gathering(..) => lz4_flex::decompress_size_prepended(stored),
            Dictionary::Whole(dictionary) => {
                lz4_flex::block::decompress_size_prepended_with_dict(stored, dictionary)
            }
        }
        .ok()?;
        serde_json::from_slice(&json).ok()
    }

    /// `stored`, encoded before [`Codec::learn`] made the dictionary whole, encoded again
    /// against it.
    pub fn reencoded(&self, stored: &[u8]) -> Option<Stored> {
        let json = lz4_flex::decompress_size_prepended(stored).ok()?;
        Some(self.encode(&json))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::api::DeploymentApprovalSpec;

    fn approval(name: &str, image: &str) -> DeploymentApproval {
        let spec: DeploymentApprovalSpec = serde_json::from_value(serde_json::json!({
            "target": { "apiVersion": "apps/v1", "kind": "Deployment", "name": name },
            "change": { "digest": format!("sha256:{:064x}", name.len() * 7919),
                "summary": { "text": format!("Deployment shop/{name}: image app {image}") },
                "requester": { "username": "dave", "groups": ["developers"] },
                "operation": "UPDATE", "requestedAt": "2026-01-01T00:00:00Z" },
            "policy": { "name": "production", "chain": { "levels": [
                { "name": "leads", "approvers": [{ "group": "team-leads" }] }] } },
        }))
        .expect("a valid spec");
        let mut approval = DeploymentApproval::new(&format!("{name}-1"), spec);
        approval.metadata.namespace = Some("shop".into());
        approval
    }

    /// Approvals compare as JSON (the generated type has no `PartialEq`).
    pub(crate) fn as_json(approval: Option<DeploymentApproval>) -> serde_json::Value {
        serde_json::to_value(approval).expect("serializable")
    }

    fn stored(codec: &Codec, approval: &DeploymentApproval) -> Stored {
        codec.encode(&Codec::json(approval).expect("serializable"))
    }

    #[test]
    fn approvals_come_back_as_they_went_in_before_and_after_the_dictionary() {
        let mut codec = Codec::default();
        let mut held: Vec<(DeploymentApproval, Stored)> = Vec::new();
        for n in 0..DICTIONARY_SAMPLES + 3 {
            let approval = approval(&format!("web-{n}"), &format!("registry/web:1.{n}"));
            let json = Codec::json(&approval).expect("serializable");
            if codec.learn(&json) {
                assert_eq!(n + 1, DICTIONARY_SAMPLES, "whole at the last sample");
                for (_, stored) in &mut held {
                    *stored = codec.reencoded(stored).expect("encoded before");
                }
            }
            held.push((approval, codec.encode(&json)));
            for (approval, stored) in &held {
                assert_eq!(
                    as_json(codec.decode(stored)),
                    as_json(Some(approval.clone()))
                );
            }
        }
        assert!(
            !codec.learn(b"{}"),
            "the dictionary never changes once whole"
        );
    }

    #[test]
    fn the_dictionary_makes_an_approval_much_smaller() {
        let mut codec = Codec::default();
        let alone = stored(&codec, &approval("api", "registry/api:2.0")).len();
        for n in 0..DICTIONARY_SAMPLES {
            let sample = approval(&format!("web-{n}"), &format!("registry/web:1.{n}"));
            codec.learn(&Codec::json(&sample).expect("serializable"));
        }
        let against = stored(&codec, &approval("api", "registry/api:2.0")).len();
        assert!(
            against * 2 < alone,
            "{against} bytes against the dictionary, {alone} alone"
        );
    }

    #[test]
    fn large_and_garbled_input_is_handled() {
        let mut codec = Codec::default();
        assert!(!codec.learn(&vec![b' '; LARGEST_SAMPLE + 1]));
        assert!(codec.decode(b"not lz4").is_none());
        assert!(codec.reencoded(b"").is_none());
        for n in 0..DICTIONARY_SAMPLES {
            codec.learn(&Codec::json(&approval(&format!("w{n}"), "i")).expect("json"));
        }
        assert!(codec.decode(&[0xff; 12]).is_none());
    }
}
