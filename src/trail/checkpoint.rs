//! Checkpoints: C2SP `tlog-checkpoint` bodies (origin, tree size, base64
//! root hash) in C2SP signed notes, signed with the log's Ed25519 key.
//! The note format and its signatures are `signed_note`'s; the key files
//! are that crate's (and Go's `sumdb/note`) text form:
//! `PRIVATE+KEY+<name>+<key id>+<base64>`, and the verifier key anyone may
//! hold, `<name>+<key id>+<base64>`. The key's name is the log's origin.

use super::hash::Hash;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use signed_note::{Note, StandardSigner, StandardVerifier, VerifierList};
use std::path::Path;

/// The Ed25519 algorithm byte of signed-note keys.
const ALG_ED25519: u8 = 0x01;

/// A tree head: what a checkpoint commits to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("the log signing key could not be read from {path}: {reason}")]
    Key { path: String, reason: String },
    #[error("the verifier key is not a signed-note Ed25519 key ({0})")]
    VerifierKey(String),
    #[error("the checkpoint's signature does not verify with the given key ({0})")]
    Signature(String),
    #[error("the checkpoint is malformed: {0}")]
    Malformed(&'static str),
    #[error("the checkpoint is for log {found:?}, not {expected:?}")]
    Origin { expected: String, found: String },
}

impl Checkpoint {
    /// The note's text: origin, size and root, one per line.
    pub fn body(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            BASE64.encode(self.root)
        )
    }

    /// Reads a body; lines after the third (extensions) are ignored.
    pub fn parse(body: &str) -> Result<Self, CheckpointError> {
        let mut lines = body.split('\n');
        let origin = lines.next().filter(|o| !o.is_empty());
        let origin = origin.ok_or(CheckpointError::Malformed("no origin line"))?;
        let size = lines.next().and_then(|s| {
            // Decimal without leading zeros, as the format requires.
            (s == "0" || !s.starts_with('0')).then(|| s.parse::<u64>().ok())?
        });
        let size = size.ok_or(CheckpointError::Malformed("no tree size line"))?;
        let root = lines
            .next()
            .and_then(|r| BASE64.decode(r).ok())
            .and_then(|r| Hash::try_from(r).ok());
        let root = root.ok_or(CheckpointError::Malformed("no root hash line"))?;
        Ok(Self {
            origin: origin.to_owned(),
            size,
            root,
        })
    }
}

/// The log's signing key.
pub struct LogKey {
    signer: StandardSigner,
    origin: String,
    verifier_key: String,
}

impl std::fmt::Debug for LogKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogKey")
            .field("origin", &self.origin)
            .field("verifier_key", &self.verifier_key)
            .finish_non_exhaustive()
    }
}

impl LogKey {
    pub fn from_file(path: &Path) -> Result<Self, CheckpointError> {
        let failed = |reason: String| CheckpointError::Key {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| failed(e.to_string()))?;
        Self::from_text(text.trim()).map_err(failed)
    }

    /// Reads `PRIVATE+KEY+<name>+<id>+<base64>`. The reason for a refusal
    /// never quotes the key.
    pub fn from_text(skey: &str) -> Result<Self, String> {
        let signer = StandardSigner::new(skey)
            .map_err(|e| format!("not a signed-note private key ({e})"))?;
        let mut parts = skey.splitn(5, '+').skip(2);
        let origin = parts.next().unwrap_or_default().to_owned();
        let _id = parts.next();
        let key = parts.next().and_then(|k| BASE64.decode(k).ok());
        let seed = key
            .filter(|k| k.len() == 33 && k[0] == ALG_ED25519)
            .ok_or("not an Ed25519 signed-note key")?;
        let pair = aws_lc_rs::signature::Ed25519KeyPair::from_seed_unchecked(&seed[1..])
            .map_err(|_| "not a valid Ed25519 seed".to_owned())?;
        use aws_lc_rs::signature::KeyPair as _;
        let verifier_key = verifier_key(&origin, pair.public_key().as_ref());
        Ok(Self {
            signer,
            origin,
            verifier_key,
        })
    }

