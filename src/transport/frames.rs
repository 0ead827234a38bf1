//! gRPC's length-prefixed message framing, followed byte by byte as a
//! request body arrives, to notice a second message in a unary call.

/// A gRPC message starts with a 1-byte compression flag and a 4-byte
/// big-endian length.
const PREFIX: usize = 5;

/// Where a request body is in its framing.
#[derive(Debug, Default, Clone)]
pub struct FrameCounter {
    /// The current message's prefix, as far as it has arrived.
    prefix: [u8; PREFIX],
    prefix_len: usize,
    /// Bytes of the current message's payload still to come.
    remaining: u64,
    /// Messages begun so far.
    messages: usize,
}

impl FrameCounter {
    /// Feeds the next chunk of the body. Returns the offset in `chunk` at
    /// which a second message begins, if one begins in it; the bytes before
    /// that offset complete the first message.
    pub fn second_message_at(&mut self, chunk: &[u8]) -> Option<usize> {
        let mut at = 0;
        while at < chunk.len() {
            if self.remaining > 0 {
                let take = self.remaining.min((chunk.len() - at) as u64);
                self.remaining -= take;
                at += take as usize;
                continue;
            }
            if self.prefix_len == 0 {
                if self.messages >= 1 {
                    return Some(at);
                }
                self.messages += 1;
            }
            self.prefix[self.prefix_len] = chunk[at];
            self.prefix_len += 1;
            at += 1;
            if self.prefix_len == PREFIX {
                let length = u32::from_be_bytes([
                    self.prefix[1],
                    self.prefix[2],
                    self.prefix[3],
                    self.prefix[4],
                ]);
                self.remaining = u64::from(length);
                self.prefix_len = 0;
            }
        }
        None
    }

    /// Messages begun so far (a second one is noticed but not followed).
    pub fn messages(&self) -> usize {
        self.messages
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(payload: &[u8]) -> Vec<u8> {
        let mut frame = vec![0];
        frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        frame.extend_from_slice(payload);
        frame
    }

    #[test]
    fn one_message_in_any_chunks_is_one_message() {
        let body = framed(b"hello");
        for split in 0..body.len() {
            let mut counter = FrameCounter::default();
            assert_eq!(counter.second_message_at(&body[..split]), None);
            assert_eq!(counter.second_message_at(&body[split..]), None);
            assert_eq!(counter.messages(), 1);
        }
    }

    #[test]
    fn a_second_message_is_found_where_it_begins() {
        let first = framed(b"hello");
        let mut body = first.clone();
        body.extend(framed(b""));
        let mut counter = FrameCounter::default();
        assert_eq!(counter.second_message_at(&body), Some(first.len()));
    }

    #[test]
    fn an_empty_first_message_still_counts() {
        let mut body = framed(b"");
        body.extend(framed(b"x"));
        let mut counter = FrameCounter::default();
        assert_eq!(counter.second_message_at(&body), Some(PREFIX));
    }
}

/// Any messages, cut into any chunks: the second is found exactly where it
/// begins, and never when there is only one.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    /// Few cases in the usual run; `PROPTEST_CASES` asks for more. Failures
    /// are not persisted to files: each one found is committed as a test.
    fn config() -> ProptestConfig {
        ProptestConfig {
            cases: std::env::var("PROPTEST_CASES")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(64),
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn a_second_message_is_found_where_it_begins_however_the_body_is_cut(
            messages in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 1..4),
            cuts in prop::collection::vec(1usize..30, 0..20),
        ) {
            let mut body = Vec::new();
            let mut second_at = None;
            for (i, payload) in messages.iter().enumerate() {
                if i == 1 {
                    second_at = Some(body.len());
                }
                body.push(0);
                body.extend((payload.len() as u32).to_be_bytes());
                body.extend(payload);
            }
            let mut counter = FrameCounter::default();
            let (mut offset, mut found) = (0, None);
            let mut rest = body.as_slice();
            for cut in cuts.into_iter().chain(std::iter::once(usize::MAX)) {
                let chunk = &rest[..cut.min(rest.len())];
                if let Some(at) = counter.second_message_at(chunk) {
                    found = Some(offset + at);
                    break;
                }
                offset += chunk.len();
                rest = &rest[chunk.len()..];
                if rest.is_empty() {
                    break;
                }
            }
            prop_assert_eq!(found, second_at);
        }
    }
}
