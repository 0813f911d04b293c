//! The envelope around every payload, and encoding and decoding of [`Message`].
//!
//! A payload is a 6-byte header, the magic bytes `BRMB` then the protocol
//! version as a little-endian `u16`, followed by the postcard encoding of one
//! [`Message`] and nothing else.
//!
//! Decoding never panics and never trusts a declared length: payloads over
//! [`MAX_MESSAGE_BYTES`] are refused before anything is parsed, postcard reads
//! sequences element by element and gives serde no capacity hint when a
//! declared length exceeds the bytes left, and serde caps any preallocation at
//! 1 MiB. A payload of at most 128 KiB therefore cannot make the decoder
//! reserve gigabytes (`common/tests/wire_golden.rs` measures it).

use super::message::Message;

/// The magic bytes that start every bramble payload.
pub const MAGIC: [u8; 4] = *b"BRMB";

/// The protocol version this build speaks. Bumped only for a change old
/// peers cannot read; adding a message variant at the end is not one.
pub const PROTOCOL_VERSION: u16 = 1;

/// Length of the header: magic bytes and version.
pub const HEADER_LEN: usize = MAGIC.len() + 2;

/// The largest payload, header included, that bramble sends or accepts:
/// 128 KiB, the strictest limit of common managed MQTT brokers.
pub const MAX_MESSAGE_BYTES: usize = 128 * 1024;

/// The largest log chunk an agent should put in one
/// [`RpcBody::LogChunk`](super::RpcBody::LogChunk): half of
/// [`MAX_MESSAGE_BYTES`], leaving ample room for the ID and framing.
pub const MAX_RPC_CHUNK_BYTES: usize = 64 * 1024;

/// Why a payload could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The payload is larger than [`MAX_MESSAGE_BYTES`]; it was not parsed.
    #[error(
        "payload is {len} bytes, more than the {max}-byte limit of one bramble message; \
         it was dropped unread"
    )]
    TooLarge {
        /// Length of the payload.
        len: usize,
        /// The limit, [`MAX_MESSAGE_BYTES`].
        max: usize,
    },
    /// The payload ends before the header or the message is complete.
    #[error("payload ends early: the bramble message is cut short")]
    Truncated,
    /// The payload does not start with [`MAGIC`].
    #[error(
        "payload does not start with the bramble magic bytes \"BRMB\"; \
         something other than bramble publishes on bramble's topics"
    )]
    BadMagic,
    /// The payload was written for another protocol version.
    #[error("{}", version_mismatch(*got, *supported))]
    UnsupportedVersion {
        /// The version in the payload's header.
        got: u16,
        /// The version this build speaks, [`PROTOCOL_VERSION`].
        supported: u16,
    },
    /// The header is fine but the message is not a valid v1 message.
    #[error("payload is not a valid bramble message: {0}")]
    Malformed(String),
}

fn version_mismatch(got: u16, supported: u16) -> String {
    let advice = if got > supported {
        "upgrade this component to the sender's release"
    } else {
        "upgrade the sender to this component's release"
    };
    format!(
        "payload uses bramble protocol version {got} but this build speaks only \
         version {supported}; {advice}"
    )
}

/// Why a message could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The encoded message would exceed [`MAX_MESSAGE_BYTES`]. Nothing was
    /// sent: bramble never truncates a message.
    #[error(
        "{kind} message would be {len} bytes, more than the {max}-byte limit of one \
         bramble message; it was not sent (shrink what it carries: large configmaps or \
         secrets, too many pods on one node, or oversized log chunks)"
    )]
    TooLarge {
        /// The message's kind, from [`Message::kind`].
        kind: &'static str,
        /// Length the payload would have, header included.
        len: usize,
        /// The limit, [`MAX_MESSAGE_BYTES`].
        max: usize,
    },
    /// postcard refused the message (not expected for the v1 types).
    #[error("{kind} message could not be encoded: {message}")]
    Serialize {
        /// The message's kind, from [`Message::kind`].
        kind: &'static str,
        /// postcard's explanation.
        message: String,
    },
}

/// The length of the payload [`encode`] would produce, header included, or
/// [`EncodeError::TooLarge`] when it exceeds [`MAX_MESSAGE_BYTES`]. Allocates
/// nothing.
pub fn check_size(message: &Message) -> Result<usize, EncodeError> {
    let size = postcard::ser_flavors::Size::default();
    let body =
        postcard::serialize_with_flavor(message, size).map_err(|error| EncodeError::Serialize {
            kind: message.kind(),
            message: postcard_error_text(&error),
        })?;
    let len = HEADER_LEN.saturating_add(body);
    if len > MAX_MESSAGE_BYTES {
        return Err(EncodeError::TooLarge {
            kind: message.kind(),
            len,
            max: MAX_MESSAGE_BYTES,
        });
    }
    Ok(len)
}

