//! The trail's signed statements in the C2SP formats, so standard tools read them: a
//! checkpoint (tlog-checkpoint: origin, size, head hash in base64, then a `time` line) and
//! retention's record (its first kept sequence and the hash before it), each a signed note
//! (the text, a blank line, then `— <key name> <base64(key ID ‖ Ed25519 signature)>`).
//! A key is published as a verifier key, `<name>+<hex key ID>+<base64(0x01 ‖ public key)>`.
//! The key ID is the first 4 bytes of SHA-256(name ‖ "\n" ‖ 0x01 ‖ public key).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use sha2::{Digest, Sha256};

use super::chain::Head;
use crate::core::approval::seal::decode_hex;

/// The algorithm byte of an Ed25519 key in signed notes.
const ED25519_ALGORITHM: u8 = 0x01;
/// What starts a signature line: an em dash and a space.
const SIGNATURE_PREFIX: &str = "\u{2014} ";
/// The second line of retention's record, after the origin.
const ANCHOR_MARK: &str = "retention";

/// Why a note, key or checkpoint could not be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    #[error("not a signing key: {0}")]
    SigningKey(String),
    #[error("not a verifier key (NAME+KEYID+BASE64): {0}")]
    VerifierKey(String),
    #[error("not a signed note: {0}")]
    Malformed(String),
    #[error("no valid signature by {0} on the note")]
    Unsigned(String),
    #[error("not a checkpoint: {0}")]
    Checkpoint(String),
}

/// The key ID of `name`'s Ed25519 `public` key.
fn key_id(name: &str, public: &[u8]) -> [u8; 4] {
    let mut hasher = Sha256::new();
    hasher.update(name.as_bytes());
    hasher.update(b"\n");
    hasher.update([ED25519_ALGORITHM]);
    hasher.update(public);
    let digest = hasher.finalize();
    [digest[0], digest[1], digest[2], digest[3]]
}

/// Whether `name` may name a key: not empty, no `+`, no space or control character.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name
            .chars()
            .any(|c| c == '+' || c.is_whitespace() || c.is_control())
}

/// Signs notes with a named Ed25519 key.
pub struct Signer {
    name: String,
    id: [u8; 4],
    pair: Ed25519KeyPair,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer({})", self.name)
    }
}

impl Signer {
    /// The key named `name` from its PKCS#8 document.
    pub fn from_pkcs8(name: &str, pkcs8: &[u8]) -> Result<Signer, NoteError> {
        if !valid_name(name) {
            return Err(NoteError::SigningKey(format!("bad key name {name:?}")));
        }
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8)
            .map_err(|e| NoteError::SigningKey(e.to_string()))?;
        let id = key_id(name, pair.public_key().as_ref());
        Ok(Signer {
            name: name.into(),
            id,
            pair,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key to publish, for [`Verifier::parse`].
    pub fn verifier_key(&self) -> String {
        let mut encoded = vec![ED25519_ALGORITHM];
        encoded.extend_from_slice(self.pair.public_key().as_ref());
        format!(
            "{}+{}+{}",
            self.name,
            hex(&self.id),
            STANDARD.encode(encoded)
        )
    }

    /// `text` (ending in a newline) as a signed note.
    pub fn sign(&self, text: &str) -> String {
        let signature = self.pair.sign(text.as_bytes());
        let mut signed = self.id.to_vec();
        signed.extend_from_slice(signature.as_ref());
        format!(
            "{text}\n{SIGNATURE_PREFIX}{} {}\n",
            self.name,
            STANDARD.encode(signed)
        )
    }
}

/// Checks notes signed by one named key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verifier {
    name: String,
    id: [u8; 4],
    public: Vec<u8>,
}

impl Verifier {
    /// A verifier key as published: `<name>+<hex key ID>+<base64(0x01 ‖ public key)>`.
    pub fn parse(text: &str) -> Result<Verifier, NoteError> {
        let bad = |why: &str| NoteError::VerifierKey(why.to_string());
        let text = text.trim();
        let mut parts = text.splitn(3, '+');
        let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad("three parts joined by + are needed"));
        };
        if !valid_name(name) {
            return Err(bad("the name is empty or holds a space"));
        }
        let id = decode_hex4(id).ok_or_else(|| bad("the key ID is not 8 hex digits"))?;
        let key = STANDARD
            .decode(key)
            .map_err(|_| bad("the key is not base64"))?;
        let Some((&ED25519_ALGORITHM, public)) = key.split_first() else {
            return Err(bad("not an Ed25519 key"));
        };
        if public.len() != 32 {
            return Err(bad("an Ed25519 public key has 32 bytes"));
        }
        if key_id(name, public) != id {
            return Err(bad("the key ID does not match the key"));
        }
        Ok(Verifier {
            name: name.into(),
            id,
            public: public.to_vec(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The text of `note` when this key signed it.
    pub fn open<'a>(&self, note: &'a str) -> Result<&'a str, NoteError> {
        let malformed = |why: &str| NoteError::Malformed(why.to_string());
        if note.chars().any(|c| c.is_control() && c != '\n') {
            return Err(malformed("it holds control characters"));
        }
        let split = note
            .rfind("\n\n")
            .ok_or_else(|| malformed("no blank line before the signatures"))?;
        let (text, signatures) = (&note[..split + 1], &note[split + 2..]);
        if signatures.is_empty() || !note.ends_with('\n') {
            return Err(malformed("no signature lines"));
        }
        for line in signatures.lines() {
            let line = line
                .strip_prefix(SIGNATURE_PREFIX)
                .ok_or_else(|| malformed("a signature line does not start with \"— \""))?;
            let (name, signature) = line
                .split_once(' ')
                .ok_or_else(|| malformed("a signature line has no signature"))?;
            let Ok(signature) = STANDARD.decode(signature) else {
                return Err(malformed("a signature is not base64"));
            };
            if name != self.name || signature.len() != 68 || signature[..4] != self.id {
                continue;
            }
            let public = UnparsedPublicKey::new(&ED25519, &self.public);
            if public.verify(text.as_bytes(), &signature[4..]).is_ok() {
                return Ok(text);
            }
        }
        Err(NoteError::Unsigned(self.name.clone()))
    }
}

/// A checkpoint's text: `origin`, the head's sequence (the trail's size), its hash in
/// base64, and when it was signed.
pub fn checkpoint_text(origin: &str, head: &Head, time: &str) -> String {
    format!(
        "{origin}\n{}\n{}\ntime {time}\n",
        head.sequence,
        STANDARD.encode(decode_hex(&head.hash).unwrap_or_default())
    )
}

/// A checkpoint, read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub head: Head,
    pub time: Option<String>,
}