    /// A new key for the log named `origin`: the private key's text and
    /// the verifier key's.
    pub fn generate(origin: &str) -> (String, String) {
        let mut seed = [0u8; 32];
        aws_lc_rs::rand::fill(&mut seed).expect("the system's random source works");
        let pair = aws_lc_rs::signature::Ed25519KeyPair::from_seed_unchecked(&seed)
            .expect("any 32 bytes are an Ed25519 seed");
        use aws_lc_rs::signature::KeyPair as _;
        let public = [&[ALG_ED25519], pair.public_key().as_ref()].concat();
        let id = signed_note::key_id(origin, &public);
        let private = [&[ALG_ED25519], seed.as_slice()].concat();
        let skey = format!("PRIVATE+KEY+{origin}+{id:08x}+{}", BASE64.encode(private));
        (skey, verifier_key(origin, pair.public_key().as_ref()))
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// What anyone checking this log's checkpoints needs.
    pub fn verifier_key(&self) -> &str {
        &self.verifier_key
    }

    /// The signed note of the tree (`size`, `root`).
    pub fn sign(&self, size: u64, root: Hash) -> String {
        let body = Checkpoint {
            origin: self.origin.clone(),
            size,
            root,
        }
        .body();
        let mut note = Note::new(body.as_bytes(), &[]).expect("a checkpoint body is a valid note");
        note.add_sigs(&[&self.signer])
            .expect("the key's name was checked when it was read");
        String::from_utf8(note.to_bytes()).expect("a note is text")
    }
}

fn verifier_key(origin: &str, public: &[u8]) -> String {
    let key = [&[ALG_ED25519], public].concat();
    let id = signed_note::key_id(origin, &key);
    format!("{origin}+{id:08x}+{}", BASE64.encode(key))
}

/// Reads a signed checkpoint without checking its signature (for a reader
/// who has no verifier key; whoever it is served to checks it).
pub fn read_unverified(note: &str) -> Result<Checkpoint, CheckpointError> {
    let body = note.split("\n\n").next().unwrap_or_default().to_owned() + "\n";
    Checkpoint::parse(&body)
}

/// Verifies a signed checkpoint with `verifier_key` and reads it; its
/// origin must be the key's name.
pub fn open(note: &str, verifier_key: &str) -> Result<Checkpoint, CheckpointError> {
    open_with_any(note, std::slice::from_ref(&verifier_key))
}

/// Verifies a signed checkpoint with whichever of `verifier_keys` signed
/// it (a log's keys across rotations) and reads it; its origin must be the
/// name of a key that verified it.
pub fn open_with_any(note: &str, verifier_keys: &[&str]) -> Result<Checkpoint, CheckpointError> {
    let mut verifiers: Vec<Box<dyn signed_note::Verifier>> = Vec::new();
    for key in verifier_keys {
        let verifier =
            StandardVerifier::new(key).map_err(|e| CheckpointError::VerifierKey(e.to_string()))?;
        verifiers.push(Box::new(verifier));
    }
    let note =
        Note::from_bytes(note.as_bytes()).map_err(|e| CheckpointError::Signature(e.to_string()))?;
    let (verified, _) = note
        .verify(&VerifierList::new(verifiers))
        .map_err(|e| CheckpointError::Signature(e.to_string()))?;
    let body =
        std::str::from_utf8(note.text()).map_err(|_| CheckpointError::Malformed("not UTF-8"))?;
    let checkpoint = Checkpoint::parse(body)?;
    if !verified.iter().any(|s| s.name() == checkpoint.origin) {
        return Err(CheckpointError::Origin {
            expected: verified
                .first()
                .map(|s| s.name().to_owned())
                .unwrap_or_default(),
            found: checkpoint.origin,
        });
    }
    Ok(checkpoint)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_checkpoint_opens_with_its_verifier_key_only() {
        let (skey, vkey) = LogKey::generate("audit.example/zenlayer-gateway");
        let key = LogKey::from_text(&skey).unwrap();
        assert_eq!(key.verifier_key(), vkey);
        let note = key.sign(12, [7; 32]);
        assert!(note.starts_with("audit.example/zenlayer-gateway\n12\nBwcH"));
        assert!(note.contains("\n\n\u{2014} audit.example/zenlayer-gateway "));
        let checkpoint = open(&note, &vkey).unwrap();
        assert_eq!(checkpoint.size, 12);
        assert_eq!(checkpoint.root, [7; 32]);

        let (_, other) = LogKey::generate("audit.example/zenlayer-gateway");
        assert!(matches!(
            open(&note, &other),
            Err(CheckpointError::Signature(_))
        ));
        // Across a rotation, either key of the log opens what it signed.
        let (rotated_skey, rotated) = LogKey::generate("audit.example/zenlayer-gateway");
        let later = LogKey::from_text(&rotated_skey).unwrap().sign(20, [8; 32]);
        let both = [vkey.as_str(), rotated.as_str()];
        assert_eq!(open_with_any(&note, &both).unwrap().size, 12);
        assert_eq!(open_with_any(&later, &both).unwrap().size, 20);
        assert!(matches!(
            open_with_any(&later, &[vkey.as_str(), other.as_str()]),
            Err(CheckpointError::Signature(_))
        ));
        let altered = note.replacen("\n12\n", "\n13\n", 1);
        assert!(matches!(
            open(&altered, &vkey),
            Err(CheckpointError::Signature(_))
        ));
    }

    #[test]
    fn the_go_note_test_key_signs_as_the_reference_does() {
        // The example of C2SP signed-note and Go's sumdb/note.
        let skey = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
        let key = LogKey::from_text(skey).unwrap();
        assert_eq!(
            key.verifier_key(),
            "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
        );
    }

    #[test]
    fn tree_sizes_are_decimal_without_leading_zeros() {
        let root = BASE64.encode([1u8; 32]);
        let empty = Checkpoint::parse(&format!("log\n0\n{root}\n")).unwrap();
        assert_eq!(empty.size, 0);
        assert!(Checkpoint::parse(&format!("log\n05\n{root}\n")).is_err());
        assert!(Checkpoint::parse(&format!("log\n-5\n{root}\n")).is_err());
    }

    #[test]
    fn a_log_key_shows_its_origin_and_verifier_key_never_its_secret() {
        let (skey, vkey) = LogKey::generate("audit.example/log");
        let key = LogKey::from_text(&skey).unwrap();
        assert_eq!(
            key.origin(),
            "audit.example/log",
            "the checkpoints' origin line"
        );
        let shown = format!("{key:?}");
        assert!(
            shown.contains("audit.example/log") && shown.contains(&vkey),
            "{shown}"
        );
        // PRIVATE+KEY+<name>+<id>+<base64>, and base64 may hold a '+' itself.
        let secret = skey.splitn(5, '+').nth(4).unwrap();
        assert!(secret.len() > 40, "{secret} is the whole secret");
        assert!(!shown.contains(secret), "{shown}");
    }

    #[test]
    fn bodies_round_trip_and_bad_ones_are_refused() {
        let c = Checkpoint {
            origin: "log".into(),
            size: 5,
            root: [1; 32],
        };
        assert_eq!(Checkpoint::parse(&c.body()).unwrap(), c);
        assert!(Checkpoint::parse("log\n05\nAQ==\n").is_err());
        assert!(Checkpoint::parse("log\n5\nnot base64\n").is_err());
        assert!(Checkpoint::parse("\n5\n").is_err());
    }

    #[test]
    fn a_key_file_that_is_not_a_key_is_refused_without_quoting_it() {
        let reason = LogKey::from_text("PRIVATE+KEY+x+00000000+c2VjcmV0").unwrap_err();
        assert!(!reason.contains("c2VjcmV0"), "{reason}");
    }
}
