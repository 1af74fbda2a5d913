//! The one place that turns stored values into bytes and back.
//!
//! Every stored value is `[FORMAT_VERSION, bincode 2.0.1 (serde API) bytes]`.
//! Decoding is bounded (`MAX_VALUE_BYTES`) and returns an error for anything it
//! does not understand; it never panics, whatever the bytes.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// The format-version byte that leads every stored value.
pub const FORMAT_VERSION: u8 = 1;
/// Largest value the decoder accepts; larger claims are refused, not allocated.
pub const MAX_VALUE_BYTES: usize = 16 * 1024 * 1024;

/// Why a stored value could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("stored value is empty")]
    Empty,
    #[error("stored value has format version {0}, this build reads {FORMAT_VERSION}")]
    UnknownVersion(u8),
    #[error("stored value is {0} bytes, more than the {MAX_VALUE_BYTES} byte limit")]
    TooLarge(usize),
    #[error("stored value does not decode: {0}")]
    Decode(String),
    #[error("stored value has {0} trailing bytes")]
    Trailing(usize),
    #[error("value does not encode: {0}")]
    Encode(String),
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_VALUE_BYTES>()
}

/// Encodes a value behind its format-version byte.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    let mut out = vec![FORMAT_VERSION];
    bincode::serde::encode_into_std_write(value, &mut out, config())
        .map_err(|e| CodecError::Encode(e.to_string()))?;
    if out.len() > MAX_VALUE_BYTES {
        return Err(CodecError::TooLarge(out.len()));
    }
    Ok(out)
}

/// Decodes a value written by [`encode`]; any other bytes give an error.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (&version, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    if version != FORMAT_VERSION {
        return Err(CodecError::UnknownVersion(version));
    }
    if bytes.len() > MAX_VALUE_BYTES {
        return Err(CodecError::TooLarge(bytes.len()));
    }
    let (value, used) = bincode::serde::decode_from_slice(body, config())
        .map_err(|e| CodecError::Decode(e.to_string()))?;
    if used != body.len() {
        return Err(CodecError::Trailing(body.len() - used));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Address, Envelope, Payload, RejectionReason, SCHEMA_VERSION};
    use crate::domain::{CustomerId, OrderId};

    fn envelope() -> Envelope {
        let order_id = OrderId::parse("o1").unwrap();
        Envelope {
            id: 42,
            kind: "RejectOrder".into(),
            schema_version: SCHEMA_VERSION,
            from: Address::customer(&CustomerId::parse("c1").unwrap()),
            to: Address::order(&order_id),
            correlation: "o1".into(),
            reply_to: None,
            attempt: 1,
            sent_at: 7,
            payload: Payload::RejectOrder {
                order_id,
                reason: RejectionReason::UnknownCustomer,
            },
        }
    }

    #[test]
    fn envelopes_round_trip() {
        let e = envelope();
        let bytes = encode(&e).unwrap();
        assert_eq!(bytes[0], FORMAT_VERSION);
        assert_eq!(decode::<Envelope>(&bytes).unwrap(), e);
    }

    #[test]
    fn bad_bytes_are_errors_not_panics() {
        assert!(matches!(decode::<Envelope>(&[]), Err(CodecError::Empty)));
        assert!(matches!(
            decode::<Envelope>(&[9, 1, 2]),
            Err(CodecError::UnknownVersion(9))
        ));
        let bytes = encode(&envelope()).unwrap();
        for cut in 1..bytes.len() {
            assert!(
                decode::<Envelope>(&bytes[..cut]).is_err(),
                "truncated at {cut}"
            );
        }
        let mut long = bytes.clone();
        long.push(0);
        assert!(matches!(
            decode::<Envelope>(&long),
            Err(CodecError::Trailing(1))
        ));
        // A huge length prefix must be refused, not allocated.
        let mut evil = vec![FORMAT_VERSION];
        evil.extend_from_slice(&[0xFF; 32]);
        assert!(decode::<Vec<Envelope>>(&evil).is_err());
    }
}