/// Read a checkpoint's text (opened from its note).
pub fn parse_checkpoint(text: &str) -> Result<Checkpoint, NoteError> {
    let bad = |why: &str| NoteError::Checkpoint(why.to_string());
    let mut lines = text.lines();
    let origin = lines
        .next()
        .filter(|o| !o.is_empty())
        .ok_or_else(|| bad("no origin"))?;
    let size: u64 = lines
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("the second line is not a size"))?;
    let hash = lines
        .next()
        .and_then(|h| STANDARD.decode(h).ok())
        .filter(|h| h.len() == 32)
        .ok_or_else(|| bad("the third line is not a base64 SHA-256 hash"))?;
    let time = lines
        .find_map(|line| line.strip_prefix("time "))
        .map(str::to_string);
    Ok(Checkpoint {
        origin: origin.into(),
        head: Head {
            sequence: size,
            hash: hex(&hash),
        },
        time,
    })
}

/// Retention's record: entries before `anchor.sequence` were removed, and the first kept
/// follows `anchor.hash`.
pub fn anchor_text(origin: &str, anchor: &Head) -> String {
    format!(
        "{origin}\n{ANCHOR_MARK}\n{}\n{}\n",
        anchor.sequence,
        STANDARD.encode(decode_hex(&anchor.hash).unwrap_or_default())
    )
}

/// Read retention's record (opened from its note): its origin and anchor.
pub fn parse_anchor(text: &str) -> Result<(String, Head), NoteError> {
    let bad = |why: &str| NoteError::Checkpoint(format!("retention record: {why}"));
    let mut lines = text.lines();
    let origin = lines
        .next()
        .filter(|o| !o.is_empty())
        .ok_or_else(|| bad("no origin"))?;
    if lines.next() != Some(ANCHOR_MARK) {
        return Err(bad("the second line is not \"retention\""));
    }
    let sequence: u64 = lines
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("the third line is not a sequence"))?;
    let hash = lines
        .next()
        .and_then(|h| STANDARD.decode(h).ok())
        .filter(|h| h.len() == 32)
        .ok_or_else(|| bad("the fourth line is not a base64 SHA-256 hash"))?;
    Ok((
        origin.into(),
        Head {
            sequence,
            hash: hex(&hash),
        },
    ))
}