/// Encode `message` into a payload: header then postcard. Fails, rather than
/// truncating, when the payload would exceed [`MAX_MESSAGE_BYTES`].
pub fn encode(message: &Message) -> Result<Vec<u8>, EncodeError> {
    let len = check_size(message)?;
    let mut payload = Vec::with_capacity(len);
    payload.extend_from_slice(&MAGIC);
    payload.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    postcard::to_extend(message, payload).map_err(|error| EncodeError::Serialize {
        kind: message.kind(),
        message: postcard_error_text(&error),
    })
}

/// Decode a payload. Checks, in order: the size, the header (magic bytes and
/// version), then the message, which must use every byte of the payload.
/// Never panics, whatever the input.
pub fn decode(payload: &[u8]) -> Result<Message, DecodeError> {
    if payload.len() > MAX_MESSAGE_BYTES {
        return Err(DecodeError::TooLarge {
            len: payload.len(),
            max: MAX_MESSAGE_BYTES,
        });
    }
    let magic_len = payload.len().min(MAGIC.len());
    if payload[..magic_len] != MAGIC[..magic_len] {
        return Err(DecodeError::BadMagic);
    }
    let Some((header, body)) = payload.split_at_checked(HEADER_LEN) else {
        return Err(DecodeError::Truncated);
    };
    let got = u16::from_le_bytes([header[4], header[5]]);
    if got != PROTOCOL_VERSION {
        return Err(DecodeError::UnsupportedVersion {
            got,
            supported: PROTOCOL_VERSION,
        });
    }
    match postcard::take_from_bytes::<Message>(body) {
        Ok((message, [])) => Ok(message),
        Ok((_, rest)) => Err(DecodeError::Malformed(format!(
            "unexpected bytes after the end of the message: {}",
            rest.len()
        ))),
        Err(postcard::Error::DeserializeUnexpectedEnd) => Err(DecodeError::Truncated),
        Err(error) => Err(DecodeError::Malformed(postcard_error_text(&error))),
    }
}

/// postcard's errors, reworded lowercase for bramble's logs.
fn postcard_error_text(error: &postcard::Error) -> String {
    use postcard::Error as E;
    match error {
        E::DeserializeUnexpectedEnd => "the message ends early".into(),
        E::DeserializeBadVarint => "a length or integer is not a valid varint".into(),
        E::DeserializeBadBool => "a boolean is neither 0 nor 1".into(),
        E::DeserializeBadChar => "a character is not valid unicode".into(),
        E::DeserializeBadUtf8 => "a string is not valid utf-8".into(),
        E::DeserializeBadOption => "an option tag is neither 0 nor 1".into(),
        E::DeserializeBadEnum => "an enum tag is out of range".into(),
        E::SerdeDeCustom => "an unknown enum variant or an invalid value \
                             (a newer sender may use a variant this build does not know)"
            .into(),
        other => other.to_string().to_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Presence;

    #[test]
    fn header_is_magic_then_little_endian_version() {
        let payload = encode(&Message::Presence(Presence::Offline)).expect("encode");
        assert_eq!(&payload[..HEADER_LEN], b"BRMB\x01\x00");
    }

    #[test]
    fn errors_read_well_in_logs() {
        let newer = DecodeError::UnsupportedVersion {
            got: 2,
            supported: 1,
        };
        assert_eq!(
            newer.to_string(),
            "payload uses bramble protocol version 2 but this build speaks only version 1; \
             upgrade this component to the sender's release"
        );
        let older = DecodeError::UnsupportedVersion {
            got: 0,
            supported: 1,
        };
        assert!(older.to_string().contains("upgrade the sender"));
        for error in [
            DecodeError::TooLarge { len: 1, max: 0 },
            DecodeError::Truncated,
            DecodeError::BadMagic,
            newer,
            DecodeError::Malformed("x".into()),
        ] {
            let text = error.to_string();
            assert!(text.starts_with(char::is_lowercase), "{text}");
            assert!(!text.ends_with('.'), "{text}");
        }
    }

    #[test]
    fn short_payloads_are_truncated_or_bad_magic() {
        assert_eq!(decode(b""), Err(DecodeError::Truncated));
        assert_eq!(decode(b"BR"), Err(DecodeError::Truncated));
        assert_eq!(decode(b"BRMB\x01"), Err(DecodeError::Truncated));
        assert_eq!(decode(b"{"), Err(DecodeError::BadMagic));
        assert_eq!(decode(b"{\"kind\":1}"), Err(DecodeError::BadMagic));
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut payload = encode(&Message::Presence(Presence::Offline)).expect("encode");
        payload.push(0);
        assert_eq!(
            decode(&payload),
            Err(DecodeError::Malformed(
                "unexpected bytes after the end of the message: 1".into()
            ))
        );
    }
}