/// The notes in a file of notes one after another (as a checkpoint sink appends them).
pub fn split_notes(file: &str) -> Vec<String> {
    let mut notes = Vec::new();
    let mut current = String::new();
    let mut in_signatures = false;
    for line in file.split_inclusive('\n') {
        let signature = line.starts_with(SIGNATURE_PREFIX);
        if in_signatures && !signature {
            notes.push(std::mem::take(&mut current));
            in_signatures = false;
        }
        if line == "\n" && current.is_empty() {
            continue;
        }
        in_signatures |= signature;
        current.push_str(line);
    }
    if !current.trim().is_empty() {
        notes.push(current);
    }
    notes
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn decode_hex4(text: &str) -> Option<[u8; 4]> {
    decode_hex(text)?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A PKCS#8 Ed25519 key made from a fixed seed (RFC 8410's v1 document layout).
    fn pkcs8(seed: u8) -> Vec<u8> {
        let mut document = vec![
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        document.extend_from_slice(&[seed; 32]);
        document
    }

    fn signer(name: &str, seed: u8) -> Signer {
        Signer::from_pkcs8(name, &pkcs8(seed)).expect("a key")
    }

    #[test]
    fn a_signed_checkpoint_opens_with_its_published_key_only() {
        let signer = signer("countersign.dev/audit/test", 7);
        let head = Head {
            sequence: 42,
            hash: "ab".repeat(32),
        };
        let text = checkpoint_text(signer.name(), &head, "2026-12-05T10:00:00.000001Z");
        let note = signer.sign(&text);
        assert!(note.starts_with("countersign.dev/audit/test\n42\nq6ur"));
        assert!(note.contains("\n\n\u{2014} countersign.dev/audit/test "));
        let verifier = Verifier::parse(&signer.verifier_key()).expect("a verifier key");
        let opened = verifier.open(&note).expect("signed");
        assert_eq!(opened, text);
        let checkpoint = parse_checkpoint(opened).expect("a checkpoint");
        assert_eq!(checkpoint.head, head);
        assert_eq!(
            checkpoint.time.as_deref(),
            Some("2026-12-05T10:00:00.000001Z")
        );

        let stranger =
            Verifier::parse(&self::signer("countersign.dev/audit/test", 8).verifier_key())
                .expect("a verifier key");
        let tampered = note.replacen("\n42\n", "\n41\n", 1);
        let cases: Vec<(&str, &Verifier, &str)> = vec![
            ("another key of the same name", &stranger, &note),
            ("the size changed", &verifier, &tampered),
            ("no signatures", &verifier, &text),
            ("cut short", &verifier, &note[..note.len() - 10]),
            ("control characters", &verifier, "a\r\n42\n\n\u{2014} x y\n"),
        ];
        for (case, verifier, note) in cases {
            assert!(verifier.open(note).is_err(), "{case}");
        }
    }

    #[test]
    fn verifier_keys_must_be_whole_and_consistent() {
        let good = signer("audit", 1).verifier_key();
        assert!(Verifier::parse(&good).is_ok());
        assert!(
            Verifier::parse(&format!(" {good}\n")).is_ok(),
            "read from a file"
        );
        let (name, rest) = good.split_once('+').expect("parts");
        let (id, key) = rest.split_once('+').expect("parts");
        let cases = [
            ("no parts", "audit".to_string()),
            ("another name", format!("other+{id}+{key}")),
            ("another ID", format!("{name}+00000000+{key}")),
            ("not hex", format!("{name}+zzzzzzzz+{key}")),
            ("not base64", format!("{name}+{id}+!!!")),
            ("a short key", format!("{name}+{id}+AQID")),
            ("a space in the name", format!("a b+{id}+{key}")),
        ];
        for (case, text) in cases {
            assert!(Verifier::parse(&text).is_err(), "{case}");
        }
        assert!(Signer::from_pkcs8("bad name", &pkcs8(1)).is_err());
        assert!(Signer::from_pkcs8("audit", b"not a key").is_err());
    }

    #[test]
    fn the_key_id_is_the_signed_note_formats() {
        // The key ID of Go's golang.org/x/mod/sumdb/note example key
        // "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW".
        let key = STANDARD
            .decode("ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW")
            .expect("base64");
        assert_eq!(hex(&key_id("PeterNeumann", &key[1..])), "c74f20a3");
        assert!(
            Verifier::parse("PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW")
                .is_ok()
        );
    }

    #[test]
    fn retention_records_and_files_of_notes_read_back() {
        let signer = signer("audit", 3);
        let verifier = Verifier::parse(&signer.verifier_key()).expect("key");
        let anchor = Head {
            sequence: 100,
            hash: "0f".repeat(32),
        };
        let note = signer.sign(&anchor_text("audit", &anchor));
        let (origin, read) = parse_anchor(verifier.open(&note).expect("signed")).expect("anchor");
        assert_eq!((origin.as_str(), read), ("audit", anchor));
        assert!(parse_checkpoint("audit\nretention\n1\n").is_err());
        assert!(parse_anchor("audit\n5\nq6ur\n").is_err());

        let heads: Vec<Head> = (1..=3)
            .map(|i| Head {
                sequence: i,
                hash: format!("{i:02x}").repeat(32),
            })
            .collect();
        let file: String = heads
            .iter()
            .map(|h| signer.sign(&checkpoint_text("audit", h, "t")) + "\n")
            .collect();
        let notes = split_notes(&file);
        assert_eq!(notes.len(), 3);
        for (note, head) in notes.iter().zip(&heads) {
            let text = verifier.open(note).expect("signed");
            assert_eq!(&parse_checkpoint(text).expect("checkpoint").head, head);
        }
    }
}
